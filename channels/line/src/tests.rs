//! The adapter against the fake LINE over loopback HTTP, and every body it sends checked
//! against LINE's OpenAPI document.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use noroshi_channel_core::fake::ScriptedResponse;
use noroshi_channel_core::{
    Announcement, Channel, DeliveryContext, DeliveryError, DeliveryUnit, ErrorClass, Priority,
    Receipt, SecretString,
};
use serde_json::{json, Value};

use crate::fake::openapi::OpenApi;
use crate::fake::{self, FakeLine, FakeOptions};
use crate::*;

fn conformance(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance")
        .join(rel)
}

fn openapi_path() -> std::path::PathBuf {
    conformance("line-openapi/messaging-api.yml")
}

fn openapi() -> OpenApi {
    OpenApi::load(openapi_path()).expect("messaging-api.yml loads")
}

const TOKEN: &str = "fake-line-channel-access-token";

fn user(n: usize) -> String {
    format!("U{n:032x}")
}

async fn start_fake(options: FakeOptions) -> FakeLine {
    fake::start(FakeOptions {
        openapi: Some(openapi_path()),
        ..options
    })
    .await
}

fn config(fake: &FakeLine) -> Config {
    Config {
        enabled: true,
        api_base: fake.base_url(),
        channel_access_token: Some(SecretString::from(TOKEN)),
        ..Config::default()
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

fn channel(config: Config) -> LineChannel {
    LineChannel::new(config, client(Duration::from_secs(5))).unwrap()
}

fn announcement(priority: Priority) -> Announcement {
    Announcement {
        id: "0193a000-0000-7000-8000-000000000001".into(),
        title: "避難所開設のお知らせ".into(),
        body: "本日15時、須坂市役所に避難所を開設しました。".into(),
        link: Some("https://www.city.suzaka.nagano.jp/bousai/1".into()),
        priority,
        lang: "ja".into(),
        tags: vec![],
        exercise: false,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: None,
        published_at: Utc::now(),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    }
}

fn ctx(priority: Priority) -> DeliveryContext {
    DeliveryContext {
        delivery_id: "d-1".into(),
        announcement_id: "a-1".into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        priority,
        exercise: false,
        request_id: None,
        first_attempt_at: None,
    }
}

fn unit(payload: Value) -> DeliveryUnit {
    DeliveryUnit {
        payload,
        recipient: None,
    }
}

/// Renders and delivers every unit; returns the receipts.
async fn send(line: &LineChannel, a: &Announcement) -> Vec<Result<Receipt, DeliveryError>> {
    let rendering = line.render(a).expect("renders");
    let mut out = Vec::new();
    for payload in rendering.units {
        out.push(line.deliver(&unit(payload), &ctx(a.priority)).await);
    }
    out
}

fn schema_for(endpoint: &str) -> &'static str {
    match endpoint {
        "broadcast" => "BroadcastRequest",
        "multicast" => "MulticastRequest",
        "narrowcast" => "NarrowcastRequest",
        _ => "PushMessageRequest",
    }
}

/// Every send body the fake recorded, checked against the OpenAPI request schema.
fn assert_recorded_bodies_valid(fake: &FakeLine) -> usize {
    let api = openapi();
    let mut checked = 0;
    for r in fake.requests() {
        if r.method != "POST" {
            continue;
        }
        let endpoint = r.path.rsplit('/').next().unwrap().to_string();
        let errors = api.validate(schema_for(&endpoint), &r.json());
        assert!(
            errors.is_empty(),
            "{endpoint} body {} invalid: {errors:?}",
            r.body_text
        );
        checked += 1;
    }
    checked
}

// ---------------------------------------------------------------- rendering

#[test]
fn text_length_is_counted_in_utf16_units() {
    let cfg = Config::default();
    let mut a = announcement(Priority::Normal);
    a.title = "t".into();
    a.link = None;
    // "t\n\n" = 3 units; 🍎 = 2 units each.
    a.body = "🍎".repeat(2498) + "あ";
    let r = render::render(&cfg, &a).unwrap();
    assert_eq!(r.preview.length, 5000);
    assert_eq!(r.preview.length_rule, "UTF-16 code units");
    a.body.push('あ');
    let e = render::render(&cfg, &a).unwrap_err();
    assert_eq!(e.rule, "max_length");
    assert_eq!((e.length, e.limit), (Some(5001), Some(5000)));
    // An override that fits is used instead.
    a.text_override = Some("短いお知らせ".into());
    let r = render::render(&cfg, &a).unwrap();
    assert_eq!(r.units[0]["body"]["messages"][0]["text"], "短いお知らせ");
    a.text_override = Some("👋🏻".repeat(1251));
    assert_eq!(render::render(&cfg, &a).unwrap_err().length, Some(5004));
}

#[test]
fn a_normal_announcement_is_one_text_with_title_body_and_link() {
    let mut a = announcement(Priority::Normal);
    a.images = vec![
        "https://example.jp/a.jpg".into(),
        "http://example.jp/insecure.jpg".into(),
    ];
    let r = render::render(&Config::default(), &a).unwrap();
    assert_eq!(r.units.len(), 1);
    let u: Unit = serde_json::from_value(r.units[0].clone()).unwrap();
    assert_eq!(u.endpoint, "broadcast");
    let messages = u.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0]["text"],
        "避難所開設のお知らせ\n\n本日15時、須坂市役所に避難所を開設しました。\n\nhttps://www.city.suzaka.nagano.jp/bousai/1"
    );
    assert_eq!(messages[1]["type"], "image");
    assert!(r.preview.warnings.iter().any(|w| w.contains("insecure")));
    assert!(openapi().validate("BroadcastRequest", &u.body).is_empty());
}

