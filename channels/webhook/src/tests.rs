//! The webhook adapter against the fake receiver over real loopback HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use noroshi_channel_core::fake::ScriptedResponse;
use noroshi_channel_core::{
    Announcement, BuildEnv, Channel, DeliveryContext, DeliveryError, DeliveryUnit, ErrorClass,
    Priority, SecretString,
};
use serde_json::json;

use crate::client::WebhookChannel;
use crate::fake::{self, FakeReceiver, Reply};
use crate::{signature, timestamped, Config};

const SECRET: &str = "whsec-SIGNING-secret-42";
const API_KEY: &str = "cms-API-key-9f8e7d";

struct Harness {
    hook: FakeReceiver,
    ch: WebhookChannel,
    clock: Arc<Mutex<DateTime<Utc>>>,
}

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

fn config(url: &str) -> Config {
    Config {
        enabled: true,
        url: url.to_string(),
        signing_secret: Some(SecretString::from(SECRET)),
        ..Config::default()
    }
}

async fn harness_with(edit: impl FnOnce(&mut Config), timeout: Duration) -> Harness {
    let hook = fake::start(Some(SECRET)).await;
    let mut cfg = config(&hook.url());
    edit(&mut cfg);
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let clock = Arc::new(Mutex::new(Utc::now()));
    let c = clock.clone();
    let ch = WebhookChannel::new(
        "cms",
        &cfg,
        http(timeout),
        Arc::new(move || *c.lock().unwrap()),
    );
    Harness { hook, ch, clock }
}

async fn harness() -> Harness {
    harness_with(|_| {}, Duration::from_secs(5)).await
}

fn announcement() -> Announcement {
    Announcement {
        id: "0193aaaa-0000-7000-8000-000000000001".to_string(),
        title: "避難所\"開設\"".to_string(),
        body: "本日15時、\n市役所に開設。\\".to_string(),
        link: Some("https://www.city.example.jp/n/1?a=1&b=2".to_string()),
        priority: Priority::Urgent,
        lang: "ja".to_string(),
        tags: vec!["防災".to_string(), "危機管理課".to_string()],
        exercise: false,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: None,
        published_at: "2026-12-01T00:00:00Z".parse().unwrap(),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    }
}

fn unit(ch: &WebhookChannel) -> DeliveryUnit {
    DeliveryUnit {
        payload: ch.render(&announcement()).unwrap().units[0].clone(),
        recipient: None,
    }
}

fn ctx() -> DeliveryContext {
    DeliveryContext {
        delivery_id: "d-1".to_string(),
        announcement_id: "0193".to_string(),
        idempotency_key: "7d4f0c2e-idem-key".to_string(),
        attempt: 1,
        priority: Priority::Normal,
        exercise: false,
        request_id: None,
        first_attempt_at: None,
    }
}

fn assert_clean(err: &DeliveryError) {
    for secret in [SECRET, API_KEY] {
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!format!("{err:?}").contains(secret));
    }
}

// ---- config and render ----

#[test]
fn config_defaults_and_validation() {
    let d = Config::default();
    assert_eq!(d.method, "POST");
    assert_eq!(d.signature_header, "X-Noroshi-Signature");
    assert!(!d.enabled && d.headers.is_empty() && d.body_template.is_none());
    assert_eq!(d.validate()[0].key, "url");

    let mut c = config("https://cms.example.jp/hook");
    assert!(c.validate().is_empty());
    c.method = "GET".into();
    c.url = "https://user:pw@cms.example.jp/hook".into();
    c.headers.insert("Idempotency-Key".into(), "x".into());
    c.headers.insert("X-Api-Key".into(), "plain".into());
    c.secret_headers
        .insert("x-api-key".into(), SecretString::from(API_KEY));
    c.body_template = Some("{\"t\": \"{{ title }}\"}".into());
    c.max_length = Some(0);
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "url",
            "method",
            "headers.Idempotency-Key",
            "headers.X-Api-Key",
            "body_template",
            "max_length"
        ]
    );
    // Problems never echo a secret value.
    assert!(!format!("{:?}", c.validate()).contains(API_KEY));
    assert!(!format!("{c:?}").contains(API_KEY));

    c = config("https://cms.example.jp/hook");
    c.body_template = Some("{\"t\": {{ titel }}}".into());
    assert_eq!(c.validate()[0].key, "body_template");

    let parsed: Config = serde_json::from_value(json!({
        "enabled": true, "url": "https://x.example/h", "method": "PATCH",
        "headers": {"X-Source": "noroshi"}, "secret_headers": {"Authorization": "Bearer t"},
        "max_length": 500, "exercise_target": "https://x.example/test",
        "delivery": {"rate_per_second": 1.0}
    }))
    .unwrap();
    assert!(parsed.validate().is_empty());
    assert!(serde_json::from_value::<Config>(json!({"urll": "x"})).is_err());
}

