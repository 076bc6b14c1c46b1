//! Issue 16 (the disaster desk): second-person confirmation, the all-clear and correction,
//! active alerts and disaster mode, drills that never look live.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both;

fn alert(title: &str) -> Value {
    json!({
        "title": title,
        "body": "千曲川の水位が上昇しています。井上地区に避難指示を発令しました。危険な場所から全員避難してください。",
        "priority": "disaster",
        "channels": ["website"],
    })
}

async fn submit_as(d: &Daemon, token: &str, body: Value) -> (StatusCode, Value) {
    d.post("/api/v1/announcements", token, body).await
}

async fn active(d: &Daemon) -> Value {
    let (status, v) = d.get("/api/v1/alerts/active").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// With `[disaster] confirm = "second_person"` a live alert waits, unsent and not yet
/// active, until a different disaster or admin caller confirms it; its author cannot. A
/// drill does not wait.
async fn a_live_alert_waits_for_a_second_person(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__DISASTER__CONFIRM", "second_person")
        .start()
        .await;
    let (status, v) = submit_as(&d, DISASTER, alert("【警戒レベル4】避難指示 井上地区")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "awaiting_confirmation");
    let id = v["id"].as_str().unwrap().to_string();
    // Held: nothing published, not active, for as long as nobody confirms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let a = d.announcement(&id).await;
    assert_eq!(a["status"], "awaiting_confirmation", "{a}");
    assert_eq!(channel(&a, "website")["sent"], 0, "{a}");
    assert!(!d.site_dir().join(format!("a/{id}.html")).exists());
    assert_eq!(active(&d).await["alerts"].as_array().unwrap().len(), 0);
    // The author cannot confirm; staff cannot either.
    let path = format!("/api/v1/announcements/{id}/confirm");
    let (status, v) = d.post(&path, DISASTER, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("second person"),
        "{v}"
    );
    let (status, _) = d.post(&path, STAFF, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A second person releases it.
    let (status, v) = d.post(&path, ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    assert!(d.site_dir().join(format!("a/{id}.html")).exists());
    let now_active = active(&d).await;
    assert_eq!(now_active["alerts"][0]["announcement_id"], id.as_str());
    assert_eq!(now_active["alerts"][0]["confirmed_by"], "admin");
    let (status, _) = d.post(&path, ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "confirmed once");
    // A drill is never held, never active.
    let mut drill = alert("避難訓練");
    drill["exercise"] = json!(true);
    let (status, v) = submit_as(&d, DISASTER, drill).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "queued");
    let drill_id = v["id"].as_str().unwrap().to_string();
    d.wait_status(&drill_id, &["sent"], Duration::from_secs(20))
        .await;
    let now = active(&d).await;
    let ids: Vec<&str> = now["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["announcement_id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&drill_id.as_str()),
        "a drill is never active: {ids:?}"
    );
}
on_both!(a_live_alert_waits_for_a_second_person);

/// While a live alert is active, the channels in `pause_channels` send only live disaster
/// work: a normal post waits, and goes out once the all-clear ends the alert. The
/// all-clear reaches the same channels through the disaster lane; a second one is refused.
async fn disaster_mode_holds_other_work_until_the_all_clear(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__DISASTER__PAUSE_CHANNELS", "[\"website\"]")
        .start()
        .await;
    let (status, v) = submit_as(&d, DISASTER, alert("【警戒レベル4】避難指示 井上地区")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    let now = active(&d).await;
    assert_eq!(now["disaster_mode"], true, "{now}");
    assert_eq!(now["alerts"][0]["announcement_id"], id.as_str());
    let (_, channels) = d.get("/api/v1/channels").await;
    let website = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "website")
        .unwrap();
    assert_eq!(website["disaster_mode"], true, "{website}");
    // A normal post waits while the alert is active.
    let normal = d.submit(json!({"title": "図書館の休館日", "body": "12月は毎週月曜日が休館です。", "channels": ["website"]})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n = d.announcement(&normal).await;
    assert_eq!(n["status"], "queued", "held by disaster mode: {n}");
    assert_eq!(channel(&n, "website")["sent"], 0);
    // A drill waits too; another live alert does not.
    let (_, second) = submit_as(&d, DISASTER, alert("【警戒レベル4】避難指示 相森地区")).await;
    let second = second["id"].as_str().unwrap().to_string();
    d.wait_status(&second, &["sent"], Duration::from_secs(20))
        .await;
    // The all-clear: same channels, disaster lane, ends this alert.
    let path = format!("/api/v1/announcements/{id}/all-clear");
    let (status, v) = d.post(&path, STAFF, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the disaster desk's: {v}");
    let (status, v) = d.post(&path, DISASTER, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let clear = v["id"].as_str().unwrap().to_string();
    let c = d
        .wait_status(&clear, &["sent"], Duration::from_secs(20))
        .await;
    assert_eq!(c["priority"], "disaster");
    assert!(c["title"].as_str().unwrap().starts_with("【解除】"), "{c}");
    assert_eq!(channel(&c, "website")["sent"], 1);
    let (status, v) = d.post(&path, DISASTER, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "already ended: {v}");
    // One alert is still active: the normal post still waits.
    let now = active(&d).await;
    let ids: Vec<&str> = now["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["announcement_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()]);
    assert_eq!(d.announcement(&normal).await["status"], "queued");
    // A correction needs its text; given it, it takes the alert's place.
    let path2 = format!("/api/v1/announcements/{second}/all-clear");
    let (status, v) = d
        .post(&path2, DISASTER, json!({"kind": "correction"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "body");
    let (status, v) = d
        .post(
            &path2,
            DISASTER,
            json!({"kind": "correction", "body": "避難指示の対象は相森地区ではなく相之島地区です。"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let correction = v["id"].as_str().unwrap().to_string();
    d.wait_status(&correction, &["sent"], Duration::from_secs(20))
        .await;
    let now = active(&d).await;
    assert_eq!(now["alerts"][0]["announcement_id"], correction.as_str());
    assert_eq!(now["alerts"][0]["kind"], "correction");
    assert_eq!(now["alerts"][0]["follows"], second.as_str());
    // Its all-clear ends disaster mode; the normal post goes out.
    let (status, _) = d
        .post(
            &format!("/api/v1/announcements/{correction}/all-clear"),
            DISASTER,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.wait_status(&normal, &["sent"], Duration::from_secs(20))
        .await;
    assert_eq!(active(&d).await["disaster_mode"], false);
    // Nothing to clear on a normal announcement.
    let (status, _) = d
        .post(
            &format!("/api/v1/announcements/{normal}/all-clear"),
            DISASTER,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}
on_both!(disaster_mode_holds_other_work_until_the_all_clear);

/// A drill never switches disaster mode on: normal work keeps flowing, and it never shows
/// among the active alerts.
async fn a_drill_never_turns_disaster_mode_on(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__DISASTER__PAUSE_CHANNELS", "[\"website\"]")
        .start()
        .await;
    let mut drill = alert("【警戒レベル4】避難指示 井上地区");
    drill["exercise"] = json!(true);
    let (status, v) = submit_as(&d, DISASTER, drill).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let a = d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    assert_eq!(a["exercise"], true);
    let now = active(&d).await;
    assert_eq!(now["disaster_mode"], false, "{now}");
    assert!(now["alerts"].as_array().unwrap().is_empty());
    let normal = d.submit(json!({"title": "図書館の休館日", "body": "12月は毎週月曜日が休館です。", "channels": ["website"]})).await;
    d.wait_status(&normal, &["sent"], Duration::from_secs(20))
        .await;
    // A drill's all-clear is a drill too.
    let (status, v) = d
        .post(
            &format!("/api/v1/announcements/{id}/all-clear"),
            DISASTER,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let clear = v["id"].as_str().unwrap().to_string();
    let c = d
        .wait_status(&clear, &["sent"], Duration::from_secs(20))
        .await;
    assert_eq!(c["exercise"], true, "{c}");
}
on_both!(a_drill_never_turns_disaster_mode_on);

fn templates_dir() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/templates")
        .display()
        .to_string()
}

/// A submission names a template and its parameters: the template's official words fill
/// the title and body (and its priority); a missing or unknown parameter, an unknown
/// template, or a title beside a template is refused naming the field, and nothing is
/// stored.
async fn templates_fill_the_official_wording(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__DISASTER__TEMPLATES_DIR", &templates_dir())
        .start()
        .await;
    let params = json!({
        "area": "井上地区",
        "reason": "千曲川の水位が上昇し、氾濫のおそれがあるため",
        "shelter": "須坂市役所",
        "time": "11月23日15時00分",
    });
    let body = json!({"template": "evacuation_level4", "params": params, "channels": ["website"]});
    // The preview shows the words; staff may not send a disaster template.
    let (status, v) = d.post("/api/v1/preview", DISASTER, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        v["channels"][0]["text"]
            .as_str()
            .unwrap()
            .contains("避難指示"),
        "{v}"
    );
    let (status, v) = submit_as(&d, STAFF, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["field"], "priority");
    let (status, v) = submit_as(&d, DISASTER, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let a = d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    assert_eq!(a["title"], "【警戒レベル4】避難指示（井上地区）");
    assert_eq!(a["priority"], "disaster");
    assert!(
        a["body"]
            .as_str()
            .unwrap()
            .contains("危険な場所から全員避難してください"),
        "{a}"
    );
    for term in ["避難指示（緊急）", "避難勧告"] {
        assert!(!a["body"].as_str().unwrap().contains(term));
    }
    let before = d.count_announcements().await;
    let mut missing = body.clone();
    missing["params"].as_object_mut().unwrap().remove("shelter");
    let (status, v) = submit_as(&d, DISASTER, missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "params.shelter");
    let mut unknown = body.clone();
    unknown["params"]["colour"] = json!("red");
    let (status, v) = submit_as(&d, DISASTER, unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "params.colour");
    let (status, v) = submit_as(&d, DISASTER, json!({"template": "no_such", "params": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "template");
    let mut titled = body.clone();
    titled["title"] = json!("自分で書いた件名");
    let (status, v) = submit_as(&d, DISASTER, titled).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "title");
    assert_eq!(d.count_announcements().await, before, "nothing half-stored");
}
on_both!(templates_fill_the_official_wording);

/// A template that a channel cannot carry stops the daemon at start, naming the template,
/// the channel and its rule; nothing waits for the night it is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_cannot_fit_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("noroshi.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
bind = "127.0.0.1:0"
data_dir = "{data}"
[database]
url = "sqlite://{data}/noroshi.db"
[disaster]
templates_dir = "{templates}"
[channels.webhook.cms]
enabled = true
url = "http://127.0.0.1:9/hook"
max_length = 120
"#,
            data = dir.path().join("data").display(),
            templates = templates_dir(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_noroshi"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("IT_TOKEN", "x")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("template evacuation_level4"), "{text}");
    assert!(text.contains("cms"), "{text}");
}

/// A template's languages reach the people who read them: each email subscriber gets the
/// version in their language (`en`, `ja-easy`), anyone else the Japanese one; a drill is
/// marked in every language.
async fn subscribers_get_their_language(backend: Backend) {
    use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .env("NOROSHI__DISASTER__TEMPLATES_DIR", &templates_dir())
        .start()
        .await;
    for (email, lang) in [
        ("taro@example.jp", "ja"),
        ("emma@example.jp", "en"),
        ("linh@example.jp", "ja-easy"),
        ("pedro@example.jp", "pt"),
    ] {
        let (status, v) = d
            .post(
                "/api/v1/subscribers",
                ADMIN,
                json!({"email": email, "lang": lang}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let (status, v) = submit_as(
        &d,
        DISASTER,
        json!({
            "template": "shelter_open",
            "params": {"shelter": "須坂市役所", "time": "11月23日15時00分"},
            "channels": ["email"],
            "exercise": true,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert!(smtp.wait_for(4, Duration::from_secs(20)).await);
    let subjects: std::collections::BTreeMap<String, String> = smtp
        .messages()
        .iter()
        .map(|m| {
            let parsed = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
            (
                m.rcpt_to[0].clone(),
                parsed.subject().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        subjects["emma@example.jp"],
        "[EXERCISE] Shelters opened: 須坂市役所"
    );
    assert_eq!(
        subjects["linh@example.jp"],
        "【くんれん】ひなんじょを あけました（須坂市役所）"
    );
    assert_eq!(
        subjects["taro@example.jp"],
        "【訓練】避難所開設のお知らせ（須坂市役所）"
    );
    assert_eq!(subjects["pedro@example.jp"], subjects["taro@example.jp"]);
}
on_both!(subscribers_get_their_language);