#[test]
fn a_disaster_is_a_flex_card_with_a_red_header_and_alt_text() {
    let mut a = announcement(Priority::Disaster);
    a.body = "避難してください。".repeat(300);
    let r = render::render(&Config::default(), &a).unwrap();
    let body = &r.units[0]["body"];
    let flex = &body["messages"][0];
    assert_eq!(flex["type"], "flex");
    let bubble = &flex["contents"];
    assert_eq!(bubble["header"]["backgroundColor"], "#B71C1C");
    assert_eq!(bubble["header"]["contents"][0]["color"], "#FFFFFF");
    assert_eq!(bubble["header"]["contents"][0]["text"], "緊急 災害情報");
    assert_eq!(
        bubble["footer"]["contents"][0]["action"]["uri"],
        "https://www.city.suzaka.nagano.jp/bousai/1"
    );
    let alt = flex["altText"].as_str().unwrap();
    assert!(alt.starts_with("緊急 災害情報: 避難所開設のお知らせ"));
    assert_eq!(render::utf16_len(alt), 1500);
    assert!(alt.ends_with('…'));
    assert!(openapi().validate("BroadcastRequest", body).is_empty());

    let mut drill = announcement(Priority::Disaster);
    drill.exercise = true;
    drill.title = "【訓練】避難指示".into();
    let r = render::render(&Config::default(), &drill).unwrap();
    let alt = r.units[0]["body"]["messages"][0]["altText"]
        .as_str()
        .unwrap();
    assert!(alt.starts_with("【訓練】"), "{alt}");
}

#[test]
fn multicast_is_chunked_by_500_ids() {
    let cfg = Config {
        mode: Mode::Multicast,
        to: (0..1001).map(user).collect(),
        ..Config::default()
    };
    let r = render::render(&cfg, &announcement(Priority::Normal)).unwrap();
    let sizes: Vec<usize> = r
        .units
        .iter()
        .map(|u| u["body"]["to"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![500, 500, 1]);
    let api = openapi();
    for u in &r.units {
        assert_eq!(u["endpoint"], "multicast");
        assert!(api.validate("MulticastRequest", &u["body"]).is_empty());
    }
}

// ---------------------------------------------------------------- the schema check

#[test]
fn the_schema_check_fails_on_malformed_bodies() {
    let api = openapi();
    let ok = json!({"messages": [{"type": "text", "text": "hi"}]});
    assert!(api.validate("BroadcastRequest", &ok).is_empty());

    let unknown_type = json!({"messages": [{"type": "txt", "text": "hi"}]});
    let e = api.validate("BroadcastRequest", &unknown_type);
    assert_eq!(e[0].property, "messages[0].type", "{e:?}");

    let no_text = json!({"messages": [{"type": "text"}]});
    let e = api.validate("BroadcastRequest", &no_text);
    assert_eq!(e[0].property, "messages[0].text", "{e:?}");

    let six = json!({"messages": vec![json!({"type": "text", "text": "x"}); 6]});
    assert!(!api.validate("BroadcastRequest", &six).is_empty());

    let to_string = json!({"to": user(1), "messages": [{"type": "text", "text": "x"}]});
    assert!(!api.validate("MulticastRequest", &to_string).is_empty());

    let bad_flex = json!({"messages": [{"type": "flex", "altText": "a",
        "contents": {"type": "bubble", "body": {"type": "box", "layout": "diagonal", "contents": []}}}]});
    let e = api.validate("BroadcastRequest", &bad_flex);
    assert_eq!(e[0].property, "messages[0].contents.body.layout", "{e:?}");

    let bad_area = json!({"messages": [{"type": "text", "text": "x"}],
        "filter": {"demographic": {"type": "area", "oneOf": ["jp_99"]}}});
    assert!(!api.validate("NarrowcastRequest", &bad_area).is_empty());
}

#[tokio::test]
async fn the_fake_refuses_a_malformed_body_with_lines_400() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    let bad = json!({"endpoint": "broadcast", "body": {"messages": [{"type": "text", "text": ""}, {"type": "txt"}]}});
    let e = line
        .deliver(&unit(bad), &ctx(Priority::Normal))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(e.status, Some(400));
    assert!(e.message.contains("The request body has"), "{}", e.message);
    assert!(
        e.message.contains("messages[0].text: May not be empty"),
        "{}",
        e.message
    );
    assert!(e.message.contains("messages[1].type"), "{}", e.message);
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn the_fake_applies_the_openapi_schema_beyond_the_prose_rules() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    let bad_area = json!({"endpoint": "narrowcast", "body": {
        "messages": [{"type": "text", "text": "x"}],
        "filter": {"demographic": {"type": "area", "oneOf": ["jp_99"]}}}});
    let e = line
        .deliver(&unit(bad_area), &ctx(Priority::Normal))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("filter.demographic.oneOf[0]"),
        "{}",
        e.message
    );
    assert!(fake.accepted().is_empty());
}

// ---------------------------------------------------------------- delivery

