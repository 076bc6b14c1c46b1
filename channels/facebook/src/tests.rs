//! The Facebook adapter against the fake Graph API over real loopback HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use noroshi_channel_core::fake::ScriptedResponse;
use noroshi_channel_core::{
    Announcement, BuildEnv, Channel, DeliveryContext, DeliveryError, DeliveryUnit, ErrorClass,
    Priority, SecretString,
};
use serde_json::json;

use crate::client::FacebookChannel;
use crate::fake::{self, FakeGraph, UsageLevels};
use crate::Config;

const PAGE: &str = "1001";
const TOKEN: &str = "EAAGpageTOKENsecret0123456789";
const APP_TOKEN: &str = "1234567890|appTOKENsecret";
const APP_SECRET: &str = "appSECRETvalue42";

struct Harness {
    fb: FakeGraph,
    ch: FacebookChannel,
    clock: Arc<Mutex<DateTime<Utc>>>,
}

impl Harness {
    fn advance(&self, d: chrono::Duration) {
        *self.clock.lock().unwrap() += d;
    }
    /// No credential in any URL the fake saw, ever.
    fn assert_no_token_in_urls(&self) {
        for r in self.fb.requests() {
            let url = format!("{}?{}", r.path, r.query.clone().unwrap_or_default());
            for secret in [
                TOKEN,
                APP_TOKEN,
                APP_SECRET,
                "appsecret_proof",
                "input_token",
            ] {
                assert!(!url.contains(secret), "{secret} in URL {url}");
            }
        }
    }
}

fn config(base: &str) -> Config {
    Config {
        enabled: true,
        graph_base: base.to_string(),
        page_id: PAGE.to_string(),
        page_access_token: Some(SecretString::from(TOKEN)),
        ..Config::default()
    }
}

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

async fn harness_with(edit: impl FnOnce(&mut Config), timeout: Duration) -> Harness {
    let fb = fake::start(PAGE, TOKEN).await;
    let mut cfg = config(&fb.base_url());
    edit(&mut cfg);
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let clock = Arc::new(Mutex::new(Utc::now()));
    let c = clock.clone();
    let ch = FacebookChannel::new(&cfg, http(timeout), Arc::new(move || *c.lock().unwrap()));
    Harness { fb, ch, clock }
}

async fn harness() -> Harness {
    harness_with(|_| {}, Duration::from_secs(5)).await
}

fn announcement(title: &str, body: &str) -> Announcement {
    Announcement {
        id: "0193-test".to_string(),
        title: title.to_string(),
        body: body.to_string(),
        link: Some("https://www.city.example.jp/news/1".to_string()),
        priority: Priority::Normal,
        lang: "ja".to_string(),
        tags: vec![],
        exercise: false,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: Some("http://127.0.0.1:8080/site/a/0193.html".to_string()),
        published_at: Utc::now(),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    }
}

fn unit(ch: &FacebookChannel, a: &Announcement) -> DeliveryUnit {
    let r = ch.render(a).unwrap();
    DeliveryUnit {
        payload: r.units[0].clone(),
        recipient: None,
    }
}

fn ctx(attempt: u32) -> DeliveryContext {
    DeliveryContext {
        delivery_id: "d-1".to_string(),
        announcement_id: "0193-test".to_string(),
        idempotency_key: "k-1".to_string(),
        attempt,
        priority: Priority::Normal,
        exercise: false,
        request_id: None,
        first_attempt_at: None,
    }
}

fn graph_error(code: i64, subcode: Option<i64>, transient: Option<bool>) -> ScriptedResponse {
    let mut error = json!({"message": format!("(#{code}) scripted"), "type": "OAuthException",
                           "code": code, "fbtrace_id": "EJplcsCHuLu"});
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    if let Some(t) = transient {
        error["is_transient"] = json!(t);
    }
    ScriptedResponse {
        status: 400,
        body: json!({ "error": error }).to_string(),
        path_suffix: Some("/feed".to_string()),
        ..Default::default()
    }
}

