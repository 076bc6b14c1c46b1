//! The console in a real browser: headless Chromium driven over WebDriver (chromedriver on
//! loopback), every platform on its fake. Staff sign in, compose with previews and watch
//! each channel turn to sent without a reload; the disaster desk sends a live alert that a
//! second person confirms, then its all-clear; a drill is a drill on every screen it
//! passes; a failed sign-in locks out; a form without its CSRF token is refused; a viewer
//! cannot compose. axe-core runs in the same browser on every page (no serious or critical
//! violation), and a screenshot of each page is kept under the target directory.
//!
//! Needs `chromium`, `chromedriver` and axe-core (`scripts/browser-tools` installs them and
//! prints axe's path for `NOROSHI_TEST_AXE`). Without them the test says it is skipped,
//! unless `NOROSHI_TEST_BROWSER=required` (CI), when it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::{add_people, PASSWORD};
use crate::helpers::*;
use crate::on_both;

struct Browser {
    client: Client,
    driver: Child,
    axe: String,
    shots: PathBuf,
    label: &'static str,
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A browser, or None (and a plain message) when this machine has none.
async fn browser(label: &'static str) -> Option<Browser> {
    let required = std::env::var("NOROSHI_TEST_BROWSER").as_deref() == Ok("required");
    let axe = std::env::var("NOROSHI_TEST_AXE")
        .ok()
        .or_else(|| {
            let p = "/var/tmp/noroshi-node/node_modules/axe-core/axe.min.js";
            std::path::Path::new(p).exists().then(|| p.to_string())
        })
        .and_then(|p| std::fs::read_to_string(p).ok());
    let missing = match (on_path("chromium"), on_path("chromedriver"), &axe) {
        (false, _, _) => Some("chromium"),
        (_, false, _) => Some("chromedriver"),
        (_, _, None) => Some("axe-core (run scripts/browser-tools, or set NOROSHI_TEST_AXE)"),
        _ => None,
    };
    if let Some(what) = missing {
        assert!(
            !required,
            "NOROSHI_TEST_BROWSER=required, but {what} is missing"
        );
        eprintln!("SKIPPED: the console's browser tests ({what} is not installed; scripts/browser-tools installs it)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let caps: serde_json::Map<String, Value> = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=ja-JP"],
        }
    })
    .as_object()
    .unwrap()
    .clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start Chromium through chromedriver: {e}"),
        }
    };
    // Screenshots go under the target directory, beside the test binary's own folder.
    let shots = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    Some(Browser {
        client,
        driver,
        axe: axe.unwrap(),
        shots,
        label,
        base: String::new(),
    })
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Clicks something that loads another page (a link, a submit button), and waits
    /// until that page has loaded.
    async fn click(&self, css: &str) {
        self.script("window.noroshiOldPage = true; return true;")
            .await;
        self.tick(css).await;
        self.wait_for_new_page(css).await;
    }

    /// Waits until the page marked `noroshiOldPage` has been replaced and the new one has
    /// loaded.
    async fn wait_for_new_page(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.noroshiOldPage !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if loaded.is_ok_and(|v| v == Value::Bool(true)) {
                return;
            }
            assert!(Instant::now() < deadline, "{after}: no page loaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks something on the page (a checkbox, a radio button).
    async fn tick(&self, css: &str) {
        let found = self.client.find(Locator::Css(css)).await;
        let Ok(e) = found else {
            panic!("{css}: not on the page\n{}", self.text().await);
        };
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// The page's visible text.
    async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    async fn script(&self, js: &str) -> Value {
        self.client
            .execute(js, vec![])
            .await
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// Waits until `js` returns true (the page is not reloaded to get there).
    async fn wait_until(&self, what: &str, js: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.script(js).await == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Types into whatever has the focus (`\u{E004}` is Tab, `\u{E007}` Enter).
    async fn keys(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .unwrap()
            .send_keys(keys)
            .await
            .unwrap();
    }

    /// Tabs forward until the element `id` has the focus, and checks that the focus is
    /// visible (an outline is drawn).
    async fn tab_to(&self, id: &str) {
        for _ in 0..40 {
            self.keys("\u{E004}").await;
            let here = self.script("return document.activeElement.id;").await;
            if here == id {
                let outline = self
                    .script("const s = getComputedStyle(document.activeElement); return s.outlineStyle + ' ' + s.outlineWidth;")
                    .await;
                assert!(
                    !outline.as_str().unwrap().starts_with("none"),
                    "#{id} has the focus but shows no outline: {outline}"
                );
                return;
            }
        }
        panic!("#{id} cannot be reached with Tab");
    }

    /// Waits for the page a key press started to load.
    async fn enter_and_wait(&self) {
        self.script("window.noroshiOldPage = true; return true;")
            .await;
        self.keys("\u{E007}").await;
        self.wait_for_new_page("Enter").await;
    }

    async fn sign_in(&self, name: &str, password: &str) {
        self.goto("/sign-in").await;
        self.fill("#name", name).await;
        self.fill("#password", password).await;
        self.click("form[action='/sign-in'] button[type=submit]")
            .await;
    }

    async fn sign_out(&self) {
        self.click(".site-header form.sign-out button").await;
        assert_eq!(self.path().await, "/sign-in");
    }

    /// axe-core on the page as it is (WCAG 2.x A and AA rules): no serious or critical
    /// violation. Then a screenshot under `console-screenshots/`.
    async fn check(&self, name: &str) {
        self.script(&format!("{}\n;return true;", self.axe)).await;
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                   .then(r => done(r.violations
                       .filter(v => v.impact === 'serious' || v.impact === 'critical')
                       .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                    nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')) }))))
                   .catch(e => done([{ id: 'axe-error', help: String(e) }]));",
                vec![],
            )
            .await
            .unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{}-{name}.png", self.label)), png).unwrap();
        assert_eq!(
            found,
            json!([]),
            "axe-core on {name} ({}): serious or critical violations",
            self.path().await
        );
    }
}

async fn the_console_in_a_real_browser(backend: Backend) {
    let label = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let Some(mut b) = browser(label).await else {
        return;
    };
    let f = crate::social::fakes().await;
    let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/config/templates");
    let mut d = crate::social::daemon_with(
        backend,
        &f,
        &format!("[disaster]\nconfirm = \"second_person\"\ntemplates_dir = \"{templates}\"\n"),
    )
    .await;
    add_people(
        &mut d,
        &[
            ("hanako", "staff"),
            ("yamada", "staff"),
            ("taro", "viewer"),
            ("bousai1", "disaster"),
            ("bousai2", "disaster"),
            ("kanri", "admin"),
        ],
    )
    .await;
    b.base = d.base.clone();

    // A failed sign-in says so; five lock the account, with a message saying for how long.
    b.goto("/sign-in").await;
    b.check("sign-in").await;
    for _ in 0..5 {
        b.sign_in("yamada", "not-the-password-1").await;
        assert!(
            b.text()
                .await
                .contains("ユーザー名またはパスワードが違います"),
            "{}",
            b.text().await
        );
    }
    b.check("sign-in-failed").await;
    b.sign_in("yamada", PASSWORD).await;
    assert!(b.text().await.contains("15分間停止"), "{}", b.text().await);
    assert_eq!(b.path().await, "/sign-in");

    // A viewer reads but cannot compose.
    b.sign_in("taro", PASSWORD).await;
    assert_eq!(b.path().await, "/");
    b.check("home-viewer").await;
    assert!(!b.text().await.contains("お知らせの作成"));
    b.goto("/compose").await;
    assert!(
        b.text().await.contains("権限がありません"),
        "{}",
        b.text().await
    );
    b.check("forbidden").await;
    b.goto("/").await;
    b.sign_out().await;

    // Compose once, with previews; send; watch each channel turn to sent, no reload.
    // By keyboard alone, with the focus visible at every step: sign in and open compose.
    b.goto("/sign-in").await;
    b.tab_to("name").await;
    b.keys("hanako").await;
    b.tab_to("password").await;
    b.keys(PASSWORD).await;
    b.enter_and_wait().await;
    assert_eq!(b.path().await, "/");
    b.check("home").await;
    b.script(
        "document.querySelector(\"nav a[href='/compose']\").id = 'menu-compose'; return true;",
    )
    .await;
    b.tab_to("menu-compose").await;
    b.enter_and_wait().await;
    assert_eq!(b.path().await, "/compose");
    b.tab_to("title").await;
    b.keys("年末年始のごみ収集について").await;
    b.fill(
        "#body",
        "12月31日から1月3日まではごみ収集を休みます。1月4日から通常どおり収集します。",
    )
    .await;
    b.fill("#tags", "環境課").await;
    b.click("button[value=preview]").await;
    let text = b.text().await;
    for channel in [
        "LINE",
        "X（旧Twitter）",
        "Facebookページ",
        "メール配信",
        "市ホームページ",
    ] {
        assert!(text.contains(channel), "preview of {channel}: {text}");
    }
    assert!(text.contains("上限 280"), "X's counter: {text}");
    b.check("compose-preview").await;
    b.click("button[value=send]").await;
    let path = b.path().await;
    assert!(path.starts_with("/announcements/"), "{path}");
    let id = path.trim_start_matches("/announcements/").to_string();
    b.script("window.noroshiNotReloaded = true; return true;")
        .await;
    b.wait_until(
        "every channel sent",
        "const s = [...document.querySelectorAll('#channel-status td.status')].map(e => e.dataset.status);
         return s.length === 6 && s.every(x => x === 'sent');",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        b.script("return window.noroshiNotReloaded === true;").await,
        Value::Bool(true),
        "the status changed without a reload"
    );
    assert!(b.text().await.contains("発信済み"));
    b.check("announcement").await;
    let (_, v) = d.get(&format!("/api/v1/announcements/{id}")).await;
    assert_eq!(v["status"], "sent", "{v}");
    assert_eq!(v["created_by"], "hanako", "{v}");

    // A form whose CSRF token is not this session's is refused, and nothing is stored.
    let before = d.count_announcements().await;
    b.goto("/compose").await;
    b.fill("#title", "偽のフォーム").await;
    b.fill("#body", "送られてはならない").await;
    b.script(
        "document.querySelector('#compose-form input[name=csrf]').value = 'forged'; return true;",
    )
    .await;
    b.click("button[value=send]").await;
    assert!(
        b.text().await.contains("送信できませんでした"),
        "{}",
        b.text().await
    );
    assert_eq!(d.count_announcements().await, before);

    // The other screens, each checked.
    for (path, name) in [
        ("/announcements", "announcements"),
        ("/schedules", "schedules"),
        ("/channels", "channels"),
        ("/reach", "reach"),
    ] {
        b.goto(path).await;
        b.check(name).await;
    }
    // English, switched once, for every page after.
    b.goto("/announcements").await;
    b.click("form.language button").await;
    assert_eq!(b.path().await, "/announcements");
    assert_eq!(
        b.script("return document.documentElement.lang;").await,
        "en"
    );
    assert!(b.text().await.contains("Announcements"));
    b.check("announcements-en").await;
    b.click("form.language button").await;
    assert_eq!(
        b.script("return document.documentElement.lang;").await,
        "ja"
    );
    b.sign_out().await;

    // The disaster desk: a live alert from the official template, an explicit check, a
    // second person's confirmation, then the all-clear.
    b.sign_in("bousai1", PASSWORD).await;
    b.goto("/desk").await;
    assert!(b.text().await.contains("通常モード"), "{}", b.text().await);
    b.check("desk").await;
    b.click("a[href='/desk/new?template=evacuation_level4']")
        .await;
    b.check("desk-new").await;
    b.fill("#param-area", "井上地区").await;
    b.fill(
        "#param-reason",
        "千曲川の水位が上昇し、氾濫のおそれがあるため",
    )
    .await;
    b.fill("#param-shelter", "須坂市役所").await;
    b.fill("#param-time", "11月28日15時00分").await;
    b.tick("#mode-live").await;
    b.click("button[value=review]").await;
    let text = b.text().await;
    assert!(
        text.contains("【実際の発信】発信内容の最終確認") && text.contains("避難指示"),
        "{text}"
    );
    assert!(!text.contains("訓練です"), "{text}");
    b.check("desk-review-live").await;
    b.click("button[value=send]").await;
    let alert = b
        .path()
        .await
        .trim_start_matches("/announcements/")
        .to_string();
    let text = b.text().await;
    assert!(
        text.contains("確認待ち") && text.contains("自分では承認できません"),
        "{text}"
    );
    // Its author has no confirm button.
    assert!(b
        .client
        .find(Locator::Css("form[action$='/confirm']"))
        .await
        .is_err());
    b.sign_out().await;
    b.sign_in("bousai2", PASSWORD).await;
    b.goto("/desk").await;
    assert!(b.text().await.contains("第二確認待ち"));
    b.click(&format!("a[href='/announcements/{alert}']")).await;
    b.click("form[action$='/confirm'] button").await;
    b.wait_until(
        "the live alert sent everywhere",
        "const s = [...document.querySelectorAll('#channel-status td.status')].map(e => e.dataset.status);
         return s.length > 0 && s.every(x => x === 'sent');",
        Duration::from_secs(60),
    )
    .await;
    assert!(b.text().await.contains("【災害】実際の災害情報です"));
    b.goto("/desk").await;
    assert!(
        b.text().await.contains("災害モード中"),
        "{}",
        b.text().await
    );
    b.goto(&format!("/desk/{alert}")).await;
    assert!(b
        .text()
        .await
        .contains("すべてのチャンネルへ再び発信されます"));
    b.check("desk-all-clear").await;
    b.tick("#rebroadcast").await;
    b.click("form[action$='/follow-up'] button[type=submit]")
        .await;
    let all_clear = b
        .path()
        .await
        .trim_start_matches("/announcements/")
        .to_string();
    assert_ne!(all_clear, alert);
    // A live all-clear is checked by a second person too: residents act on it.
    assert!(b.text().await.contains("確認待ち"), "{}", b.text().await);
    b.sign_out().await;
    b.sign_in("bousai1", PASSWORD).await;
    b.goto(&format!("/announcements/{all_clear}")).await;
    b.click("form[action$='/confirm'] button").await;
    b.wait_until(
        "the all-clear sent everywhere",
        "const s = [...document.querySelectorAll('#channel-status td.status')].map(e => e.dataset.status);
         return s.length > 0 && s.every(x => x === 'sent');",
        Duration::from_secs(60),
    )
    .await;
    assert!(b.text().await.contains("解除"), "{}", b.text().await);
    let (_, active) = d.get("/api/v1/alerts/active").await;
    assert_eq!(active["disaster_mode"], false, "{active}");

    // A drill: marked in words at every step, never confirmed as live, never disaster mode.
    b.goto("/desk/new?template=evacuation_level3").await;
    for field in [
        "#param-area",
        "#param-reason",
        "#param-shelter",
        "#param-time",
    ] {
        if b.client.find(Locator::Css(field)).await.is_ok() {
            b.fill(field, "訓練用の値").await;
        }
    }
    b.tick("#mode-drill").await;
    b.click("button[value=review]").await;
    let text = b.text().await;
    assert!(
        text.contains("【訓練】発信内容の最終確認") && text.contains("これは訓練です"),
        "{text}"
    );
    b.check("desk-review-drill").await;
    b.click("button[value=send]").await;
    let drill = b
        .path()
        .await
        .trim_start_matches("/announcements/")
        .to_string();
    let text = b.text().await;
    assert!(
        text.contains("【訓練】これは訓練です。実際の災害情報ではありません。"),
        "{text}"
    );
    assert!(!text.contains("【災害】実際の災害情報です"), "{text}");
    b.check("announcement-drill").await;
    b.goto("/announcements").await;
    let row = b
        .script(&format!(
            "return document.querySelector(\"a[href='/announcements/{drill}']\").closest('tr').innerText;"
        ))
        .await;
    assert!(row.as_str().unwrap().contains("【訓練】"), "{row}");
    b.goto("/desk").await;
    let row = b
        .script(&format!(
            "return document.querySelector(\"a[href='/announcements/{drill}']\").closest('tr').innerText;"
        ))
        .await;
    assert!(row.as_str().unwrap().contains("【訓練】"), "{row}");
    assert!(
        b.text().await.contains("通常モード"),
        "a drill never turns disaster mode on"
    );
    b.sign_out().await;

    // The admin's screens.
    b.sign_in("kanri", PASSWORD).await;
    for (path, name) in [
        ("/people", "people"),
        ("/audit", "audit"),
        ("/subscribers", "subscribers"),
        ("/tokens", "tokens"),
    ] {
        b.goto(path).await;
        b.check(name).await;
    }
    // A new token is shown once, on a page checked like the others.
    b.goto("/tokens").await;
    b.fill("form[action='/tokens'] #name", "cms-integration")
        .await;
    b.click("form[action='/tokens'] button[type=submit]").await;
    assert!(
        b.text().await.contains("cms-integration"),
        "{}",
        b.text().await
    );
    b.check("token-created").await;
    b.sign_out().await;
    b.client.clone().close().await.unwrap();
}
on_both!(the_console_in_a_real_browser);
