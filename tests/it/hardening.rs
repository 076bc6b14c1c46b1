//! Issue 12 (hardening): each defect's test, written before its fix.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both;

const FB_TOKEN: &str = "it-facebook-page-token-77aa";
const FB_PAGE: &str = "908070605040302";

/// A.7: NUL and other control characters in any text field are refused with 422 naming
/// the field, before anything is stored; path and query values with them get a 4xx.
async fn control_characters_are_refused_and_nothing_is_stored(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"title": "件名\u{0}", "body": "本文"}), "title"),
        (json!({"title": "件名", "body": "本文\u{0}続き"}), "body"),
        (json!({"title": "件名", "body": "ベル\u{7}"}), "body"),
        (
            json!({"title": "件名", "body": "本文", "tags": ["防災\u{1b}"]}),
            "tags[0]",
        ),
        (
            json!({"title": "件名", "body": "本文", "overrides": {"website": {"text": "a\u{0}"}}}),
            "overrides.website.text",
        ),
        (
            json!({"title": "件名", "body": "本文", "variants": {"en": {"title": "t", "body": "b\u{85}"}}}),
            "variants.en.body",
        ),
        (
            json!({"title": "件名", "body": "本文", "link": "https://city.example.jp/\u{0}"}),
            "link",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = d.post("/api/v1/announcements", STAFF, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {v}");
        assert_eq!(v["field"], field, "{body} → {v}");
    }
    let (status, v) = d
        .post(
            "/api/v1/subscribers",
            ADMIN,
            json!({"email": "taro\u{0}@example.jp"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "email", "{v}");
    assert_eq!(d.count_announcements().await, 0, "nothing was stored");
    let (_, subs) = d.get("/api/v1/subscribers").await;
    assert_eq!(subs["items"].as_array().unwrap().len(), 0, "{subs}");

    // Path and query values: a 4xx, never a 500.
    for (method, path) in [
        (reqwest::Method::GET, "/unsubscribe?t=%00"),
        (reqwest::Method::POST, "/unsubscribe?t=%00"),
        (reqwest::Method::GET, "/unsubscribe?t=ab%01cd"),
        (reqwest::Method::GET, "/api/v1/announcements/%00"),
        (reqwest::Method::POST, "/api/v1/announcements/x%00y/cancel"),
        (reqwest::Method::GET, "/api/v1/announcements?channel=%00"),
        (
            reqwest::Method::GET,
            "/api/v1/deliveries?announcement_id=%00",
        ),
    ] {
        let r = d
            .http
            .request(method.clone(), format!("{}{path}", d.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error(),
            "{method} {path} → {}",
            r.status()
        );
    }
    // Line breaks and tabs are text, not control characters to refuse.
    d.submit(json!({"title": "件名", "body": "一行目\n\t二行目\r\n三行目"}))
        .await;
    assert_eq!(d.count_announcements().await, 1);
}
on_both!(control_characters_are_refused_and_nothing_is_stored);

/// A.8: only the disaster desk (or an admin) may cancel a disaster announcement.
async fn cancelling_a_disaster_alert_needs_the_disaster_role(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, v) = d
        .post(
            "/api/v1/announcements",
            DISASTER,
            json!({"title": "避難指示", "body": "直ちに避難してください。", "priority": "disaster", "scheduled_at": later}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/announcements/{id}/cancel");
    let (status, v) = d.post(&path, STAFF, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(d.announcement(&id).await["status"], "scheduled");
    let (status, v) = d.post(&path, DISASTER, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    // Staff still cancel their own normal announcements.
    let (status, v) = d
        .post(
            "/api/v1/announcements",
            STAFF,
            json!({"title": "お知らせ", "body": "本文", "scheduled_at": later}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = d
        .post(
            &format!("/api/v1/announcements/{}/cancel", v["id"].as_str().unwrap()),
            STAFF,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}
on_both!(cancelling_a_disaster_alert_needs_the_disaster_role);

/// A.11: `/site/` serves no dot-file, temporary or lock file however the path is spelled.
async fn site_hides_state_files_however_spelled(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let id = d.submit(notice()).await;
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    let site = d.site_dir();
    std::fs::write(site.join(".noroshi-tmp-abc"), "half-written").unwrap();
    std::fs::write(site.join("page.html.tmp"), "half-written").unwrap();
    std::fs::write(site.join("index.html~"), "editor backup").unwrap();
    assert!(site.join(".lock").exists() || site.join(".entries.json").exists());
    let ok = d
        .http
        .get(format!("{}/site/index.html", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    for path in [
        "/site/.lock",
        "/site/%2Elock",
        "/site/%2elock",
        "/site/./.lock",
        "/site/.%6Cock",
        "/site/%2Eentries.json",
        "/site/x/../.entries.json",
        "/site/%2E%6Eoroshi-tmp-abc",
        "/site/page.html.tmp",
        "/site/index.html~",
        "/site/%2e/%2Elock",
    ] {
        let r = d
            .http
            .get(format!("{}{path}", d.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status.is_client_error() && !text.contains("half-written") && !text.contains("editor"),
            "{path} → {status}: {text}"
        );
    }
}
on_both!(site_hides_state_files_however_spelled);

/// A.1: a failed reconcile leaves the delivery uncertain: the next attempt checks again
/// instead of posting a second time.
async fn a_failed_reconcile_never_clears_uncertain(backend: Backend) {
    use noroshi_channel_core::fake::ScriptedResponse;
    let fb = noroshi_facebook::fake::start(FB_PAGE, FB_TOKEN).await;
    let d = Daemon::builder(backend)
        .config(&format!(
            r#"
[channels.facebook]
enabled = true
graph_base = "{fb}"
page_id = "{FB_PAGE}"
page_access_token_env = "IT_FB_TOKEN"
"#,
            fb = fb.base_url()
        ))
        .env("IT_FB_TOKEN", FB_TOKEN)
        .env("NOROSHI__SERVER__PLATFORM_TIMEOUT_MS", "600")
        .start()
        .await;
    // The post is applied but its answer comes too late; the first check then fails.
    fb.script(ScriptedResponse {
        status: 200,
        body: "{}".into(),
        delay_ms: 1_500,
        path_suffix: Some("/feed".into()),
        after_applying: true,
        ..Default::default()
    });
    fb.script(ScriptedResponse {
        status: 503,
        body: r#"{"error":{"message":"Service temporarily unavailable","type":"OAuthException","code":2,"is_transient":true}}"#.into(),
        path_suffix: Some("/posts".into()),
        ..Default::default()
    });
    let id = d
        .submit(json!({"title": "台風接近", "body": "明日は休校です。", "channels": ["facebook"]}))
        .await;
    d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;
    assert_eq!(fb.posts().len(), 1, "exactly one post on the Page");
    let feed_posts = fb
        .state()
        .requests_to("/feed")
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(feed_posts, 1, "no second POST after the failed check");
    let (_, log) = d
        .get(&format!("/api/v1/deliveries?announcement_id={id}"))
        .await;
    let outcomes: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.first(), Some(&"uncertain"), "{log}");
    assert_eq!(outcomes.last(), Some(&"reconciled"), "{log}");
    assert!(
        !outcomes.contains(&"sent") && !outcomes.contains(&"already_sent"),
        "{log}"
    );
}
on_both!(a_failed_reconcile_never_clears_uncertain);