async fn send(h: &Harness, title: &str) -> Result<noroshi_channel_core::Receipt, DeliveryError> {
    let u = unit(&h.ch, &announcement(title, "本文です。"));
    h.ch.deliver(&u, &ctx(1)).await
}

fn assert_clean(err: &DeliveryError) {
    for secret in [TOKEN, APP_TOKEN, APP_SECRET] {
        assert!(!err.message.contains(secret), "secret in {}", err.message);
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
    }
}

// ---- config and render ----

#[test]
fn config_defaults_and_validation() {
    let d = Config::default();
    assert!(!d.enabled);
    assert_eq!(d.graph_base, "https://graph.facebook.com");
    assert_eq!(d.api_version, "v25.0");
    assert_eq!(d.usage_slowdown_percent, 80);
    let keys: Vec<String> = d.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["page_id", "page_access_token"]);

    for bad in ["25.0", "v25", "v25.1", "latest", "v2x.0"] {
        let mut c = config("https://graph.facebook.com");
        c.api_version = bad.to_string();
        let problems = c.validate();
        assert_eq!(problems.len(), 1, "{bad}");
        assert_eq!(problems[0].key, "api_version");
    }
    let mut c = config("https://graph.facebook.com");
    c.api_version = "v20.0".to_string();
    assert!(c.validate()[0].message.contains("no longer served"));
    c.api_version = "v26.0".to_string();
    assert!(c.validate().is_empty());
    c.usage_slowdown_percent = 100;
    assert_eq!(c.validate()[0].key, "usage_slowdown_percent");

    let parsed: Config = toml_like(
        r#"{"enabled":true,"graph_base":"http://127.0.0.1:1","api_version":"v25.0",
            "page_id":"1001","page_access_token":"x","exercise_target":"2002",
            "delivery":{"max_attempts":3}}"#,
    );
    assert_eq!(parsed.exercise_target.as_deref(), Some("2002"));
    assert!(serde_json::from_str::<Config>(r#"{"page_token":"x"}"#).is_err());
    // The token never shows in Debug.
    assert!(!format!("{parsed:?}").contains("\"x\""));
}

fn toml_like(s: &str) -> Config {
    serde_json::from_str(s).unwrap()
}

#[test]
fn render_feed_photo_and_lengths() {
    let a = announcement("避難所開設", "市役所に避難所を開設しました。");
    let r = crate::render::render(&a).unwrap();
    assert_eq!(
        r.units[0],
        json!({"kind": "feed", "message": "避難所開設\n\n市役所に避難所を開設しました。",
               "link": "https://www.city.example.jp/news/1"})
    );
    assert_eq!(r.preview.length_rule, "characters");
    assert_eq!(r.preview.limit, Some(63_206));
    assert!(r.preview.warnings.is_empty());

    // Without the announcement's link, the website page is the link.
    let mut b = a.clone();
    b.link = None;
    let r = crate::render::render(&b).unwrap();
    assert_eq!(
        r.units[0]["link"],
        json!("http://127.0.0.1:8080/site/a/0193.html")
    );

    // An override replaces title + body.
    b.text_override = Some("短い版".to_string());
    assert_eq!(
        crate::render::render(&b).unwrap().units[0]["message"],
        json!("短い版")
    );

    // Images: a photo post, caption carries the link.
    let mut c = a.clone();
    c.images = vec![
        "https://img.example.jp/1.jpg".into(),
        "https://img.example.jp/2.jpg".into(),
    ];
    let r = crate::render::render(&c).unwrap();
    assert_eq!(r.units[0]["kind"], json!("photo"));
    assert_eq!(
        r.units[0]["image_url"],
        json!("https://img.example.jp/1.jpg")
    );
    assert!(r.units[0]["message"]
        .as_str()
        .unwrap()
        .ends_with("\n\nhttps://www.city.example.jp/news/1"));
    assert_eq!(r.preview.warnings.len(), 2, "{:?}", r.preview.warnings);

    // Past ~125 characters: a warning; past 63,206: refused.
    let long = announcement("題", &"あ".repeat(200));
    let r = crate::render::render(&long).unwrap();
    assert!(r.preview.warnings.iter().any(|w| w.contains("125")));
    let too_long = announcement("題", &"あ".repeat(63_206));
    let e = crate::render::render(&too_long).unwrap_err();
    assert_eq!(e.rule, "max_length");
    assert_eq!(e.limit, Some(63_206));
    assert_eq!(e.length, Some(63_206 + 3));

    let empty = announcement(" ", "");
    assert_eq!(
        crate::render::render(&empty).unwrap_err().rule,
        "empty_message"
    );
}

#[test]
fn build_refuses_a_bad_config() {
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let problems = crate::build(&Config::default(), &env).err().unwrap();
    assert_eq!(problems.len(), 2);
    let ch = crate::build(&config("https://graph.facebook.com"), &env).unwrap();
    assert_eq!(ch.name(), "facebook");
}

#[test]
fn the_registry_drives_the_section_through_channel_config() {
    use noroshi_channel_core::ChannelConfig;
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let mut cfg = config("https://graph.facebook.com");
    cfg.delivery.max_attempts = Some(3);
    let section: &dyn ChannelConfig = &cfg;
    assert!(section.enabled());
    assert_eq!(section.delivery().max_attempts, Some(3));
    assert!(section.validate().is_empty());
    assert_eq!(section.build("facebook", &env).unwrap().name(), "facebook");
    let bad = Config::default();
    let section: &dyn ChannelConfig = &bad;
    assert!(!section.enabled());
    let keys: Vec<String> = section.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["page_id", "page_access_token"]);
    assert_eq!(section.build("facebook", &env).err().unwrap().len(), 2);
}