#[tokio::test]
async fn every_mode_sends_what_the_schema_allows_with_the_retry_key() {
    let fake = start_fake(FakeOptions::default()).await;
    let base = config(&fake);
    let modes = [
        Config {
            mode: Mode::Broadcast,
            ..base.clone()
        },
        Config {
            mode: Mode::Multicast,
            to: (0..501).map(user).collect(),
            ..base.clone()
        },
        Config {
            mode: Mode::Push,
            to: vec![user(7)],
            ..base.clone()
        },
        Config {
            mode: Mode::Narrowcast,
            narrowcast: NarrowcastSettings {
                audience_group_id: Some(4389303728991),
                areas: vec!["jp_20".into()],
                max: Some(100),
            },
            ..base.clone()
        },
    ];
    let mut receipts = Vec::new();
    for cfg in modes {
        let line = channel(cfg);
        for priority in [Priority::Normal, Priority::Disaster] {
            let a = announcement(priority);
            let rendering = line.render(&a).unwrap();
            for payload in rendering.units {
                let c = ctx(priority);
                let receipt = line.deliver(&unit(payload.clone()), &c).await.unwrap();
                let recorded = fake.requests().into_iter().last().unwrap();
                assert_eq!(
                    recorded.header("x-line-retry-key"),
                    Some(c.idempotency_key.as_str())
                );
                assert_eq!(
                    recorded.header("authorization"),
                    Some(format!("Bearer {TOKEN}").as_str())
                );
                assert_eq!(recorded.header("content-type"), Some("application/json"));
                assert_eq!(recorded.json(), payload["body"], "sent as rendered");
                receipts.push(receipt);
            }
        }
    }
    let accepted = fake.accepted();
    // broadcast 2 + multicast 2×2 chunks + push 2 + narrowcast 2
    assert_eq!(accepted.len(), 10);
    for (r, a) in receipts.iter().zip(&accepted) {
        assert!(!r.already_sent);
        assert_eq!(r.remote_id.as_deref(), Some(a.request_id.as_str()));
    }
    assert!(receipts[6]
        .note
        .as_deref()
        .unwrap()
        .contains("sentMessages"));
    assert_eq!(accepted[8].endpoint, "narrowcast");
    assert_eq!(
        accepted[8].body["filter"]["demographic"]["oneOf"][0],
        "jp_20"
    );
    assert_eq!(assert_recorded_bodies_valid(&fake), 10);
}

#[tokio::test]
async fn a_retry_after_a_timeout_is_answered_409_and_counts_as_sent() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = LineChannel::new(config(&fake), client(Duration::from_millis(300))).unwrap();
    fake.script(ScriptedResponse {
        status: 200,
        delay_ms: 1500,
        after_applying: true,
        path_suffix: Some("/message/broadcast".into()),
        ..Default::default()
    });
    let a = announcement(Priority::Normal);
    let payload = line.render(&a).unwrap().units.remove(0);
    let c = ctx(Priority::Normal);
    let first = line.deliver(&unit(payload.clone()), &c).await.unwrap_err();
    assert_eq!(first.class, ErrorClass::Transient, "{first}");

    let second = line.deliver(&unit(payload), &c).await.unwrap();
    assert!(second.already_sent);
    let accepted = fake.accepted_to("broadcast");
    assert_eq!(accepted.len(), 1, "exactly one broadcast accepted");
    assert_eq!(
        second.remote_id.as_deref(),
        Some(accepted[0].request_id.as_str())
    );
    let sends = fake.requests_to("/message/broadcast");
    assert_eq!(sends.len(), 2);
    assert_eq!(
        sends[0].body, sends[1].body,
        "byte-for-byte the same request"
    );
    assert_eq!(
        sends[0].header("x-line-retry-key"),
        sends[1].header("x-line-retry-key")
    );
}

#[tokio::test]
async fn a_push_replay_repeats_the_sent_messages() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(Config {
        mode: Mode::Push,
        to: vec![user(3)],
        ..config(&fake)
    });
    let payload = line
        .render(&announcement(Priority::Urgent))
        .unwrap()
        .units
        .remove(0);
    let c = ctx(Priority::Urgent);
    let first = line.deliver(&unit(payload.clone()), &c).await.unwrap();
    let again = line.deliver(&unit(payload), &c).await.unwrap();
    assert!(again.already_sent);
    assert_eq!(first.remote_id, again.remote_id);
    let id = first.note.unwrap().rsplit(' ').next().unwrap().to_string();
    assert!(again.note.unwrap().contains(&id));
    assert_eq!(fake.accepted().len(), 1);
}

#[tokio::test]
async fn a_wrong_token_is_auth_and_never_shows_the_token() {
    let fake = start_fake(FakeOptions::default()).await;
    let secret = "s3cr3t-token-that-must-not-leak";
    let line = channel(Config {
        channel_access_token: Some(SecretString::from(secret)),
        ..config(&fake)
    });
    let results = send(&line, &announcement(Priority::Normal)).await;
    let e = results[0].as_ref().unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert_eq!(e.status, Some(401));
    assert!(e.message.contains("invalid token"), "{}", e.message);
    for shown in [e.to_string(), format!("{e:?}"), format!("{line:?}")] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let h = line.healthcheck().await.unwrap_err();
    assert_eq!(h.class, ErrorClass::Auth);
    assert!(!h.to_string().contains(secret));
    assert!(fake.accepted().is_empty());
    // The token travelled only in the header, never in a URL.
    for r in fake.requests() {
        assert!(!r.path.contains(secret) && !r.query.unwrap_or_default().contains(secret));
    }
}