#[test]
fn default_template_is_every_field_as_json() {
    let r = crate::render::render(crate::DEFAULT_TEMPLATE, None, &announcement()).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(r.units[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "0193aaaa-0000-7000-8000-000000000001",
            "title": "避難所\"開設\"",
            "body": "本日15時、\n市役所に開設。\\",
            "text": "避難所\"開設\"\n\n本日15時、\n市役所に開設。\\",
            "link": "https://www.city.example.jp/n/1?a=1&b=2",
            "priority": "urgent",
            "page_url": null,
            "published_at": "2026-12-01T00:00:00+00:00",
            "tags": ["防災", "危機管理課"],
            "exercise": false,
            "lang": "ja"
        })
    );
    assert_eq!(r.preview.text, r.units[0]["body"].as_str().unwrap());
}

#[test]
fn custom_templates_escape_values_and_must_give_json() {
    let t = r#"{"text": {{ title ~ ": " ~ body ~ " " ~ link }}, "tags": {{tags}}, "drill": {{exercise}}, "page": {{page_url}}, "p": {{priority}}, "first_tag": {{ tags[0] }}}"#;
    let r = crate::render::render(t, None, &announcement()).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(r.units[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["text"],
        "避難所\"開設\": 本日15時、\n市役所に開設。\\ https://www.city.example.jp/n/1?a=1&b=2"
    );
    assert_eq!(body["tags"], json!(["防災", "危機管理課"]));
    assert_eq!(body["drill"], json!(false));
    assert_eq!(body["page"], json!(null));
    assert_eq!(body["p"], "urgent");
    assert_eq!(body["first_tag"], "防災");

    // The example config's template works as written.
    let example = r#"{"title": {{ title }}, "text": {{ body }}}"#;
    let r = crate::render::render(example, None, &announcement()).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(r.units[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"title": "避難所\"開設\"", "text": "本日15時、\n市役所に開設。\\"})
    );

    // Injection through a value cannot break out of the string.
    let mut a = announcement();
    a.title = "\", \"admin\": true, \"x\": \"".into();
    let r = crate::render::render(t, None, &a).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(r.units[0]["body"].as_str().unwrap()).unwrap();
    assert!(body.get("admin").is_none());

    // Quoting a placeholder doubles the quotes: not JSON.
    let e = crate::render::render("{\"t\": \"{{title}}\"}", None, &announcement()).unwrap_err();
    assert_eq!(e.rule, "invalid_json");
    let e = crate::render::render("{\"t\": {{nope}}}", None, &announcement()).unwrap_err();
    assert_eq!(e.rule, "body_template");
    let e = crate::render::render("not json", None, &announcement()).unwrap_err();
    assert_eq!(e.rule, "invalid_json");

    let e = crate::render::render(t, Some(10), &announcement()).unwrap_err();
    assert_eq!((e.rule.as_str(), e.limit), ("max_length", Some(10)));
    let ok = crate::render::render(t, Some(100), &announcement()).unwrap();
    assert_eq!(ok.preview.limit, Some(100));
}

#[test]
fn build_names_the_instance() {
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let ch = crate::build("cms", &config("https://cms.example.jp/h"), &env).unwrap();
    assert_eq!(ch.name(), "webhook.cms");
    let problems = crate::build("Bad Name", &config("https://cms.example.jp/h"), &env)
        .err()
        .unwrap();
    assert!(problems[0].message.contains("Bad Name"));
}

#[test]
fn the_registry_builds_an_instance_by_its_channel_name() {
    use noroshi_channel_core::ChannelConfig;
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let mut cfg = config("https://cms.example.jp/h");
    cfg.delivery.rate_per_second = Some(2.0);
    let section: &dyn ChannelConfig = &cfg;
    assert_eq!(section.enabled(), cfg.enabled);
    assert_eq!(section.delivery().rate_per_second, Some(2.0));
    assert!(section.validate().is_empty());
    let ch = section.build("webhook.cms", &env).unwrap();
    assert_eq!(ch.name(), "webhook.cms");
    cfg.url = "ftp://cms.example.jp/h".into();
    let section: &dyn ChannelConfig = &cfg;
    assert_eq!(section.validate()[0].key, "url");
    assert_eq!(
        section.build("webhook.cms", &env).err().unwrap()[0].key,
        "url"
    );
}

// ---- delivery ----