#[tokio::test]
async fn build_reads_the_time_from_the_build_env() {
    let fb = fake::start(PAGE, TOKEN).await;
    fb.set_followers(7);
    let at: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    let env = BuildEnv {
        http: http(Duration::from_secs(5)),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: Arc::new(move || at),
    };
    let ch = crate::build(&config(&fb.base_url()), &env).unwrap();
    let samples = ch.fetch_reach().await.unwrap();
    assert!(!samples.is_empty());
    assert!(samples.iter().all(|s| s.collected_at == at), "{samples:?}");
}

// ---- delivery ----

#[tokio::test]
async fn feed_post_sends_token_in_header_and_records_id() {
    let h = harness().await;
    let receipt = send(&h, "お知らせ").await.unwrap();
    assert_eq!(receipt.remote_id.as_deref(), Some("1001_100001"));
    let reqs = h.fb.state().requests_to("/feed");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v25.0/1001/feed");
    assert_eq!(r.query, None);
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&r.body).into_owned().collect();
    assert_eq!(form["message"], "お知らせ\n\n本文です。");
    assert_eq!(form["link"], "https://www.city.example.jp/news/1");
    assert!(!form.contains_key("access_token"));
    let posts = h.fb.posts();
    assert_eq!(posts[0].message, "お知らせ\n\n本文です。");
    h.assert_no_token_in_urls();
}

#[tokio::test]
async fn photo_post_uses_url_and_caption_and_post_id() {
    let h = harness().await;
    let mut a = announcement("写真", "本文");
    a.images = vec!["https://img.example.jp/a.jpg".to_string()];
    let receipt = h.ch.deliver(&unit(&h.ch, &a), &ctx(1)).await.unwrap();
    assert_eq!(receipt.remote_id.as_deref(), Some("1001_100001"));
    let r = &h.fb.state().requests_to("/photos")[0];
    assert_eq!(r.path, "/v25.0/1001/photos");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&r.body).into_owned().collect();
    assert_eq!(form["url"], "https://img.example.jp/a.jpg");
    assert!(form["caption"].starts_with("写真\n\n本文"));
    assert!(!form.contains_key("link"));
    assert_eq!(
        h.fb.posts()[0].image.as_deref(),
        Some("https://img.example.jp/a.jpg")
    );
}