#[tokio::test]
async fn the_healthcheck_reads_bot_info_with_the_token() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    line.healthcheck().await.unwrap();
    let r = &fake.requests_to("/v2/bot/info")[0];
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn status_codes_map_to_classes() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(Config {
        mode: Mode::Push,
        to: vec![user(1)],
        ..config(&fake)
    });
    let payload = line
        .render(&announcement(Priority::Normal))
        .unwrap()
        .units
        .remove(0);
    let cases: Vec<(u16, &str, &str)> = vec![
        (500, "", "transient"),
        (503, "{\"message\":\"Service Unavailable\"}", "transient"),
        (
            403,
            "{\"message\":\"Access to this API is not available for your account\"}",
            "auth",
        ),
        (
            429,
            "{\"message\":\"The API rate limit has been exceeded. Try again later.\"}",
            "rate_limited",
        ),
        (
            429,
            "{\"message\":\"You have reached your monthly limit.\"}",
            "quota",
        ),
        (
            400,
            "{\"message\":\"Failed to send messages\"}",
            "permanent",
        ),
        (404, "{\"message\":\"Not found\"}", "permanent"),
        (413, "", "permanent"),
    ];
    for (status, body, class) in cases {
        fake.script(ScriptedResponse {
            status,
            body: body.into(),
            path_suffix: Some("/message/push".into()),
            ..Default::default()
        });
        let e = line
            .deliver(&unit(payload.clone()), &ctx(Priority::Normal))
            .await
            .unwrap_err();
        assert_eq!(e.class.as_str(), class, "{status} {body}");
        assert_eq!(e.status, Some(status));
    }
    // A 409 for the retry key is success, not an error.
    fake.script(ScriptedResponse {
        status: 409,
        body: "{\"message\":\"The retry key is already accepted\"}".into(),
        headers: vec![("x-line-accepted-request-id".into(), "acc-1".into())],
        path_suffix: Some("/message/push".into()),
        ..Default::default()
    });
    let r = line
        .deliver(&unit(payload), &ctx(Priority::Normal))
        .await
        .unwrap();
    assert!(r.already_sent);
    assert_eq!(r.remote_id.as_deref(), Some("acc-1"));
}

#[tokio::test]
async fn a_malformed_retry_key_is_refused_by_the_fake() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    let payload = line
        .render(&announcement(Priority::Normal))
        .unwrap()
        .units
        .remove(0);
    let mut c = ctx(Priority::Normal);
    c.idempotency_key = "not-a-uuid".into();
    let e = line.deliver(&unit(payload), &c).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("X-Line-Retry-Key"), "{}", e.message);
}

// ---------------------------------------------------------------- quota

#[tokio::test]
async fn an_exhausted_quota_stops_sends_before_they_reach_line() {
    let fake = start_fake(FakeOptions::default()).await;
    fake.exhaust_quota();
    let line = channel(config(&fake));
    // The daemon's background read (Channel::refresh); sends only consult what it read.
    line.refresh().await.unwrap();
    let e = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        matches!(e.class, ErrorClass::Quota { until: Some(_) }),
        "{e}"
    );
    let d = send(&line, &announcement(Priority::Disaster))
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(d.class, ErrorClass::Quota { .. }));
    assert!(
        d.message.contains("DISASTER ALERT NOT SENT"),
        "{}",
        d.message
    );
    assert!(fake.requests_to("/message/broadcast").is_empty());
    // Read once in the background; no send asked LINE for it (A.2: never on the path of
    // a disaster send).
    assert_eq!(fake.requests_to("/message/quota").len(), 1);
    assert_eq!(fake.requests_to("/quota/consumption").len(), 1);
    let status = line.status();
    assert!(
        status.warnings.iter().any(|w| w.contains("exhausted")),
        "{:?}",
        status.warnings
    );
    let monthly = status
        .budgets
        .iter()
        .find(|b| b.name == "monthly_messages")
        .unwrap();
    assert_eq!((monthly.remaining, monthly.limit), (Some(0), Some(5000)));
    // Broadcast slots were given back: nothing was sent.
    let b = status
        .budgets
        .iter()
        .find(|b| b.name == "broadcast_requests_per_hour")
        .unwrap();
    assert_eq!(b.remaining, Some(60));
}

#[tokio::test]
async fn lines_own_monthly_limit_answer_is_quota_and_low_quota_warns() {
    let fake = start_fake(FakeOptions::default()).await;
    // 10 left: the adapter's check passes, but a broadcast to 1,100 friends does not fit.
    fake.set_usage(4990);
    let line = channel(config(&fake));
    line.refresh().await.unwrap();
    let e = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(e.class, ErrorClass::Quota { .. }), "{e}");
    assert!(e.message.contains("monthly limit"));
    assert_eq!(fake.requests_to("/message/broadcast").len(), 1);
    line.refresh().await.unwrap();
    let status = line.status();
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains("quota low: 10 of 5000")),
        "{:?}",
        status.warnings
    );

    // Multicast knows its cost: 3 recipients with 2 left is refused locally.
    fake.set_usage(4998);
    let line = channel(Config {
        mode: Mode::Multicast,
        to: (0..3).map(user).collect(),
        ..config(&fake)
    });
    line.refresh().await.unwrap();
    let e = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(e.class, ErrorClass::Quota { .. }));
    assert!(fake.requests_to("/message/multicast").is_empty());
}

// ---------------------------------------------------------------- broadcast budget

