//! Bad input: every refusal is problem+json naming the field, and nothing is stored.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both;

async fn refusals_name_the_field_and_store_nothing(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"title": "", "body": "本文"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (
            json!({"title": "   ", "body": "本文"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (
            json!({"body": "本文"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (
            json!({"title": "件名"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "body",
        ),
        (
            json!({"title": "件名", "body": "本文", "channels": ["fax"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "channels[0]",
        ),
        (
            json!({"title": "件名", "body": "本文", "channels": ["line"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "channels[0]",
        ),
        (
            json!({"title": "件名", "body": "本文", "channels": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "channels",
        ),
        (
            json!({"title": "件名", "body": "本文", "channels": ["website", "website"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "channels[1]",
        ),
        (
            json!({"title": "件名", "body": "本文", "priority": "highest"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority",
        ),
        (
            json!({"title": "件名", "body": "本文", "priority": "disaster"}),
            StatusCode::FORBIDDEN,
            "priority",
        ),
        (
            json!({"title": "件名", "body": "本文", "link": "javascript:alert(1)"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "link",
        ),
        (
            json!({"title": "件名", "body": "本文", "link": "not a url"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "link",
        ),
        (
            json!({"title": "件名", "body": "本文", "scheduled_at": "tomorrow 9am"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scheduled_at",
        ),
        (
            json!({"title": "件名", "body": "本文", "scheduled_at": "2026-12-01T09:00:00"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scheduled_at",
        ),
        (
            json!({"title": "件名", "body": "本文", "overrides": {"x": {"text": "x"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "overrides.x",
        ),
        (
            json!({"title": "件名", "body": "本文", "overrides": {"website": {"text": ""}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "overrides.website.text",
        ),
        (
            json!({"title": "件名", "body": "本文", "lang": "日本語"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lang",
        ),
        (
            json!({"title": "件名", "body": "本文", "tags": [""]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags[0]",
        ),
        (
            json!({"title": "件名", "body": "本文", "template": "shelter_open"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "template",
        ),
        (
            json!({"title": "件名", "body": "本文", "images": ["http://insecure.example.jp/a.png"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "images[0]",
        ),
        (
            json!({"title": "件名", "body": "本文", "variants": {"en": {"title": "", "body": "b"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "variants.en.title",
        ),
        (
            json!({"title": "件名", "body": "本文", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            json!({"title": 42, "body": "本文"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
        (
            json!({"title": "a".repeat(201), "body": "本文"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "title",
        ),
    ];
    for (body, status, field) in cases {
        let resp = d
            .http
            .post(format!("{}/api/v1/announcements", d.base))
            .bearer_auth(STAFF)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["field"], field, "{body} → {p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(field.split('[').next().unwrap().split('.').next().unwrap()),
            "detail names the field: {p}"
        );
        assert_eq!(p["status"], status.as_u16());
    }
    // Not JSON at all.
    let r = d
        .http
        .post(format!("{}/api/v1/announcements", d.base))
        .bearer_auth(STAFF)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Over the body limit (1 MiB): 413 problem.
    let big = json!({"title": "件名", "body": "あ".repeat(400_000)});
    let r = d
        .http
        .post(format!("{}/api/v1/announcements", d.base))
        .bearer_auth(STAFF)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // No token, bad token, a viewer posting.
    let (s, p) = d
        .request(
            reqwest::Method::POST,
            "/api/v1/announcements",
            None,
            Some(notice()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");
    let r = d
        .http
        .post(format!("{}/api/v1/announcements", d.base))
        .json(&notice())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer",
        "401 says which scheme"
    );
    let (s, _) = d
        .request(
            reqwest::Method::POST,
            "/api/v1/announcements",
            Some("nope"),
            Some(notice()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, p) = d
        .request(
            reqwest::Method::POST,
            "/api/v1/announcements",
            Some(VIEWER),
            Some(notice()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{p}");
    let (s, _) = d
        .request(
            reqwest::Method::GET,
            "/api/v1/announcements",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "viewers read");
    // Nothing of all that was stored.
    assert_eq!(d.count_announcements().await, 0);
    assert!(
        !d.site_dir().join("a").exists()
            || std::fs::read_dir(d.site_dir().join("a")).unwrap().count() == 0
    );
    // The disaster role may send disaster priority.
    let (s, v) = d
        .post(
            "/api/v1/announcements",
            DISASTER,
            json!({"title": "避難指示", "body": "避難", "priority": "disaster"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // Unknown announcement, bad list filters.
    let (s, _) = d.get("/api/v1/announcements/does-not-exist").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, p) = d.get("/api/v1/announcements?status=done").await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("status"))
    );
    let (s, p) = d.get("/api/v1/announcements?limit=0").await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
}
on_both!(refusals_name_the_field_and_store_nothing);

async fn subscriber_refusals_store_nothing(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let (s, p) = d
        .post(
            "/api/v1/subscribers",
            ADMIN,
            json!({"email": "not-an-address"}),
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email")),
        "{p}"
    );
    let (s, _) = d
        .post(
            "/api/v1/subscribers",
            STAFF,
            json!({"email": "a@example.jp"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = d
        .post(
            "/api/v1/subscribers",
            ADMIN,
            json!({"email": "taro@example.jp", "lang": "en", "topics": ["防災"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, p) = d
        .post(
            "/api/v1/subscribers",
            ADMIN,
            json!({"email": "taro@example.jp"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    let (s, p) = d
        .post(
            "/api/v1/subscribers",
            ADMIN,
            json!({"email": "Taro@Example.JP"}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "one subscription per address whatever its case: {p}"
    );
    // A CSV with one bad row refuses the whole file, naming the line.
    let csv =
        "email,lang,topics\nhanako@example.jp,ja,防災\nbroken address,ja,\njiro@example.jp,en,\n";
    let (s, p) = d.import("text/csv", csv).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p["field"].as_str().unwrap().starts_with("line 3"), "{p}");
    let (_, list) = d.get("/api/v1/subscribers").await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "nothing of the bad file was stored"
    );
    // The good file: new rows created, existing left alone.
    let csv = "email,lang,topics\nhanako@example.jp,ja,防災;子育て\ntaro@example.jp,ja,\n";
    let (_, v) = d.import("text/csv", csv).await;
    assert_eq!(
        (v["created"].as_u64(), v["existing"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let (s, _) = d.import("application/json", "[]").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Delete.
    let id = d.subscriber_id("hanako@example.jp").await;
    assert_eq!(d.delete_subscriber(id).await, StatusCode::NO_CONTENT);
    assert_eq!(d.delete_subscriber(id).await, StatusCode::NOT_FOUND);
    let (_, list) = d.get("/api/v1/subscribers").await;
    assert_eq!(list["active"], 1);
}
on_both!(subscriber_refusals_store_nothing);

/// An import is written a turn of rows at a time; addresses already subscribed (in any
/// case) are counted as existing in whichever turn they fall, and left as they are.
async fn an_import_counts_existing_addresses_in_every_turn(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    d.add_subscribers(500, "resident").await;
    let mut csv = String::from("email,lang,topics\n");
    for i in 0..600 {
        if i < 500 {
            csv.push_str(&format!("Resident{i}@Example.JP,en,\n"));
        } else {
            csv.push_str(&format!("resident{i}@example.jp,ja,\n"));
        }
    }
    let (s, v) = d.import("text/csv", &csv).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["created"].as_u64(), v["existing"].as_u64()),
        (Some(100), Some(500)),
        "{v}"
    );
    let (_, list) = d.get("/api/v1/subscribers").await;
    assert_eq!(list["active"], 600, "{list}");
}
on_both!(an_import_counts_existing_addresses_in_every_turn);

async fn openapi_and_health(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let (s, doc) = d
        .request(reqwest::Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/announcements",
        "/api/v1/announcements/{id}",
        "/api/v1/preview",
        "/api/v1/channels",
        "/api/v1/subscribers/import",
        "/api/v1/cap",
        "/api/v1/alerts/active",
        "/unsubscribe",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"]["Submission"]["properties"]["title"].is_object());
    let (s, _) = d
        .request(reqwest::Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = d.request(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    // `/metrics` is served (its figures are checked in `observe.rs`).
    let (s, p) = d
        .request(reqwest::Method::GET, "/metrics", Some(ADMIN), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
}
on_both!(openapi_and_health);

async fn listing_filters_and_pages_newest_first(backend: Backend) {
    let smtp = noroshi_email::fake::FakeSmtp::start(Default::default()).await;
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .start()
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, v) = d
            .post(
                "/api/v1/announcements",
                if i == 3 { DISASTER } else { STAFF },
                json!({
                    "title": format!("お知らせ {i}"), "body": "本文",
                    "priority": if i == 3 { "disaster" } else { "normal" },
                    "channels": if i % 2 == 0 { json!(["website"]) } else { json!(["website", "email"]) },
                }),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        d.wait_status(id, &["sent"], std::time::Duration::from_secs(30))
            .await;
    }
    // Pages of two, newest first, until the cursor runs out.
    let mut seen = Vec::new();
    let mut path = "/api/v1/announcements?limit=2".to_string();
    loop {
        let (s, page) = d
            .request(reqwest::Method::GET, &path, Some(VIEWER), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/announcements?limit=2&cursor={c}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let count = |path: &'static str| {
        let d = &d;
        async move {
            let (_, v) = d.get(path).await;
            v["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("/api/v1/announcements?priority=disaster").await, 1);
    assert_eq!(count("/api/v1/announcements?channel=email").await, 2);
    assert_eq!(count("/api/v1/announcements?status=sent").await, 5);
    assert_eq!(count("/api/v1/announcements?status=failed").await, 0);
    let since = chrono::Utc::now().to_rfc3339();
    let path = format!("/api/v1/announcements?since={}", since.replace('+', "%2B"));
    let (_, v) = d.get(&path).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
}
on_both!(listing_filters_and_pages_newest_first);