#[tokio::test]
async fn appsecret_proof_travels_in_the_body_on_writes_and_reads() {
    let h = harness_with(
        |c| c.app_secret = Some(SecretString::from(APP_SECRET)),
        Duration::from_secs(5),
    )
    .await;
    h.fb.require_appsecret_proof(APP_SECRET);
    send(&h, "証明付き").await.unwrap();
    // Reads carry the proof too, as POST with Graph's `method=GET` override.
    let found =
        h.ch.reconcile(
            &unit(&h.ch, &announcement("証明付き", "本文です。")),
            &ctx(2),
        )
        .await
        .unwrap();
    assert_eq!(found.unwrap().remote_id.as_deref(), Some("1001_100001"));
    let read = &h.fb.state().requests_to("/posts")[0];
    assert_eq!(read.method, "POST");
    assert!(read.body_text.contains("method=GET"));
    assert!(read.body_text.contains("appsecret_proof="));
    h.assert_no_token_in_urls();

    // Without the secret, a proof-requiring app refuses (code 100, permanent).
    let h2 = harness().await;
    h2.fb.require_appsecret_proof(APP_SECRET);
    let e = send(&h2, "証明なし").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("appsecret_proof"));
}

// ---- error classes ----

#[tokio::test]
async fn graph_errors_are_classified_by_code() {
    let h = harness().await;
    let cases: Vec<(ScriptedResponse, &str)> = vec![
        (graph_error(1, None, None), "transient"),
        (graph_error(2, None, None), "transient"),
        (graph_error(9_999, None, Some(true)), "transient"),
        (graph_error(4, None, None), "rate_limited"),
        (graph_error(17, None, None), "rate_limited"),
        (graph_error(32, None, None), "rate_limited"),
        (graph_error(613, None, None), "rate_limited"),
        (graph_error(80001, None, Some(true)), "rate_limited"),
        (graph_error(341, None, None), "rate_limited"),
        (graph_error(100, None, None), "permanent"),
        (graph_error(506, Some(1_455_006), Some(false)), "permanent"),
        (graph_error(1_609_005, None, None), "permanent"),
        (graph_error(190, None, None), "auth"),
        (graph_error(190, Some(460), None), "auth"),
        (graph_error(102, None, None), "auth"),
        (graph_error(10, None, None), "auth"),
        (graph_error(200, None, None), "auth"),
        (graph_error(299, None, None), "auth"),
        (graph_error(3, None, None), "auth"),
        (graph_error(368, None, None), "quota"),
        (
            ScriptedResponse {
                status: 502,
                body: "<html>Bad gateway</html>".into(),
                ..Default::default()
            },
            "transient",
        ),
        (
            // HTTP 500 with an auth code is still auth: the code decides, not the status.
            ScriptedResponse {
                status: 500,
                ..graph_error(190, Some(467), None)
            },
            "auth",
        ),
    ];
    for (i, (scripted, want)) in cases.into_iter().enumerate() {
        h.fb.script(scripted);
        let e = send(&h, &format!("case {i}")).await.unwrap_err();
        assert_eq!(e.class.as_str(), want, "case {i}: {e}");
        assert_clean(&e);
        if want == "rate_limited" {
            assert_eq!(
                e.class,
                ErrorClass::RateLimited {
                    retry_after: Some(Duration::from_secs(60))
                }
            );
        }
    }
    assert!(h.fb.posts().is_empty());
}

#[tokio::test]
async fn token_errors_name_the_reason_and_never_the_token() {
    let h = harness().await;
    h.fb.expire_token();
    let e = send(&h, "期限切れ").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(
        e.message.starts_with("page token expired (190/463)"),
        "{}",
        e.message
    );
    assert!(e.message.contains("fbtrace_id"));
    assert_eq!(e.status, Some(400));
    assert_clean(&e);

    // A wrong token: the fake's real 190 body.
    let h = harness_with(
        |c| c.page_access_token = Some(SecretString::from("EAAGwrongTOKEN")),
        Duration::from_secs(5),
    )
    .await;
    let e = send(&h, "違うトークン").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("Cannot parse access token"));
    assert!(!e.message.contains("EAAGwrongTOKEN"));

    // Whatever the platform echoes, the token is scrubbed.
    let h = harness().await;
    let mut echo = graph_error(190, Some(467), None);
    echo.body = json!({"error": {"message": format!("bad token {TOKEN}"), "code": 190,
                                 "error_subcode": 467, "type": "OAuthException"}})
    .to_string();
    h.fb.script(echo);
    let e = send(&h, "echo").await.unwrap_err();
    assert!(e.message.starts_with("page token invalid (190/467)"));
    assert!(e.message.contains("[redacted]"));
    assert_clean(&e);
    h.assert_no_token_in_urls();
}

