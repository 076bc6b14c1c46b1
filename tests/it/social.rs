//! Every channel at once: one announcement, each platform fake receives exactly one
//! well-formed post; previews; an auth failure on a social channel pauses only that channel.

use std::path::PathBuf;
use std::time::Duration;

use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::on_both;

const LINE_TOKEN: &str = "it-line-channel-token-0a9b";
const FB_TOKEN: &str = "it-facebook-page-token-c3d4";
const FB_PAGE: &str = "102030405060708";
const HOOK_SECRET: &str = "it-webhook-signing-secret-e5f6";

pub fn line_openapi() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/line-openapi/messaging-api.yml")
}

pub(crate) struct Fakes {
    pub(crate) line: noroshi_line::fake::FakeLine,
    x: noroshi_x::fake::FakeX,
    facebook: noroshi_facebook::fake::FakeGraph,
    hook: noroshi_webhook::fake::FakeReceiver,
    smtp: FakeSmtp,
}

pub(crate) async fn fakes() -> Fakes {
    let openapi = line_openapi();
    Fakes {
        line: noroshi_line::fake::start(noroshi_line::fake::FakeOptions {
            access_token: LINE_TOKEN.into(),
            openapi: Some(openapi),
            ..Default::default()
        })
        .await,
        x: noroshi_x::fake::start().await,
        facebook: noroshi_facebook::fake::start(FB_PAGE, FB_TOKEN).await,
        hook: noroshi_webhook::fake::start(Some(HOOK_SECRET)).await,
        smtp: FakeSmtp::start(FakeSmtpOptions::default()).await,
    }
}

fn all_channels_config(f: &Fakes) -> String {
    let creds = noroshi_x::fake::FakeCredentials::default();
    format!(
        r#"
[channels.line]
enabled = true
api_base = "{line}"
data_api_base = "{line}"
channel_access_token_env = "IT_LINE_TOKEN"
channel_secret = "it-line-secret"

[channels.x]
enabled = true
api_base = "{x}"
upload_base = "{x}"
consumer_key = "{ck}"
consumer_secret_env = "IT_X_CONSUMER_SECRET"
access_token = "{at}"
access_token_secret_env = "IT_X_ACCESS_SECRET"
long_text = "shorten"

[channels.facebook]
enabled = true
graph_base = "{fb}"
page_id = "{page}"
page_access_token_env = "IT_FB_TOKEN"

[channels.webhook.cms]
enabled = true
url = "{hook}"
signing_secret_env = "IT_HOOK_SECRET"
{email}
"#,
        line = f.line.server.base_url(),
        x = f.x.base_url(),
        ck = creds.consumer_key,
        at = creds.access_token,
        fb = f.facebook.base_url(),
        page = FB_PAGE,
        hook = f.hook.url(),
        email = email_config(f.smtp.port()),
    )
}

async fn daemon(backend: Backend, f: &Fakes) -> Daemon {
    daemon_with(backend, f, "").await
}

/// A daemon with every channel on its fake, and `extra` config after the channels'.
pub(crate) async fn daemon_with(backend: Backend, f: &Fakes, extra: &str) -> Daemon {
    let creds = noroshi_x::fake::FakeCredentials::default();
    Daemon::builder(backend)
        .config(&format!("{}\n{extra}", all_channels_config(f)))
        .env("IT_LINE_TOKEN", LINE_TOKEN)
        .env("IT_X_CONSUMER_SECRET", &creds.consumer_secret)
        .env("IT_X_ACCESS_SECRET", &creds.access_token_secret)
        .env("IT_FB_TOKEN", FB_TOKEN)
        .env("IT_HOOK_SECRET", HOOK_SECRET)
        .start()
        .await
}