#[tokio::test]
async fn build_signs_with_the_clock_of_the_build_env() {
    let hook = fake::start(Some(SECRET)).await;
    // Two minutes behind this host: inside the receiver's window, and not the host's time.
    let at = Utc::now() - chrono::Duration::minutes(2);
    let env = BuildEnv {
        http: http(Duration::from_secs(5)),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: Arc::new(move || at),
    };
    let ch = crate::build("cms", &config(&hook.url()), &env).unwrap();
    let unit = DeliveryUnit {
        payload: ch.render(&announcement()).unwrap().units[0].clone(),
        recipient: None,
    };
    ch.deliver(&unit, &ctx()).await.unwrap();
    let got = hook.received();
    let ts: i64 = got[0]
        .header("x-noroshi-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ts, at.timestamp());
}

#[tokio::test]
async fn signed_delivery_reaches_the_receiver() {
    let h = harness_with(
        |c| {
            c.headers.insert("X-Source".into(), "noroshi".into());
            c.secret_headers
                .insert("X-Api-Key".into(), SecretString::from(API_KEY));
        },
        Duration::from_secs(5),
    )
    .await;
    h.hook.require_header("x-api-key", API_KEY);
    let receipt = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap();
    assert_eq!(receipt.remote_id.as_deref(), Some("msg-1"));

    let got = h.hook.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.idempotency_key.as_deref(), Some("7d4f0c2e-idem-key"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-source"), Some("noroshi"));
    assert_eq!(r.json()["title"], "避難所\"開設\"");
    // The signature is over the exact body bytes; the timestamp has its own.
    let expected = signature(SECRET.as_bytes(), &r.body);
    assert_eq!(r.header("x-noroshi-signature"), Some(expected.as_str()));
    assert!(expected.starts_with("sha256=") && expected.len() == 7 + 64);
    let ts: i64 = r.header("x-noroshi-timestamp").unwrap().parse().unwrap();
    assert_eq!(ts, h.clock.lock().unwrap().timestamp());
    let ts_sig = signature(SECRET.as_bytes(), &timestamped(ts, &r.body));
    assert_eq!(
        r.header("x-noroshi-timestamp-signature"),
        Some(ts_sig.as_str())
    );
    // The stored unit's body is exactly what went out.
    assert_eq!(
        unit(&h.ch).payload["body"].as_str().unwrap().as_bytes(),
        &r.body[..]
    );
    for req in h.hook.requests() {
        assert!(!req.query.clone().unwrap_or_default().contains(API_KEY));
    }
}

#[tokio::test]
async fn put_and_patch_and_location_ids() {
    for method in ["PUT", "PATCH"] {
        let h = harness_with(|c| c.method = method.into(), Duration::from_secs(5)).await;
        h.hook.set_reply(Reply::LocationOnly);
        let receipt = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap();
        assert_eq!(receipt.remote_id.as_deref(), Some("/hook/msg-1"));
        assert_eq!(h.hook.received()[0].method, method);
    }
    let h = harness().await;
    h.hook.set_reply(Reply::NoContent);
    assert_eq!(
        h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap().remote_id,
        None
    );
    // A numeric id is kept as text.
    h.hook.script(ScriptedResponse {
        status: 200,
        body: r#"{"id": 42}"#.into(),
        ..Default::default()
    });
    assert_eq!(
        h.ch.deliver(&unit(&h.ch), &ctx())
            .await
            .unwrap()
            .remote_id
            .as_deref(),
        Some("42")
    );
}

#[tokio::test]
async fn wrong_secret_or_missing_credentials_is_auth() {
    let hook = fake::start(Some("the-receivers-secret")).await;
    let cfg = config(&hook.url());
    let ch = WebhookChannel::new(
        "cms",
        &cfg,
        http(Duration::from_secs(5)),
        Arc::new(Utc::now),
    );
    let e = ch.deliver(&unit(&ch), &ctx()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert_eq!(e.status, Some(401));
    assert!(e.message.contains("invalid signature"), "{}", e.message);
    assert_clean(&e);
    assert!(hook.received().is_empty());

    // Unsigned to a receiver that wants a signature.
    let mut unsigned = config(&hook.url());
    unsigned.signing_secret = None;
    let ch = WebhookChannel::new(
        "cms",
        &unsigned,
        http(Duration::from_secs(5)),
        Arc::new(Utc::now),
    );
    assert_eq!(
        ch.deliver(&unit(&ch), &ctx()).await.unwrap_err().class,
        ErrorClass::Auth
    );

    // A missing API key; and an endpoint that echoes the key back is scrubbed.
    let h = harness_with(
        |c| {
            c.secret_headers
                .insert("X-Api-Key".into(), SecretString::from(API_KEY));
        },
        Duration::from_secs(5),
    )
    .await;
    h.hook.script(ScriptedResponse {
        status: 403,
        body: format!("key {API_KEY} is revoked"),
        ..Default::default()
    });
    let e = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("[redacted]"));
    assert_clean(&e);
    assert!(!format!("{:?}", h.ch).contains(API_KEY));
}

#[tokio::test]
async fn stale_timestamps_and_replays_are_refused() {
    let h = harness().await;
    // An attempt stamped ten minutes ago: the receiver refuses it.
    *h.clock.lock().unwrap() -= chrono::Duration::minutes(10);
    let e = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("stale timestamp"));

    // A captured request replayed with a fresh timestamp fails the timestamp signature.
    *h.clock.lock().unwrap() = Utc::now();
    h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap();
    let captured = h.hook.received().pop().unwrap();
    let r = reqwest::Client::new()
        .post(h.hook.url())
        .header("content-type", "application/json")
        .header(
            "x-noroshi-signature",
            captured.header("x-noroshi-signature").unwrap(),
        )
        .header(
            "x-noroshi-timestamp",
            (Utc::now().timestamp() + 1).to_string(),
        )
        .header(
            "x-noroshi-timestamp-signature",
            captured.header("x-noroshi-timestamp-signature").unwrap(),
        )
        .body(captured.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn statuses_are_classified() {
    let h = harness().await;
    type Case = (u16, &'static [(&'static str, &'static str)], &'static str);
    let cases: &[Case] = &[
        (429, &[("retry-after", "30")], "rate_limited"),
        (408, &[], "rate_limited"),
        (401, &[], "auth"),
        (403, &[], "auth"),
        (400, &[], "permanent"),
        (404, &[], "permanent"),
        (422, &[], "permanent"),
        (500, &[], "transient"),
        (503, &[("retry-after", "5")], "transient"),
    ];
    for (status, headers, want) in cases {
        h.hook.script(ScriptedResponse {
            status: *status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: "{\"error\":\"scripted\"}".into(),
            ..Default::default()
        });
        let e = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap_err();
        assert_eq!(e.class.as_str(), *want, "{status}");
        assert_eq!(e.status, Some(*status));
        if *status == 429 {
            assert_eq!(
                e.class,
                ErrorClass::RateLimited {
                    retry_after: Some(Duration::from_secs(30))
                }
            );
        }
    }
    // Every attempt carried the same key.
    assert!(h
        .hook
        .requests()
        .iter()
        .all(|r| r.header("idempotency-key") == Some("7d4f0c2e-idem-key")));
}

#[tokio::test]
async fn a_redirect_is_not_taken_for_delivery() {
    let h = harness().await;
    h.hook.script(ScriptedResponse {
        status: 302,
        headers: vec![("location".into(), "/moved?token=abc".into())],
        ..Default::default()
    });
    let e = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("/moved"), "{}", e.message);
    assert!(!e.message.contains("token=abc"));
    assert!(h.hook.received().is_empty());
}

#[tokio::test]
async fn timeout_after_sending_is_uncertain_and_the_resend_is_deduplicated() {
    let h = harness_with(|_| {}, Duration::from_millis(300)).await;
    h.hook.script(ScriptedResponse {
        status: 201,
        delay_ms: 1_500,
        after_applying: true,
        ..Default::default()
    });
    let e = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Uncertain, "{e}");
    assert_eq!(h.hook.received().len(), 1, "the receiver applied it");
    // Nothing to look at on a generic endpoint: reconcile says "send again" …
    assert!(h
        .ch
        .reconcile(&unit(&h.ch), &ctx())
        .await
        .unwrap()
        .is_none());
    // … and the resend's Idempotency-Key lets the receiver answer with the first id.
    let again = h.ch.deliver(&unit(&h.ch), &ctx()).await.unwrap();
    assert_eq!(again.remote_id.as_deref(), Some("msg-1"));
    assert_eq!(h.hook.received().len(), 1);
}

#[tokio::test]
async fn healthcheck_walks_the_auth_path() {
    let h = harness_with(
        |c| {
            c.secret_headers
                .insert("X-Api-Key".into(), SecretString::from(API_KEY));
        },
        Duration::from_secs(5),
    )
    .await;
    h.hook.require_header("x-api-key", API_KEY);
    h.ch.healthcheck().await.unwrap();
    let r = h.hook.requests().pop().unwrap();
    assert_eq!(r.method, "HEAD");
    assert_eq!(r.header("x-api-key"), Some(API_KEY));
    assert!(h.hook.received().is_empty(), "a healthcheck posts nothing");

    let wrong = harness().await;
    wrong.hook.require_header("x-api-key", API_KEY);
    let e = wrong.ch.healthcheck().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);

    let url = wrong.hook.url();
    drop(wrong);
    tokio::task::yield_now().await;
    let ch = WebhookChannel::new(
        "cms",
        &config(&url),
        http(Duration::from_secs(2)),
        Arc::new(Utc::now),
    );
    assert_eq!(
        ch.healthcheck().await.unwrap_err().class,
        ErrorClass::Transient
    );
    let e = ch.deliver(&unit(&ch), &ctx()).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient,
        "refused before sending: {e}"
    );
}