#[tokio::test]
async fn expired_graph_version_pauses_the_channel() {
    let h = harness().await;
    h.fb.expire_version("v25.0");
    let e = send(&h, "古い版").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("2635"), "{}", e.message);
}

// ---- usage headers ----

#[tokio::test]
async fn usage_above_threshold_slows_down_before_sending() {
    let h = harness().await;
    h.fb.set_buc_usage(Some(UsageLevels {
        call_count: 85,
        total_time: 40,
        total_cputime: 30,
        estimated_time_to_regain_access: 0,
    }));
    send(&h, "一通目").await.unwrap();
    let status = h.ch.status();
    let budget = status
        .budgets
        .iter()
        .find(|b| b.name.starts_with("X-Business-Use-Case-Usage"))
        .unwrap();
    assert_eq!((budget.remaining, budget.limit), (Some(15), Some(100)));
    assert!(
        status.warnings.iter().any(|w| w.contains("85%")),
        "{:?}",
        status.warnings
    );

    let before = h.fb.requests().len();
    let e = send(&h, "二通目").await.unwrap_err();
    match e.class {
        ErrorClass::RateLimited {
            retry_after: Some(d),
        } => {
            assert!(d <= Duration::from_secs(60) && d > Duration::from_secs(50))
        }
        other => panic!("{other:?}"),
    }
    assert!(e.message.contains("not sent"));
    assert_eq!(
        h.fb.requests().len(),
        before,
        "nothing reached the platform"
    );

    // Disaster work passes the soft slow-down.
    let u = unit(&h.ch, &announcement("避難指示", "直ちに避難"));
    let mut c = ctx(1);
    c.priority = Priority::Disaster;
    h.ch.deliver(&u, &c).await.unwrap();

    // A minute later one request goes through to take a fresh reading.
    h.fb.set_buc_usage(Some(UsageLevels {
        call_count: 20,
        ..Default::default()
    }));
    h.advance(chrono::Duration::seconds(61));
    send(&h, "三通目").await.unwrap();
    send(&h, "四通目").await.unwrap();
    assert_eq!(h.ch.status().budgets[0].remaining, Some(80));
}

#[tokio::test]
async fn app_usage_header_counts_too() {
    let h = harness().await;
    h.fb.set_app_usage(Some(UsageLevels {
        total_cputime: 95,
        ..Default::default()
    }));
    send(&h, "一").await.unwrap();
    let e = send(&h, "二").await.unwrap_err();
    assert_eq!(e.class.as_str(), "rate_limited");
    assert!(e.message.contains("X-App-Usage at 95%"));
    // At 100 % Graph answers code 4 itself.
    h.fb.set_app_usage(Some(UsageLevels {
        call_count: 100,
        ..Default::default()
    }));
    h.advance(chrono::Duration::seconds(61));
    let e = send(&h, "三").await.unwrap_err();
    assert!(e.message.contains("(4)"), "{}", e.message);
}