async fn one_announcement_reaches_every_channel_once(backend: Backend) {
    let f = fakes().await;
    let d = daemon(backend, &f).await;
    d.add_subscribers(2, "resident").await;
    let id = d.submit(notice()).await;
    let v = d.wait_status(&id, &["sent"], Duration::from_secs(60)).await;
    for c in ["line", "x", "facebook", "email", "website", "webhook.cms"] {
        assert_eq!(channel(&v, c)["status"], "sent", "{c}: {v}");
    }
    // LINE: one broadcast, with the delivery's retry key, schema-valid (the fake checks it).
    let sent = f.line.accepted_to("broadcast");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let text = sent[0].body["messages"][0]["text"].as_str().unwrap();
    assert!(text.contains("避難所開設のお知らせ"), "{text}");
    assert!(sent[0]
        .retry_key
        .as_deref()
        .map(|k| k.len() == 36)
        .unwrap_or(false));
    assert_eq!(
        channel(&v, "line")["remote_ids"][0],
        sent[0].request_id.as_str()
    );
    // X: one post, signed (the fake verified OAuth 1.0a), within 280 weighted.
    let posts = f.x.x.posts();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].text.starts_with("避難所開設のお知らせ"),
        "{}",
        posts[0].text
    );
    assert_eq!(channel(&v, "x")["remote_ids"][0], posts[0].id.as_str());
    // Facebook: one feed post with the link.
    let fb = f.facebook.posts();
    assert_eq!(fb.len(), 1);
    assert!(fb[0].message.contains("本日15時"));
    assert_eq!(
        fb[0].link.as_deref(),
        Some("https://www.city.suzaka.nagano.jp/bousai/")
    );
    // No credential ever travelled in a URL.
    for r in f.facebook.requests() {
        assert!(
            !r.query.clone().unwrap_or_default().contains(FB_TOKEN),
            "token in a URL: {r:?}"
        );
    }
    // Webhook: one signed JSON post (the receiver checked the HMAC).
    let hooks = f.hook.received();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].json()["title"], "避難所開設のお知らせ");
    // Email and website as ever.
    assert!(f.smtp.wait_for(2, Duration::from_secs(10)).await);
    assert_eq!(f.smtp.message_count(), 2);
    assert!(d.site_dir().join(format!("a/{id}.html")).exists());
    // The channel view shows each platform's budgets.
    let (_, chans) = d.get("/api/v1/channels").await;
    let line = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "line")
        .unwrap();
    assert_eq!(line["enabled"], true);
    assert!(
        !line["platform"]["budgets"].as_array().unwrap().is_empty(),
        "{line}"
    );
    let logs = d.logs();
    for secret in [
        LINE_TOKEN,
        FB_TOKEN,
        HOOK_SECRET,
        "fake-consumer-secret-9f3b",
        "fake-access-token-secret-77c1",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the log");
    }
}
on_both!(one_announcement_reaches_every_channel_once);