#[tokio::test]
async fn the_broadcast_budget_keeps_a_reserve_for_disasters() {
    let fake = start_fake(FakeOptions::default()).await;
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock_now = now.clone();
    let line = channel(Config {
        broadcast_per_hour: 3,
        disaster_reserve_per_hour: 1,
        ..config(&fake)
    })
    .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
    let normal = announcement(Priority::Normal);
    assert!(send(&line, &normal).await[0].is_ok());
    *now.lock().unwrap() += chrono::TimeDelta::minutes(10);
    assert!(send(&line, &normal).await[0].is_ok());
    let e = send(&line, &announcement(Priority::Urgent))
        .await
        .remove(0)
        .unwrap_err();
    match e.class {
        ErrorClass::RateLimited {
            retry_after: Some(wait),
        } => {
            assert_eq!(
                wait,
                Duration::from_secs(50 * 60),
                "the first slot frees an hour after it was taken"
            )
        }
        other => panic!("{other:?}"),
    }
    let status = line.status();
    let normal_budget = status
        .budgets
        .iter()
        .find(|b| b.name == "broadcast_requests_per_hour_non_disaster")
        .unwrap();
    assert_eq!(normal_budget.remaining, Some(0));
    assert!(status
        .warnings
        .iter()
        .any(|w| w.contains("disaster reserve")));

    assert!(send(&line, &announcement(Priority::Disaster)).await[0].is_ok());
    let e = send(&line, &announcement(Priority::Disaster))
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(e.class, ErrorClass::RateLimited { .. }));
    assert_eq!(fake.accepted_to("broadcast").len(), 3);

    // An hour after the first send one slot is free, but the two later sends still hold
    // the non-disaster share; ten minutes on, those expire too.
    *now.lock().unwrap() += chrono::TimeDelta::minutes(51);
    assert!(send(&line, &normal).await[0].is_err());
    *now.lock().unwrap() += chrono::TimeDelta::minutes(10);
    assert!(
        send(&line, &normal).await[0].is_ok(),
        "slots free after the hour"
    );
    assert_eq!(fake.accepted_to("broadcast").len(), 4);
}

#[tokio::test]
async fn lines_own_rate_limit_answer_is_rate_limited() {
    let fake = start_fake(FakeOptions {
        broadcast_per_hour: 1,
        ..FakeOptions::default()
    })
    .await;
    let line = channel(config(&fake));
    assert!(send(&line, &announcement(Priority::Normal)).await[0].is_ok());
    let e = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        matches!(e.class, ErrorClass::RateLimited { retry_after: None }),
        "{e}"
    );
    assert!(e.message.contains("rate limit"));
    assert_eq!(
        fake.requests_to("/message/broadcast")
            .last()
            .unwrap()
            .header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

// ---------------------------------------------------------------- the four 429s (CHANNELS.md §9)

/// LINE's four documented 429 causes, and one it does not explain, as a table: the body's
/// `message` alone decides between "wait and retry" and "quota", and the delivery log says
/// which cause it was. An unexplained 429 is a rate limit, honouring `Retry-After` if sent.
#[tokio::test]
async fn the_four_documented_429s_are_told_apart_by_their_message() {
    use crate::error::{classify, Outcome};
    struct Row {
        message: &'static str,
        retry_after: Option<&'static str>,
        outcome: Outcome,
        /// Words the delivery log must carry to name the cause.
        names: &'static str,
    }
    let rows = [
        Row {
            message: RATE_LIMIT_EXCEEDED,
            retry_after: None,
            outcome: Outcome::RateLimited,
            names: "cause: rate limit",
        },
        Row {
            message: CONCURRENT_LIMIT,
            retry_after: None,
            outcome: Outcome::RateLimited,
            names: "cause: concurrent-operation limit",
        },
        Row {
            message: MONTHLY_LIMIT,
            retry_after: None,
            outcome: Outcome::Quota,
            names: "cause: free monthly messages used up",
        },
        Row {
            message: ADDITIONAL_MESSAGE_LIMIT,
            retry_after: None,
            outcome: Outcome::Quota,
            names: "cause: additional-message target limit reached",
        },
        Row {
            message: "Too many requests, for a reason this table does not know",
            retry_after: Some("30"),
            outcome: Outcome::RateLimited,
            names: "cause: not one of LINE's documented 429s",
        },
    ];
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(Config {
        mode: Mode::Push,
        to: vec![user(1)],
        ..config(&fake)
    });
    let payload = line
        .render(&announcement(Priority::Normal))
        .unwrap()
        .units
        .remove(0);
    // The table itself: the body's message alone decides.
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let body = ErrorBody {
                message: row.message.into(),
                ..ErrorBody::default()
            };
            let got = classify(429, &body);
            (got != row.outcome)
                .then(|| format!("{:?}: want {:?}, got {got:?}", row.message, row.outcome))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "misclassified 429s:\n{}",
        wrong.join("\n")
    );
    // And through the adapter: the class with its wait, and the cause in the log.
    for row in rows {
        fake.script(ScriptedResponse {
            status: 429,
            body: json!({"message": row.message}).to_string(),
            headers: row
                .retry_after
                .map(|r| vec![("retry-after".to_string(), r.to_string())])
                .unwrap_or_default(),
            path_suffix: Some("/message/push".into()),
            ..Default::default()
        });
        let e = line
            .deliver(&unit(payload.clone()), &ctx(Priority::Normal))
            .await
            .unwrap_err();
        match (row.outcome, &e.class) {
            (Outcome::RateLimited, ErrorClass::RateLimited { retry_after }) => assert_eq!(
                *retry_after,
                row.retry_after
                    .map(|r| Duration::from_secs(r.parse().unwrap())),
                "{}",
                row.message
            ),
            (Outcome::Quota, ErrorClass::Quota { until }) => assert_eq!(
                *until,
                Some(crate::client::next_month_start(Utc::now())),
                "{}",
                row.message
            ),
            (want, got) => panic!("{}: want {want:?}, got {got:?}", row.message),
        }
        assert_eq!(e.status, Some(429));
        assert!(e.message.contains(row.message), "{}", e.message);
        assert!(
            e.message.contains(row.names),
            "the log should name the cause ({}): {}",
            row.names,
            e.message
        );
    }
    assert!(fake.accepted().is_empty());
}