#[tokio::test]
async fn exhausted_budget_waits_for_regain_time() {
    let h = harness().await;
    h.fb.set_buc_budget(2, 7);
    send(&h, "一").await.unwrap();
    assert_eq!(h.ch.status().budgets[0].remaining, Some(50));
    // Another tool spends the rest of the Page's budget behind the adapter's back.
    reqwest::Client::new()
        .get(format!("{}/v25.0/{PAGE}?fields=name", h.fb.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let e = send(&h, "二").await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(7 * 60))
        }
    );
    assert!(e.message.contains("80001"));
    let status = h.ch.status();
    assert!(status.budgets[0].resets_at.is_some());
    // Until then the adapter does not even try, disaster or not.
    let before = h.fb.requests().len();
    let mut c = ctx(1);
    c.priority = Priority::Disaster;
    let e =
        h.ch.deliver(&unit(&h.ch, &announcement("三", "x")), &c)
            .await
            .unwrap_err();
    assert_eq!(e.class.as_str(), "rate_limited");
    assert_eq!(h.fb.requests().len(), before);
}

// ---- token expiry ----

#[tokio::test]
async fn healthcheck_reads_debug_token_and_warns_before_expiry() {
    let h = harness_with(
        |c| c.app_token = Some(SecretString::from(APP_TOKEN)),
        Duration::from_secs(5),
    )
    .await;
    h.fb.set_app_token(APP_TOKEN);
    h.ch.healthcheck().await.unwrap();
    assert!(
        h.ch.status().warnings.is_empty(),
        "{:?}",
        h.ch.status().warnings
    );

    let in_five_days = Utc::now() + chrono::Duration::days(5);
    h.fb.set_token_expires_at(in_five_days.timestamp());
    h.ch.healthcheck().await.unwrap();
    let warnings = h.ch.status().warnings;
    let expected = format!("page token expires on {}", in_five_days.format("%Y-%m-%d"));
    assert!(
        warnings.iter().any(|w| w.starts_with(&expected)),
        "{warnings:?}"
    );

    let r = h.fb.state().requests_to("/debug_token").pop().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v25.0/debug_token");
    assert_eq!(r.query, None);
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {APP_TOKEN}").as_str())
    );
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&r.body).into_owned().collect();
    assert_eq!(form["input_token"], TOKEN);
    assert_eq!(form["method"], "GET");

    // Past the expiry the healthcheck fails as auth.
    h.advance(chrono::Duration::days(6));
    let e = h.ch.healthcheck().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert_clean(&e);

    // An invalidated token.
    h.fb.set_token_expires_at(0);
    h.fb.expire_token();
    let e = h.ch.healthcheck().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(
        e.message.contains("not valid") && e.message.contains("190/463"),
        "{}",
        e.message
    );
    assert_clean(&e);
    h.assert_no_token_in_urls();
}

#[tokio::test]
async fn healthcheck_without_app_token_and_missing_scope() {
    let h = harness().await;
    h.ch.healthcheck().await.unwrap();
    let r = h.fb.state().requests_to("/debug_token").pop().unwrap();
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    h.fb.set_scopes(&["pages_show_list"]);
    let e = h.ch.healthcheck().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("pages_manage_posts"));
    // data access expiry is warned about too.
    h.fb.set_scopes(&["pages_manage_posts"]);
    h.fb.set_data_access_expires_at((Utc::now() + chrono::Duration::days(2)).timestamp());
    h.ch.healthcheck().await.unwrap();
    assert!(h.ch.status().warnings[0].starts_with("page token data access expires on"));
}

#[tokio::test]
async fn status_warns_about_an_expiring_graph_version() {
    let h = harness_with(|c| c.api_version = "v21.0".into(), Duration::from_secs(5)).await;
    *h.clock.lock().unwrap() = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let w = h.ch.status().warnings;
    assert_eq!(
        w,
        ["Graph API v21.0 expires on 2027-01-21: raise api_version before then"]
    );
    *h.clock.lock().unwrap() = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    assert!(h.ch.status().warnings.is_empty());
}

// ---- idempotency ----