async fn preview_shows_each_payload_and_stores_nothing(backend: Backend) {
    let f = fakes().await;
    let d = daemon(backend, &f).await;
    let long_body = "須坂市では、".repeat(40);
    let (s, v) = d
        .post("/api/v1/preview", STAFF, json!({"title": "お知らせ", "body": long_body, "overrides": {"line": {"text": "LINE向けの本文"}}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let chans = v["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 6, "{v}");
    let x = chans.iter().find(|c| c["channel"] == "x").unwrap();
    assert_eq!(x["limit"], 280);
    assert!(
        x["length"].as_u64().unwrap() <= 280,
        "shortened to fit: {x}"
    );
    assert!(
        x["text"].as_str().unwrap().contains("/site/a/"),
        "links the website page: {x}"
    );
    let line = chans.iter().find(|c| c["channel"] == "line").unwrap();
    assert_eq!(
        line["payloads"][0]["body"]["messages"][0]["text"],
        "LINE向けの本文"
    );
    assert_eq!(line["limit"], 5000);
    assert_eq!(d.count_announcements().await, 0, "a preview stores nothing");
    assert!(f.line.accepted().is_empty() && f.x.x.posts().is_empty());
    // A refusal names the channel and the rule, for that channel only.
    let (s, v) = d
        .post("/api/v1/preview", STAFF, json!({"title": "お知らせ", "body": "本文", "overrides": {"line": {"text": "あ".repeat(5001)}}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let line = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "line")
        .unwrap();
    assert_eq!(line["ok"], false);
    assert_eq!(line["error"]["rule"], "max_length");
    let x = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "x")
        .unwrap();
    assert_eq!(x["ok"], true);
    // The same body submitted is refused with 422, nothing stored.
    let (s, v) = d
        .post("/api/v1/announcements", STAFF, json!({"title": "お知らせ", "body": "本文", "overrides": {"line": {"text": "あ".repeat(5001)}}}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errors"][0]["channel"], "line");
    assert_eq!(v["field"], "overrides.line.text");
    assert_eq!(d.count_announcements().await, 0);
}
on_both!(preview_shows_each_payload_and_stores_nothing);

async fn line_auth_failure_pauses_only_line(backend: Backend) {
    let f = fakes().await;
    let d = Daemon::builder(backend)
        .config(&all_channels_config(&f).replace("IT_LINE_TOKEN", "IT_WRONG_LINE_TOKEN"))
        .env("IT_WRONG_LINE_TOKEN", "revoked-line-token-SECRET-1234")
        .env(
            "IT_X_CONSUMER_SECRET",
            &noroshi_x::fake::FakeCredentials::default().consumer_secret,
        )
        .env(
            "IT_X_ACCESS_SECRET",
            &noroshi_x::fake::FakeCredentials::default().access_token_secret,
        )
        .env("IT_FB_TOKEN", FB_TOKEN)
        .env("IT_HOOK_SECRET", HOOK_SECRET)
        .start()
        .await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["line", "x"]}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = d.announcement(&id).await;
        let (_, chans) = d.get("/api/v1/channels").await;
        let line = chans
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "line")
            .unwrap()
            .clone();
        if line["state"] == "paused" && channel(&v, "x")["status"] == "sent" {
            assert!(line["reason"].as_str().unwrap().contains("401"), "{line}");
            assert_ne!(channel(&v, "line")["status"], "failed");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{line} / {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(f.line.accepted().is_empty());
    assert!(!d.logs().contains("revoked-line-token-SECRET-1234"));
}
on_both!(line_auth_failure_pauses_only_line);

async fn line_webhook_checks_the_signature(backend: Backend) {
    let f = fakes().await;
    let d = daemon(backend, &f).await;
    let body = r#"{"destination":"U1","events":[{"type":"follow","timestamp":1625665242214,"source":{"type":"user","userId":"Ufc729a925b3abef00000000000000000"},"replyToken":"x","mode":"active","webhookEventId":"01FZ74ASS536FW97EX38NKCZQK","deliveryContext":{"isRedelivery":false},"follow":{"isUnblocked":false}}]}"#;
    let good = noroshi_line::sign("it-line-secret", body.as_bytes());
    let post = |sig: String| {
        let d = &d;
        async move {
            d.http
                .post(format!("{}/webhooks/line", d.base))
                .header("x-line-signature", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post(good.clone()).await, StatusCode::OK);
    let followers = |chans: serde_json::Value| {
        chans
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "line")
            .unwrap()["platform"]["webhook_followers"]
            .clone()
    };
    assert_eq!(
        followers(d.get("/api/v1/channels").await.1),
        1,
        "the follow event was recorded"
    );
    assert_eq!(
        post(good.clone()).await,
        StatusCode::OK,
        "a redelivery is harmless"
    );
    assert_eq!(followers(d.get("/api/v1/channels").await.1), 1);
    let unfollow = r#"{"destination":"U1","events":[{"type":"unfollow","timestamp":1625665243000,"source":{"type":"user","userId":"Ufc729a925b3abef00000000000000000"},"mode":"active","webhookEventId":"01FZ74ASS536FW97EX38NKCZQL","deliveryContext":{"isRedelivery":false}}]}"#;
    let r = d
        .http
        .post(format!("{}/webhooks/line", d.base))
        .header(
            "x-line-signature",
            noroshi_line::sign("it-line-secret", unfollow.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(unfollow)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        followers(d.get("/api/v1/channels").await.1),
        0,
        "the unfollow was recorded"
    );
    assert_eq!(
        post(noroshi_line::sign("other-secret", body.as_bytes())).await,
        StatusCode::UNAUTHORIZED
    );
    let r = d
        .http
        .post(format!("{}/webhooks/line", d.base))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
on_both!(line_webhook_checks_the_signature);

/// Waits for the daemon's start-up healthcheck (a HEAD) to reach the webhook receiver, so
/// it cannot take a scripted answer meant for a post.
async fn webhook_checked(f: &Fakes) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f.hook.requests().iter().any(|r| r.method == "HEAD") {
        assert!(
            std::time::Instant::now() < deadline,
            "no healthcheck reached the webhook"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A platform's `Retry-After` is honoured, and a rate-limit wait is not a failed attempt.
async fn retry_after_is_honoured(backend: Backend) {
    let f = fakes().await;
    let d = daemon(backend, &f).await;
    webhook_checked(&f).await;
    f.hook.script(noroshi_channel_core::fake::ScriptedResponse {
        status: 429,
        headers: vec![("retry-after".into(), "2".into())],
        body: "{\"error\":\"slow down\"}".into(),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["webhook.cms"]}))
        .await;
    let v = d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "sent after {waited:?}, before Retry-After"
    );
    let (_, log) = d
        .get(&format!("/api/v1/deliveries?announcement_id={id}"))
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!(items[1]["outcome"], "rate_limited");
    assert_eq!(items[1]["status_code"], 429);
    assert_eq!(items[0]["outcome"], "sent");
    assert_eq!(
        items[0]["attempt"], 1,
        "the rate-limited attempt was given back"
    );
    assert_eq!(channel(&v, "webhook.cms")["failed"], 0);
    assert_eq!(f.hook.received().len(), 1);
}
on_both!(retry_after_is_honoured);

/// X rotates the OAuth 2.0 refresh token on every refresh; the daemon keeps the new pair, so
/// a restart does not log the city out with the configured (now dead) token.
async fn x_rotated_oauth2_tokens_survive_a_restart(backend: Backend) {
    let x = noroshi_x::fake::start().await;
    let creds = noroshi_x::fake::FakeCredentials::default();
    let config = format!(
        r#"
[channels.website]
enabled = false

[channels.x]
enabled = true
api_base = "{base}"
upload_base = "{base}"
auth = "oauth2"
oauth2_client_id = "{client}"
oauth2_client_secret_env = "IT_X_CLIENT_SECRET"
oauth2_access_token_env = "IT_X_ACCESS"
oauth2_refresh_token_env = "IT_X_REFRESH"
"#,
        base = x.base_url(),
        client = creds.oauth2_client_id,
    );
    let mut d = Daemon::builder(backend)
        .config(&config)
        .env(
            "IT_X_CLIENT_SECRET",
            creds.oauth2_client_secret.as_deref().unwrap(),
        )
        .env("IT_X_ACCESS", &creds.oauth2_access_token)
        .env("IT_X_REFRESH", &creds.oauth2_refresh_token)
        .start()
        .await;
    x.x.expire_access_token();
    let id = d
        .submit(json!({"title": "お知らせ", "body": "一件目"}))
        .await;
    d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;
    let (access, refresh) = x.x.oauth2_tokens();
    assert_ne!(
        refresh, creds.oauth2_refresh_token,
        "the fake rotated the refresh token"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !d.logs().contains("Saved credentials the platform rotated") {
        assert!(
            std::time::Instant::now() < deadline,
            "not saved:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.restart().await;
    assert!(
        d.logs()
            .contains("Using the credentials the platform rotated last time"),
        "{}",
        d.logs()
    );
    let id = d
        .submit(json!({"title": "お知らせ", "body": "二件目"}))
        .await;
    d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;
    assert_eq!(x.x.posts().len(), 2);
    let (_, chans) = d.get("/api/v1/channels").await;
    let xs = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "x")
        .unwrap();
    assert_ne!(xs["state"], "paused", "{xs}");
    let logs = d.logs();
    for secret in [
        access.as_str(),
        refresh.as_str(),
        creds.oauth2_refresh_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a token leaked into the log");
    }
}
on_both!(x_rotated_oauth2_tokens_survive_a_restart);

/// A platform answer with a NUL byte (PostgreSQL refuses it in text) is still recorded: the
/// delivery fails visibly instead of blocking the recorder.
async fn odd_platform_text_is_still_recorded(backend: Backend) {
    let f = fakes().await;
    let d = daemon(backend, &f).await;
    webhook_checked(&f).await;
    f.hook.script(noroshi_channel_core::fake::ScriptedResponse {
        status: 400,
        body: "{\"error\":\"bad\u{0}request\"}".into(),
        ..Default::default()
    });
    let id = d
        .submit(
            json!({"title": "お知らせ", "body": "本文", "channels": ["webhook.cms", "website"]}),
        )
        .await;
    let v = d
        .wait_status(&id, &["partially_failed"], Duration::from_secs(30))
        .await;
    let hook = channel(&v, "webhook.cms");
    assert_eq!(hook["failed"], 1, "{hook}");
    assert!(
        hook["last_error"].as_str().unwrap().contains("bad"),
        "{hook}"
    );
    assert!(!hook["last_error"].as_str().unwrap().contains('\u{0}'));
    assert_eq!(channel(&v, "website")["status"], "sent");
}
on_both!(odd_platform_text_is_still_recorded);

/// What an adapter sees coming reaches the channel view before it bites: a Page token that
/// expires in three days (from the start-up healthcheck), a LINE quota running low (from the
/// check before sending).
async fn coming_trouble_shows_in_the_channel_state(backend: Backend) {
    let f = fakes().await;
    f.facebook
        .set_token_expires_at((chrono::Utc::now() + chrono::Duration::days(3)).timestamp());
    f.line.set_monthly_limit(Some(1000));
    f.line.set_usage(950);
    let d = daemon(backend, &f).await;
    let state_of = |chans: &serde_json::Value, name: &str| {
        chans
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, chans) = d.get("/api/v1/channels").await;
        let fb = state_of(&chans, "facebook");
        if fb["state"] == "degraded" {
            assert!(fb["reason"].as_str().unwrap().contains("expires"), "{fb}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{fb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The month's quota cannot carry a broadcast to every friend: the delivery waits for
    // the next month (not failed, not retried in a storm) and the channel says why.
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["line"]}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let line = loop {
        let (_, chans) = d.get("/api/v1/channels").await;
        let line = state_of(&chans, "line");
        if line["state"] == "degraded" {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "{line}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(line["reason"].as_str().unwrap().contains("quota"), "{line}");
    let budgets = line["platform"]["budgets"].as_array().unwrap();
    assert!(
        budgets
            .iter()
            .any(|b| b["name"].as_str().unwrap().contains("monthly")),
        "{line}"
    );
    // The outcome is recorded a moment after the channel's state changes.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = d.announcement(&id).await;
        let l = channel(&v, "line").clone();
        if l["status"] == "retrying" {
            assert_eq!(l["failed"], 0, "{l}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, log) = d
        .get(&format!("/api/v1/deliveries?announcement_id={id}"))
        .await;
    assert_eq!(
        log["items"].as_array().unwrap().len(),
        1,
        "one attempt, then a wait: {log}"
    );
    assert!(f.line.accepted().is_empty());
}
on_both!(coming_trouble_shows_in_the_channel_state);

/// With a test target configured on every channel, a drill reaches the test targets only:
/// LINE pushes to the test user (no broadcast), email goes to the test address (no
/// subscriber), the webhook to the test endpoint, Facebook to the test Page, the website
/// into its draft folder (not the public pages or feeds), and X posts nothing on the live
/// account.
async fn a_drill_never_reaches_a_live_target(backend: Backend) {
    let f = fakes().await;
    let test_hook = noroshi_webhook::fake::start(Some(HOOK_SECRET)).await;
    let test_user = format!("U{}", "0123456789abcdef".repeat(2));
    let config = all_channels_config(&f)
        .replace(
            "channel_secret = \"it-line-secret\"",
            &format!("channel_secret = \"it-line-secret\"\nexercise_target = \"{test_user}\""),
        )
        .replace(
            "long_text = \"shorten\"",
            "long_text = \"shorten\"\nexercise_target = \"@suzaka_test\"",
        )
        .replace(
            "page_access_token_env = \"IT_FB_TOKEN\"",
            "page_access_token_env = \"IT_FB_TOKEN\"\nexercise_target = \"900000000000001\"",
        )
        .replace(
            "signing_secret_env = \"IT_HOOK_SECRET\"",
            &format!(
                "signing_secret_env = \"IT_HOOK_SECRET\"\nexercise_target = \"{}\"",
                test_hook.url()
            ),
        )
        .replace(
            "[channels.email]",
            "[channels.email]\nexercise_target = \"drill@city.example.jp\"",
        )
        + "\n[channels.website]\nexercise_target = \"drills\"\n";
    let creds = noroshi_x::fake::FakeCredentials::default();
    let d = Daemon::builder(backend)
        .config(&config)
        .env("IT_LINE_TOKEN", LINE_TOKEN)
        .env("IT_X_CONSUMER_SECRET", &creds.consumer_secret)
        .env("IT_X_ACCESS_SECRET", &creds.access_token_secret)
        .env("IT_FB_TOKEN", FB_TOKEN)
        .env("IT_HOOK_SECRET", HOOK_SECRET)
        .start()
        .await;
    d.add_subscribers(3, "resident").await;
    let mut drill = notice();
    drill["exercise"] = serde_json::json!(true);
    let id = d.submit(drill).await;
    let v = d
        .wait_status(
            &id,
            &["sent", "partially_failed", "failed"],
            Duration::from_secs(60),
        )
        .await;
    // LINE: one push to the test user, no broadcast.
    assert!(f.line.accepted_to("broadcast").is_empty());
    let pushed = f.line.accepted_to("push");
    assert_eq!(pushed.len(), 1, "{v}");
    assert_eq!(pushed[0].body["to"], test_user.as_str());
    // Email: the test address alone.
    assert!(f.smtp.wait_for(1, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rcpts: Vec<String> = f
        .smtp
        .messages()
        .iter()
        .map(|m| m.rcpt_to[0].clone())
        .collect();
    assert_eq!(rcpts, ["drill@city.example.jp"]);
    assert_eq!(channel(&v, "email")["total"], 1, "{v}");
    // Webhook: the test endpoint alone.
    assert!(f.hook.received().is_empty());
    assert_eq!(test_hook.received().len(), 1);
    // Facebook: nothing on the city's Page; the request went to the test Page.
    assert!(f.facebook.posts().is_empty());
    assert!(f
        .facebook
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path.contains("/900000000000001/feed")));
    assert!(!f
        .facebook
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path.contains(&format!("/{FB_PAGE}/"))));
    // X: nothing posted on the live account; the delivery says why.
    assert!(f.x.x.posts().is_empty());
    assert_eq!(channel(&v, "x")["status"], "sent", "{v}");
    // Website: in the draft folder, not among the public pages or in the feeds.
    assert!(d.site_dir().join(format!("drills/a/{id}.html")).exists());
    assert!(!d.site_dir().join(format!("a/{id}.html")).exists());
    let feed = std::fs::read_to_string(d.site_dir().join("feed.atom")).unwrap();
    assert!(!feed.contains(&id), "the drill is in the public feed");
}
on_both!(a_drill_never_reaches_a_live_target);

/// Crash safety: the daemon is SIGKILLed at pseudo-random points while disaster and normal
/// announcements fan out to every channel (ten kills per database, twenty in all), and
/// started again each time. Afterwards nothing is lost: every announcement reached every
/// channel and every subscriber. LINE (retry keys) sends each exactly once; a repeat on a
/// channel without such a mechanism only ever comes with more attempts than deliveries in
/// the announcement's own record, never silently.
async fn kills_at_random_points_lose_nothing(backend: Backend) {
    let f = fakes().await;
    f.smtp.set_data_delay(Duration::from_millis(15));
    // Ten broadcasts to the fake's friends are more than its default month allows.
    f.line.set_monthly_limit(None);
    // Disaster mode would hold the normal posts until an all-clear; this test is about
    // crashes, so nothing pauses here (disaster mode has its own tests in desk.rs).
    let creds = noroshi_x::fake::FakeCredentials::default();
    let mut d = Daemon::builder(backend)
        .config(&all_channels_config(&f))
        .env("IT_LINE_TOKEN", LINE_TOKEN)
        .env("IT_X_CONSUMER_SECRET", &creds.consumer_secret)
        .env("IT_X_ACCESS_SECRET", &creds.access_token_secret)
        .env("IT_FB_TOKEN", FB_TOKEN)
        .env("IT_HOOK_SECRET", HOOK_SECRET)
        .env("NOROSHI__DISASTER__PAUSE_CHANNELS", "[]")
        .start()
        .await;
    d.add_subscribers(12, "resident").await;
    let mut ids = Vec::new();
    // A fixed seed: the same kill points every run, different points within the run.
    let mut seed: u64 = 0x5eed_2026;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..10 {
        let mut body = notice();
        body["title"] = serde_json::json!(format!("訓練ではない通知 {i:02}"));
        if i % 3 == 0 {
            body["priority"] = serde_json::json!("disaster");
        }
        let token = if i % 3 == 0 { DISASTER } else { STAFF };
        let (status, v) = d.post("/api/v1/announcements", token, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        ids.push((
            v["id"].as_str().unwrap().to_string(),
            format!("訓練ではない通知 {i:02}"),
        ));
        tokio::time::sleep(Duration::from_millis(next() % 250)).await;
        d.kill9();
        d.start_again().await;
    }
    for (id, _) in &ids {
        let v = d.wait_status(id, &["sent"], Duration::from_secs(90)).await;
        for c in ["line", "x", "facebook", "email", "website", "webhook.cms"] {
            assert_eq!(channel(&v, c)["status"], "sent", "{c}: {v}");
        }
    }
    // LINE: exactly one accepted send per announcement.
    let line = f.line.accepted_to("broadcast");
    for (_, title) in &ids {
        let n = line
            .iter()
            .filter(|s| s.body.to_string().contains(title.as_str()))
            .count();
        assert_eq!(n, 1, "{title} on LINE");
    }
    // Everywhere else: at least once; more only where the record shows the extra attempts.
    for (id, title) in &ids {
        let v = d.announcement(id).await;
        let counted = |c: &str| {
            let s = channel(&v, c);
            s["attempts"].as_i64().unwrap() > s["total"].as_i64().unwrap()
        };
        let x =
            f.x.x
                .posts()
                .iter()
                .filter(|p| p.text.contains(title.as_str()))
                .count();
        let fb = f
            .facebook
            .posts()
            .iter()
            .filter(|p| p.message.contains(title.as_str()))
            .count();
        let hook = f
            .hook
            .received()
            .iter()
            .filter(|r| r.json()["title"] == title.as_str())
            .count();
        for (c, n) in [("x", x), ("facebook", fb), ("webhook.cms", hook)] {
            assert!(n >= 1, "{title} lost on {c}");
            assert!(
                n == 1 || counted(c),
                "{title}: {n} on {c} with no extra attempt recorded: {v}"
            );
        }
        assert!(
            d.site_dir().join(format!("a/{id}.html")).exists(),
            "{title} lost on the website"
        );
    }
    let mut mail: std::collections::HashMap<(String, String), usize> = Default::default();
    for m in f.smtp.messages() {
        let parsed = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
        *mail
            .entry((
                m.rcpt_to[0].clone(),
                parsed.subject().unwrap_or_default().to_string(),
            ))
            .or_default() += 1;
    }
    let recipients: std::collections::HashSet<&String> = mail.keys().map(|(r, _)| r).collect();
    assert_eq!(recipients.len(), 12);
    for (id, title) in &ids {
        let v = d.announcement(id).await;
        for r in &recipients {
            let n = mail
                .get(&((*r).clone(), title.clone()))
                .copied()
                .unwrap_or(0);
            assert!(n >= 1, "{title} lost for {r}");
            let s = channel(&v, "email");
            assert!(
                n == 1 || s["attempts"].as_i64() > s["total"].as_i64(),
                "{title}: {n} copies to {r} with no extra attempt recorded"
            );
        }
    }
}
on_both!(kills_at_random_points_lose_nothing);

/// Reach from every channel's fake, stored with its lineage and read back as JSON and as
/// the open-data CSV (parsed by a CSV reader); a figure entered by hand; the KPIs of the
/// fiscal year; the website's own page views. Then Facebook's API version expires: the
/// collector's failure is recorded and shown in the channel view, the other channels are
/// still collected, and the daemon carries on.
async fn reach_is_collected_with_its_lineage_and_kpis_computed(backend: Backend) {
    let f = fakes().await;
    f.x.x.set_followers(4_210);
    f.facebook.set_followers(5_350);
    f.facebook.set_page_metric("page_media_view", 1_200);
    f.line.set_followers(7_620, 5_848, 237);
    f.line.set_monthly_limit(None);
    let fy = {
        let now =
            chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap());
        if chrono::Datelike::month(&now) >= 4 {
            chrono::Datelike::year(&now)
        } else {
            chrono::Datelike::year(&now) - 1
        }
    };
    let kpis = format!(
        r#"
[[kpi]]
name = "SNS followers (X + Facebook)"
metric = "x.followers_count + facebook.followers_count"
baseline = 9560
target = 10000
fiscal_year = {fy}

[[kpi]]
name = "Posts by the policy department"
metric = "posts.tag:政策推進課"
baseline = 0
target = 50
fiscal_year = {fy}

[[kpi]]
name = "Website page views"
metric = "website.page_views"
target = 1000
fiscal_year = {fy}

[[kpi]]
name = "People who saw X posts"
metric = "x.impression_count"
baseline = 4597752
target = 5000000
fiscal_year = {fy}
"#
    );
    let creds = noroshi_x::fake::FakeCredentials::default();
    let d = Daemon::builder(backend)
        .config(&(all_channels_config(&f) + &kpis))
        .env("IT_LINE_TOKEN", LINE_TOKEN)
        .env("IT_X_CONSUMER_SECRET", &creds.consumer_secret)
        .env("IT_X_ACCESS_SECRET", &creds.access_token_secret)
        .env("IT_FB_TOKEN", FB_TOKEN)
        .env("IT_HOOK_SECRET", HOOK_SECRET)
        .start()
        .await;
    d.add_subscribers(3, "resident").await;
    let mut tagged = notice();
    tagged["tags"] = serde_json::json!(["政策推進課"]);
    let id = d.submit(tagged.clone()).await;
    let a = d.wait_status(&id, &["sent"], Duration::from_secs(60)).await;
    let post = channel(&a, "x")["remote_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    f.x.x.set_impressions(&post, 1_234);
    let mut drill = tagged;
    drill["exercise"] = serde_json::json!(true);
    let drill_id = d.submit(drill).await;
    d.wait_status(&drill_id, &["sent"], Duration::from_secs(60))
        .await;
    for _ in 0..3 {
        let r = d
            .http
            .get(format!("{}/site/index.html", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let (status, collected) = d
        .post("/api/v1/reach/collect", ADMIN, serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{collected}");
    let (_, samples) = d.get("/api/v1/reach").await;
    assert!(samples.is_array(), "{samples}\n{}", d.logs());
    let has = |channel: &str, metric: &str, value: f64| {
        samples.as_array().unwrap().iter().any(|s| {
            s["channel"] == channel && s["metric"] == metric && s["value"].as_f64() == Some(value)
        })
    };
    assert!(has("x", "followers_count", 4210.0), "{samples}");
    assert!(has("facebook", "followers_count", 5350.0), "{samples}");
    assert!(has("line", "followers", 7620.0), "{samples}");
    assert!(has("email", "active_subscribers", 3.0), "{samples}");
    assert!(has("website", "page_views", 3.0), "{samples}");
    let (status, v) = d
        .get("/api/v1/reach?announcement_id=no-such-announcement")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // One announcement's reach: the samples of its posts, by the ids the platforms gave them.
    let (status, own) = d.get(&format!("/api/v1/reach?announcement_id={id}")).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let own = own.as_array().unwrap_or_else(|| panic!("{own}"));
    let remote_ids: Vec<&serde_json::Value> = a["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["remote_ids"].as_array().into_iter().flatten())
        .collect();
    assert!(
        !own.is_empty() && own.iter().all(|s| remote_ids.contains(&&s["subject"])),
        "{own:?} (the announcement's posts: {remote_ids:?})"
    );
    assert!(
        own.iter()
            .any(|s| s["metric"] == "impression_count" && s["value"].as_f64() == Some(1234.0)),
        "{own:?}"
    );
    let fb = samples
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metric"] == "page_media_view")
        .unwrap();
    assert_eq!(fb["period"], "day");
    assert_eq!(fb["source"], "api");
    assert!(fb["api_version"].as_str().unwrap().starts_with('v'), "{fb}");
    // A figure no API gives.
    let (status, v) = d
        .post(
            "/api/v1/reach",
            ADMIN,
            serde_json::json!({"channel": "newsletter", "metric": "readership_percent", "value": 86.5, "period": "fiscal_year", "note": "広報すざか読者アンケート"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = d
        .post(
            "/api/v1/reach",
            ADMIN,
            serde_json::json!({"channel": "newsletter", "metric": "readership_percent", "value": 90, "period": "fiscal_year", "note": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["field"], "note");
    // The open-data CSV, read by a CSV reader.
    let csv = d
        .http
        .get(format!("{}/api/v1/reach", d.base))
        .bearer_auth(ADMIN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut reader = csv_reader(&text);
    assert_eq!(
        reader.remove(0),
        [
            "date",
            "channel",
            "metric",
            "subject",
            "period",
            "value",
            "source",
            "api_version",
            "collected_at",
            "note"
        ]
    );
    assert!(reader.iter().all(|r| r.len() == 10), "{text}");
    let survey = reader
        .iter()
        .find(|r| r[2] == "readership_percent")
        .expect("the manual figure");
    assert_eq!(
        (survey[5].as_str(), survey[6].as_str(), survey[9].as_str()),
        ("86.5", "manual", "広報すざか読者アンケート")
    );
    assert!(reader
        .iter()
        .all(|r| chrono::NaiveDate::parse_from_str(&r[0], "%Y-%m-%d").is_ok()));
    // KPIs of the fiscal year, with lineage; the drill is not counted.
    let (_, kpi) = d.get("/api/v1/kpi").await;
    let sns = &kpi[0];
    assert_eq!(sns["value"].as_f64(), Some(9560.0), "{kpi}");
    assert_eq!(sns["progress"].as_f64(), Some(0.0));
    assert_eq!(sns["lineage"].as_array().unwrap().len(), 2);
    assert_eq!(
        kpi[1]["value"].as_f64(),
        Some(1.0),
        "one live tagged post, the drill excluded: {kpi}"
    );
    assert_eq!(kpi[2]["value"].as_f64(), Some(3.0), "{kpi}");
    assert_eq!(
        kpi[3]["value"].as_f64(),
        Some(1234.0),
        "per-post views summed: {kpi}"
    );
    // Facebook's version expires: recorded, shown, the others still collected.
    f.facebook.expire_version("v25.0");
    f.x.x.set_followers(4_300);
    let (_, collected) = d
        .post("/api/v1/reach/collect", ADMIN, serde_json::json!({}))
        .await;
    let fb = collected
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "facebook")
        .unwrap();
    assert!(fb["error"].as_str().is_some(), "{collected}");
    let (_, samples) = d
        .get("/api/v1/reach?channel=x&metric=followers_count")
        .await;
    assert!(samples
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["value"].as_f64() == Some(4300.0)));
    let (_, channels) = d.get("/api/v1/channels").await;
    let fbc = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "facebook")
        .unwrap();
    assert!(
        fbc["platform"]["reach"]["error"].as_str().is_some(),
        "{fbc}"
    );
    assert_eq!(fbc["state"], "degraded", "{fbc}");
    let (status, _) = d.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
}
on_both!(reach_is_collected_with_its_lineage_and_kpis_computed);