/// The fake's additional-message 429: quota until the month resets, nothing sent, and once
/// the limit is lifted the same retry key goes through (a 429 was processed for nobody).
#[tokio::test]
async fn lines_additional_message_limit_from_the_fake_is_quota() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    let payload = line
        .render(&announcement(Priority::Normal))
        .unwrap()
        .units
        .remove(0);
    let c = ctx(Priority::Normal);
    fake.refuse_sends(Some(fake::TooMany::AdditionalMessages));
    let e = line.deliver(&unit(payload.clone()), &c).await.unwrap_err();
    assert!(
        matches!(e.class, ErrorClass::Quota { until: Some(_) }),
        "{e}"
    );
    assert!(
        e.message.contains(ADDITIONAL_MESSAGE_LIMIT),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("cause: additional-message target limit reached"),
        "{}",
        e.message
    );
    assert_eq!(fake.requests_to("/message/broadcast").len(), 1);
    assert!(fake.accepted().is_empty());

    fake.refuse_sends(None);
    let r = line.deliver(&unit(payload), &c).await.unwrap();
    assert!(!r.already_sent, "the 429 stored nothing under the key");
    assert_eq!(fake.accepted_to("broadcast").len(), 1);
}

/// The fake's concurrency 429: wait and retry (not quota, not a failure), the log says it
/// was the concurrent-operation limit, and the retry under the same key is accepted once.
#[tokio::test]
async fn lines_concurrency_limit_from_the_fake_is_rate_limited() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(Config {
        mode: Mode::Multicast,
        to: (0..3).map(user).collect(),
        ..config(&fake)
    });
    let payload = line
        .render(&announcement(Priority::Disaster))
        .unwrap()
        .units
        .remove(0);
    let c = ctx(Priority::Disaster);
    fake.refuse_sends(Some(fake::TooMany::Concurrency));
    let e = line.deliver(&unit(payload.clone()), &c).await.unwrap_err();
    assert!(
        matches!(e.class, ErrorClass::RateLimited { retry_after: None }),
        "{e}"
    );
    assert!(e.message.contains(CONCURRENT_LIMIT), "{}", e.message);
    assert!(
        e.message.contains("cause: concurrent-operation limit"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("quota"), "{}", e.message);
    assert!(fake.accepted().is_empty());

    fake.refuse_sends(None);
    let r = line.deliver(&unit(payload), &c).await.unwrap();
    assert!(!r.already_sent);
    assert_eq!(fake.accepted_to("multicast").len(), 1);
    assert_eq!(fake.usage(), 3, "counted once, for the accepted send only");
}

// ---------------------------------------------------------------- reach and narrowcast

fn yesterday_jst(now: DateTime<Utc>) -> String {
    reach::insight_date(now)
}

#[tokio::test]
async fn reach_reads_followers_deliveries_and_views() {
    let fake = start_fake(FakeOptions::default()).await;
    fake.set_followers(7620, 5848, 237);
    fake.set_monthly_limit(None);
    let date = yesterday_jst(Utc::now());
    fake.set_delivery_count(&date, "apiBroadcast", 5385);
    let line = channel(config(&fake));
    let receipt = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap();
    let request_id = receipt.remote_id.unwrap();
    fake.set_impressions(&request_id, 25, 5);

    let samples = line.fetch_reach().await.unwrap();
    let get = |metric: &str, subject: Option<&str>| {
        samples
            .iter()
            .find(|s| s.metric == metric && s.subject.as_deref() == subject)
            .map(|s| s.value)
    };
    assert_eq!(get("followers", None), Some(7620));
    assert_eq!(get("targetedReaches", None), Some(5848));
    assert_eq!(get("blocks", None), Some(237));
    assert_eq!(
        get("apiBroadcast", Some(&format!("date:{date}"))),
        Some(5385)
    );
    assert_eq!(get("uniqueImpression", Some(&request_id)), Some(25));
    assert_eq!(get("delivered", Some(&request_id)), Some(7620 - 237));
    assert_eq!(
        get("uniqueClick", Some(&request_id)),
        None,
        "null below 20 is no sample"
    );
    let followers = &fake.requests_to("/insight/followers")[0];
    assert_eq!(
        followers.query.as_deref(),
        Some(format!("date={date}").as_str())
    );
}

#[tokio::test]
async fn unready_statistics_are_not_zero() {
    let fake = start_fake(FakeOptions::default()).await;
    // An adapter clock a day ahead asks for the fake's today, which LINE has not computed.
    let line =
        channel(config(&fake)).with_clock(Arc::new(|| Utc::now() + chrono::TimeDelta::days(1)));
    let samples = line.fetch_reach().await.unwrap();
    assert!(
        samples.iter().all(|s| s.metric != "followers"),
        "{samples:?}"
    );
    assert!(line.status().warnings.iter().any(|w| w.contains("unready")));
}

/// B.2: the adapter reads the time from the clock the daemon hands it at build.
#[tokio::test]
async fn build_takes_its_clock_from_the_build_env() {
    let fake = start_fake(FakeOptions::default()).await;
    let at = Utc::now() + chrono::TimeDelta::days(1);
    let env = noroshi_channel_core::BuildEnv {
        http: client(Duration::from_secs(5)),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: Arc::new(move || at),
    };
    let line = build(&config(&fake), &env).unwrap();
    let _ = line.fetch_reach().await;
    let followers = &fake.requests_to("/insight/followers")[0];
    assert_eq!(
        followers.query.as_deref(),
        Some(format!("date={}", yesterday_jst(at)).as_str())
    );
}