#[tokio::test]
async fn timeout_after_sending_is_uncertain_and_reconcile_finds_the_post() {
    let h = harness_with(|_| {}, Duration::from_millis(300)).await;
    h.fb.script(ScriptedResponse {
        status: 200,
        body: "{}".into(),
        delay_ms: 1_500,
        path_suffix: Some("/feed".into()),
        after_applying: true,
        ..Default::default()
    });
    let a = announcement("台風接近", "明日は休校です。");
    let u = unit(&h.ch, &a);
    let e = h.ch.deliver(&u, &ctx(1)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Uncertain, "{e}");
    assert_eq!(h.fb.posts().len(), 1, "the fake applied the post");

    let found = h.ch.reconcile(&u, &ctx(1)).await.unwrap().unwrap();
    assert_eq!(found.remote_id.as_deref(), Some("1001_100001"));
    assert!(found.already_sent);
    let r = h.fb.state().requests_to("/posts").pop().unwrap();
    assert_eq!(r.method, "GET");
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(r.query.as_deref().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["fields"], "id,message,created_time");
    assert_eq!(q["limit"], "10");
    let since: i64 = q["since"].parse().unwrap();
    assert!(since <= Utc::now().timestamp() - 59);

    // A different message is not there: resend.
    let other = unit(&h.ch, &announcement("別件", "x"));
    assert!(h.ch.reconcile(&other, &ctx(1)).await.unwrap().is_none());

    // If the queue resends anyway, Graph's 506 on attempt 2 counts as posted.
    let again = h.ch.deliver(&u, &ctx(2)).await.unwrap();
    assert!(again.already_sent);
    assert_eq!(h.fb.posts().len(), 1);
    // On a first attempt, a duplicate is the author's problem: permanent.
    let e = h.ch.deliver(&u, &ctx(1)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("duplicate post (506/1455006)"));
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let fb = fake::start(PAGE, TOKEN).await;
    let base = fb.base_url();
    drop(fb);
    tokio::task::yield_now().await;
    let cfg = config(&base);
    let ch = FacebookChannel::new(&cfg, http(Duration::from_secs(2)), Arc::new(Utc::now));
    let u = unit(&ch, &announcement("a", "b"));
    let e = ch.deliver(&u, &ctx(1)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    assert_clean(&e);
}

// ---- reach ----

#[tokio::test]
async fn reach_asks_each_metric_on_its_own() {
    let h = harness().await;
    h.fb.set_followers(9_560);
    h.fb.set_page_metric("page_media_view", 1_234);
    h.fb.set_page_metric("page_total_media_view_unique", 800);
    h.fb.set_post_metric("post_media_view", 321);
    h.fb.add_post("一");
    h.fb.add_post("二");
    let samples = h.ch.fetch_reach().await.unwrap();
    let got: Vec<(String, i64, Option<String>)> = samples
        .iter()
        .map(|s| (s.metric.clone(), s.value, s.subject.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("followers_count".into(), 9_560, None),
            ("page_media_view".into(), 1_234, None),
            ("page_total_media_view_unique".into(), 800, None),
            ("post_media_view".into(), 321, Some("1001_100002".into())),
            ("post_media_view".into(), 321, Some("1001_100001".into())),
        ]
    );
    assert!(samples
        .iter()
        .all(|s| s.api_version.as_deref() == Some("v25.0")));
    for r in h.fb.state().requests_to("/insights") {
        let q = r.query.unwrap();
        assert_eq!(q.matches("metric=").count(), 1);
        assert!(!q.contains("%2C"), "one metric per call: {q}");
    }
    let page = &h.fb.state().requests_to("/1001")[0];
    assert_eq!(page.query.as_deref(), Some("fields=followers_count"));
    h.assert_no_token_in_urls();
}

#[tokio::test]
async fn one_failing_metric_does_not_blank_the_others() {
    let h = harness().await;
    h.fb.set_followers(10);
    h.fb.set_page_metric("page_total_media_view_unique", 5);
    let mut retired = graph_error(100, None, None);
    retired.body = json!({"error": {"message": "(#100) The value must be a valid insights metric",
                                    "type": "OAuthException", "code": 100}})
    .to_string();
    retired.path_suffix = Some("/insights".into());
    h.fb.script(retired);
    let samples = h.ch.fetch_reach().await.unwrap();
    let metrics: Vec<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["followers_count", "page_total_media_view_unique"]);

    // Everything failing is an error (auth here).
    h.fb.expire_token();
    let e = h.ch.fetch_reach().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
}

// ---- the fake itself ----

#[tokio::test]
async fn fake_serves_graph_errors_and_accepts_query_tokens() {
    let fb = fake::start(PAGE, TOKEN).await;
    let c = reqwest::Client::new();
    let base = fb.base_url();
    // Retired metrics: code 100 with Graph's body.
    let r = c
        .get(format!(
            "{base}/v25.0/{PAGE}/insights?metric=page_impressions"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 100);
    assert_eq!(
        body["error"]["message"],
        "(#100) The value must be a valid insights metric"
    );
    assert_eq!(body["error"]["type"], "OAuthException");
    assert!(body["error"]["fbtrace_id"].is_string());
    for retired in ["page_fans", "post_impressions"] {
        let r = c
            .get(format!(
                "{base}/v25.0/{PAGE}/insights?metric=page_media_view,{retired}"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{retired}");
    }
    // The real API takes `access_token` in the query; so does the fake (the adapter never).
    let r = c
        .get(format!(
            "{base}/v25.0/{PAGE}?fields=followers_count&access_token={TOKEN}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wrong token: Graph's own body.
    let r = c
        .post(format!("{base}/v25.0/{PAGE}/feed"))
        .bearer_auth("nope")
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 190);
    assert_eq!(
        body["error"]["message"],
        "Invalid OAuth access token - Cannot parse access token"
    );
    // Malformed and expired versions.
    let r = c
        .get(format!("{base}/25.0/{PAGE}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        2500
    );
    let r = c
        .get(format!("{base}/v19.0/{PAGE}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        2635
    );
    // Multipart photo upload.
    let form = reqwest::multipart::Form::new()
        .text("caption", "写真")
        .part(
            "source",
            reqwest::multipart::Part::bytes(vec![0xFF, 0xD8, 0xFF]).file_name("a.jpg"),
        );
    let r = c
        .post(format!("{base}/v26.0/{PAGE}/photos"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["post_id"], "1001_100001");
    assert_eq!(fb.posts()[0].message, "写真");
    assert_eq!(fb.posts()[0].image.as_deref(), Some("upload:3"));
    // Unknown object.
    let r = c
        .get(format!(
            "{base}/v25.0/999_1/insights?metric=post_media_view"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_i64(),
            body["error"]["error_subcode"].as_i64()
        ),
        (Some(100), Some(33))
    );
}

#[test]
fn debug_output_hides_credentials() {
    let cfg = Config {
        app_secret: Some(SecretString::from(APP_SECRET)),
        app_token: Some(SecretString::from(APP_TOKEN)),
        ..config("http://127.0.0.1:9")
    };
    let ch = FacebookChannel::new(&cfg, reqwest::Client::new(), Arc::new(Utc::now));
    for text in [format!("{cfg:?}"), format!("{ch:?}")] {
        for secret in [TOKEN, APP_TOKEN, APP_SECRET] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

/// With `languages = ["en"]` the English version goes to the Page as its own post.
#[tokio::test]
async fn configured_languages_are_posted_separately() {
    let h = harness_with(|c| c.languages = vec!["en".into()], Duration::from_secs(5)).await;
    let mut a = announcement(
        "避難所開設のお知らせ",
        "須坂市役所を避難所として開設しました。",
    );
    a.variants = vec![noroshi_channel_core::LangText {
        lang: "en".into(),
        title: "Shelter opened".into(),
        body: "Suzaka City Hall is open as a shelter.".into(),
    }];
    let r = h.ch.render(&a).unwrap();
    assert_eq!(r.units.len(), 2);
    for payload in r.units {
        let u = DeliveryUnit {
            payload,
            recipient: None,
        };
        h.ch.deliver(&u, &ctx(1)).await.unwrap();
    }
    let posts = h.fb.posts();
    assert_eq!(posts.len(), 2);
    assert!(
        posts
            .iter()
            .any(|p| p.message.starts_with("Shelter opened")),
        "{posts:?}"
    );
}