#[tokio::test]
async fn narrowcast_progress_is_polled_until_it_settles() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(Config {
        mode: Mode::Narrowcast,
        narrowcast: NarrowcastSettings {
            areas: vec!["jp_20".into()],
            ..NarrowcastSettings::default()
        },
        ..config(&fake)
    });
    let receipt = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap();
    let id = receipt.remote_id.unwrap();
    assert!(receipt.note.unwrap().contains("narrowcast accepted (202)"));
    assert_eq!(
        line.narrowcast_progress(&id).await.unwrap().phase,
        "waiting"
    );
    line.fetch_reach().await.unwrap();
    let p = line.narrowcast_progress(&id).await.unwrap();
    assert_eq!(p.phase, "succeeded");
    assert_eq!(p.success_count, Some(1100));

    let second = send(&line, &announcement(Priority::Normal))
        .await
        .remove(0)
        .unwrap();
    let id2 = second.remote_id.unwrap();
    fake.fail_narrowcast(&id2, 2, "not enough recipients");
    line.fetch_reach().await.unwrap();
    let warnings = line.status().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&id2) && w.contains("not enough recipients")),
        "{warnings:?}"
    );
    assert!(fake.requests_to("/progress/narrowcast").iter().all(|r| r
        .query
        .as_deref()
        .unwrap()
        .starts_with("requestId=")));
}

#[tokio::test]
async fn a_retry_key_protects_for_24_hours_only() {
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    let payload = line
        .render(&announcement(Priority::Normal))
        .unwrap()
        .units
        .remove(0);
    let c = ctx(Priority::Normal);
    line.deliver(&unit(payload.clone()), &c).await.unwrap();
    fake.advance(Duration::from_secs(25 * 3600));
    let r = line.deliver(&unit(payload), &c).await.unwrap();
    assert!(!r.already_sent);
    assert_eq!(fake.accepted().len(), 2);
}

// ---------------------------------------------------------------- webhook

#[test]
fn webhook_signatures_match_the_vectors() {
    let raw = std::fs::read_to_string(conformance("noroshi-vectors/vectors.json")).unwrap();
    let vectors: Value = serde_json::from_str(&raw).unwrap();
    let cases = vectors["line_webhook_signature"]["cases"]
        .as_array()
        .unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let secret = case["channelSecret"].as_str().unwrap();
        let body = case["bodyUtf8"].as_str().unwrap().as_bytes();
        let expected = case["expectedXLineSignature"].as_str().unwrap();
        assert!(verify_signature(secret, body, expected), "{case}");
        assert_eq!(sign(secret, body), expected);
        assert!(!verify_signature("other-secret", body, expected));
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        assert!(!verify_signature(secret, &tampered, expected));
        assert!(!verify_signature(secret, body, "not base64!"));
        assert!(!verify_signature(secret, body, ""));
    }
    // The trailing-LF case: the same JSON without the LF has another signature.
    let lf = &cases[3];
    let body = lf["bodyUtf8"].as_str().unwrap();
    assert!(body.ends_with('\n'));
    assert!(!verify_signature(
        lf["channelSecret"].as_str().unwrap(),
        body.trim_end().as_bytes(),
        lf["expectedXLineSignature"].as_str().unwrap()
    ));
}

#[test]
fn webhook_events_give_follows_and_unfollows() {
    let raw = std::fs::read_to_string(conformance("noroshi-vectors/vectors.json")).unwrap();
    let vectors: Value = serde_json::from_str(&raw).unwrap();
    let cases = vectors["line_webhook_signature"]["cases"]
        .as_array()
        .unwrap();
    assert!(
        parse_events(cases[0]["bodyUtf8"].as_str().unwrap().as_bytes())
            .unwrap()
            .is_empty()
    );
    let events = parse_events(cases[1]["bodyUtf8"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        e.kind,
        WebhookEventKind::Follow {
            is_unblocked: false
        }
    );
    assert_eq!(
        e.user_id.as_deref(),
        Some("Ufc729a925b3abef00000000000000000")
    );
    assert_eq!(e.timestamp.timestamp_millis(), 1625665242214);
    assert_eq!(
        e.webhook_event_id.as_deref(),
        Some("01FZ74ASS536FW97EX38NKCZQK")
    );
    let message = parse_events(cases[2]["bodyUtf8"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(
        message[0].kind,
        WebhookEventKind::Message {
            text: Some("避難所はどこですか".into())
        }
    );

    let unfollow = br#"{"destination":"U8e742f61d673b39c7fff3cecb7536ef0","events":[{"type":"unfollow","mode":"active","timestamp":1625665242215,"source":{"type":"user","userId":"U80696558e1aa83100000000000000000"},"webhookEventId":"01FZ74ASS536FW97EX38NKCZQL","deliveryContext":{"isRedelivery":true}}]}"#;
    let e = &parse_events(unfollow).unwrap()[0];
    assert_eq!(e.kind, WebhookEventKind::Unfollow);
    assert!(e.is_redelivery);
    assert!(parse_events(b"{\"events\":\"nope\"}").is_err());

    let body = fake::follow_event_body(
        "U8e742f61d673b39c7fff3cecb7536ef0",
        &user(9),
        1_700_000_000_000,
    );
    let e = &parse_events(body.as_bytes()).unwrap()[0];
    assert_eq!(e.user_id, Some(user(9)));
}

// ---------------------------------------------------------------- config

#[test]
fn config_defaults_unknown_keys_and_problems() {
    let c: Config = serde_json::from_value(json!({})).unwrap();
    assert_eq!(c.api_base, "https://api.line.me");
    assert_eq!(c.data_api_base, "https://api-data.line.me");
    assert_eq!(c.mode, Mode::Broadcast);
    assert_eq!(
        (c.broadcast_per_hour, c.disaster_reserve_per_hour),
        (60, 10)
    );
    assert!(serde_json::from_value::<Config>(json!({"api_bsae": "x"})).is_err());
    let c: Config = serde_json::from_value(json!({
        "enabled": true, "mode": "narrowcast", "narrowcast": {"areas": ["jp_20", "jp_48"]},
        "delivery": {"max_attempts": 5}
    }))
    .unwrap();
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec!["channel_access_token", "narrowcast.areas[1]"]);

    let c = Config {
        channel_access_token: Some(SecretString::from("t")),
        mode: Mode::Multicast,
        to: vec!["Uabc".into()],
        disaster_reserve_per_hour: 60,
        api_base: "ftp://x".into(),
        ..Config::default()
    };
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec!["api_base", "to[0]", "disaster_reserve_per_hour"]);

    let env = noroshi_channel_core::BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    assert!(build(&c, &env).is_err());
    let ok = Config {
        channel_access_token: Some(SecretString::from("t")),
        ..Config::default()
    };
    assert_eq!(build(&ok, &env).unwrap().name(), "line");
}

#[test]
fn the_registry_drives_the_section_through_channel_config() {
    use noroshi_channel_core::ChannelConfig;
    let env = noroshi_channel_core::BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let mut c = Config {
        enabled: true,
        channel_access_token: Some(SecretString::from("t")),
        ..Config::default()
    };
    c.delivery.burst = Some(4);
    let section: &dyn ChannelConfig = &c;
    assert!(section.enabled());
    assert_eq!(section.delivery().burst, Some(4));
    assert!(section.validate().is_empty());
    assert_eq!(section.build("line", &env).unwrap().name(), "line");
    let missing = Config::default();
    let section: &dyn ChannelConfig = &missing;
    let problems = section.validate();
    assert_eq!(problems[0].key, "channel_access_token");
    assert_eq!(
        problems[0].message,
        "missing: set channel_access_token_env or channel_access_token_file"
    );
    assert!(section.build("line", &env).is_err());
}

/// A.2: a disaster send never waits for a quota read: with LINE's quota endpoint stalling,
/// the alert goes out at once, and the background read is what learns the quota.
#[tokio::test]
async fn a_disaster_send_never_reads_the_quota_inline() {
    use noroshi_channel_core::fake::ScriptedResponse;
    let fake = start_fake(FakeOptions::default()).await;
    let line = channel(config(&fake));
    fake.script(ScriptedResponse {
        status: 200,
        body: r#"{"type":"none"}"#.into(),
        delay_ms: 5_000,
        path_suffix: Some("/message/quota".into()),
        ..Default::default()
    });
    let sent = tokio::time::timeout(
        Duration::from_secs(2),
        send(&line, &announcement(Priority::Disaster)),
    )
    .await
    .expect("the alert did not wait for the quota read");
    assert!(sent[0].is_ok(), "{:?}", sent[0]);
    assert!(
        fake.requests_to("/message/quota").is_empty(),
        "no quota read on the send's path"
    );
}

/// An announcement's other languages: by default each goes as one more message in the same
/// request (within LINE's five, before images); with `variants = "audiences"` each goes by
/// narrowcast to its language's audience group. Every body the fake receives passes LINE's
/// OpenAPI schema.
#[tokio::test]
async fn other_languages_go_together_or_to_their_audiences() {
    let fake = start_fake(FakeOptions::default()).await;
    let mut a = announcement(Priority::Disaster);
    a.variants = vec![
        noroshi_channel_core::LangText {
            lang: "en".into(),
            title: "[Level 4] Evacuation order".into(),
            body: "Leave dangerous areas now.".into(),
        },
        noroshi_channel_core::LangText {
            lang: "ja-easy".into(),
            title: "【レベル4】にげてください".into(),
            body: "あぶない ところから にげてください。".into(),
        },
    ];
    a.images = (0..4)
        .map(|i| format!("https://www.city.example.jp/{i}.png"))
        .collect();
    // Together: card, en, ja-easy, then two of the four images.
    let line = channel(config(&fake));
    let r = line.render(&a).unwrap();
    assert_eq!(r.units.len(), 1);
    let messages = r.units[0]["body"]["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), MAX_MESSAGES);
    assert_eq!(messages[0]["type"], "flex");
    assert!(messages[1]["text"]
        .as_str()
        .unwrap()
        .starts_with("[Level 4] Evacuation order"));
    assert!(messages[2]["text"]
        .as_str()
        .unwrap()
        .starts_with("【レベル4】にげてください"));
    assert_eq!(messages[3]["type"], "image");
    assert!(
        r.preview.warnings.iter().any(|w| w.contains("dropped")),
        "{:?}",
        r.preview.warnings
    );
    for payload in r.units {
        line.deliver(&unit(payload), &ctx(Priority::Disaster))
            .await
            .unwrap();
    }
    // Audiences: the primary as configured, en to its audience, ja-easy has none (said).
    let line = channel(Config {
        variants: crate::VariantMode::Audiences,
        language_audiences: [("en".to_string(), 4389303728991i64)].into_iter().collect(),
        ..config(&fake)
    });
    a.images.clear();
    let r = line.render(&a).unwrap();
    assert_eq!(r.units.len(), 2);
    assert_eq!(r.units[1]["endpoint"], "narrowcast");
    assert_eq!(
        r.units[1]["body"]["recipient"]["audienceGroupId"],
        4389303728991i64
    );
    assert!(r.units[1]["body"]["messages"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Leave dangerous"));
    assert!(
        r.preview.warnings.iter().any(|w| w.contains("ja-easy")),
        "{:?}",
        r.preview.warnings
    );
    for payload in r.units {
        line.deliver(&unit(payload), &ctx(Priority::Disaster))
            .await
            .unwrap();
    }
    assert_eq!(assert_recorded_bodies_valid(&fake), 3);
}
