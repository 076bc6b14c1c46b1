//! Accept once, deliver everywhere: website and email end to end, retries, pausing,
//! cancelling, idempotency, crash safety, no secrets in logs.

use std::collections::HashSet;
use std::time::Duration;

use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::on_both;

/// A daemon whose email channel sends to a fake SMTP server that takes `delay_ms` per
/// message, with `concurrency` workers, and `subscribers` subscribers.
async fn email_fan_out(
    backend: Backend,
    subscribers: usize,
    delay_ms: u64,
    concurrency: usize,
) -> (FakeSmtp, Daemon) {
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_millis(delay_ms));
    let config = email_config(smtp.port())
        .replace("concurrency = 8", &format!("concurrency = {concurrency}"));
    let d = Daemon::builder(backend).config(&config).start().await;
    d.add_subscribers(subscribers, "resident").await;
    (smtp, d)
}

async fn website_and_email_end_to_end(backend: Backend) {
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .start()
        .await;
    d.add_subscribers(3, "resident").await;
    let id = d.submit(notice()).await;
    let v = d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;

    // Website: the page, index and both feeds, served under /site/.
    let site = channel(&v, "website");
    assert_eq!(site["status"], "sent");
    let page_url = site["remote_ids"][0].as_str().unwrap();
    assert!(page_url.ends_with(&format!("a/{id}.html")), "{page_url}");
    let page = std::fs::read_to_string(d.site_dir().join(format!("a/{id}.html"))).unwrap();
    assert!(page.contains("<html lang=\"ja\""));
    assert_eq!(page.matches("<h1").count(), 1);
    assert!(page.contains("避難所開設のお知らせ"));
    for (path, ctype) in [
        (format!("/site/a/{id}.html"), "text/html"),
        ("/site/".to_string(), "text/html"),
        ("/site/feed.atom".to_string(), "application/atom+xml"),
        ("/site/feed.rss".to_string(), "application/rss+xml"),
    ] {
        let r = d
            .http
            .get(format!("{}{}", d.base, path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(ctype), "{path}: {ct}");
        assert!(
            r.text().await.unwrap().contains(&id) || path.ends_with(".html"),
            "{path}"
        );
    }
    // The entries index is the adapter's private state, not a page.
    let r = d
        .http
        .get(format!("{}/site/.entries.json", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Email: one message per subscriber, each with a personal one-click unsubscribe link.
    assert!(smtp.wait_for(3, Duration::from_secs(10)).await);
    let mail = channel(&v, "email");
    assert_eq!(
        (
            mail["total"].as_i64(),
            mail["sent"].as_i64(),
            mail["failed"].as_i64()
        ),
        (Some(3), Some(3), Some(0)),
        "{mail}"
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 3);
    let mut recipients = HashSet::new();
    let mut unsubscribe_links = HashSet::new();
    for m in &messages {
        assert_eq!(m.rcpt_to.len(), 1);
        recipients.insert(m.rcpt_to[0].clone());
        let parsed = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
        assert_eq!(parsed.subject(), Some("避難所開設のお知らせ"));
        let text = parsed.body_text(0).unwrap();
        assert!(
            text.contains("本日15時、須坂市役所に避難所を開設しました。"),
            "{text}"
        );
        let raw = String::from_utf8_lossy(&m.raw);
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{raw}"
        );
        let link = raw
            .split("<https://noroshi.city.example.jp/unsubscribe?t=")
            .nth(1)
            .and_then(|s| s.split('>').next())
            .expect("https unsubscribe link")
            .to_string();
        unsubscribe_links.insert(link);
    }
    assert_eq!(recipients.len(), 3);
    assert_eq!(unsubscribe_links.len(), 3, "one token per subscriber");

    // The delivery log has every attempt.
    let (_, log) = d
        .get(&format!("/api/v1/deliveries?announcement_id={id}"))
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{log}");
    assert!(items.iter().all(|i| i["outcome"] == "sent"));

    // Unsubscribe: GET changes nothing, POST (RFC 8058) does, and the next mail skips them.
    let token = unsubscribe_links.iter().next().unwrap().clone();
    let r = d
        .http
        .get(format!("{}/unsubscribe?t={token}", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, subs) = d.get("/api/v1/subscribers").await;
    assert_eq!(subs["active"], 3);
    let r = d
        .http
        .post(format!("{}/unsubscribe?t={token}", d.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "one-click answers 200, never a redirect"
    );
    let r = d
        .http
        .post(format!("{}/unsubscribe?t={token}", d.base))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "idempotent");
    let (_, subs) = d.get("/api/v1/subscribers").await;
    assert_eq!(subs["active"], 2);
    let id2 = d
        .submit(json!({"title": "二通目", "body": "本文", "channels": ["email"]}))
        .await;
    d.wait_status(&id2, &["sent"], Duration::from_secs(30))
        .await;
    assert!(smtp.wait_for(5, Duration::from_secs(10)).await);
    assert_eq!(
        smtp.message_count(),
        5,
        "the unsubscribed resident got nothing"
    );
}
on_both!(website_and_email_end_to_end);

async fn idempotency_key_gives_one_announcement(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let send = |body: serde_json::Value| {
        let d = &d;
        async move {
            d.submit_keyed(STAFF, "press-release-2026-12-01", &body)
                .await
        }
    };
    let (s1, a) = send(notice()).await;
    // Same JSON with other key order and spacing is the same body.
    let reordered: serde_json::Value = serde_json::from_str(&format!(
        "{{\"link\":{},\"body\":{},\"title\":{}}}",
        notice()["link"],
        notice()["body"],
        notice()["title"]
    ))
    .unwrap();
    let (s2, b) = send(reordered).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(a["id"], b["id"]);
    let mut other = notice();
    other["title"] = json!("別の件名");
    let (s3, c) = send(other).await;
    assert_eq!(s3, StatusCode::CONFLICT, "{c}");
    assert_eq!(c["field"], "Idempotency-Key");
    d.wait_status(
        a["id"].as_str().unwrap(),
        &["sent"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(d.count_announcements().await, 1);
    let entries = std::fs::read_dir(d.site_dir().join("a")).unwrap().count();
    assert_eq!(entries, 1, "one page, one fan-out");
}
on_both!(idempotency_key_gives_one_announcement);

async fn retries_then_per_recipient_failure(backend: Backend) {
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .start()
        .await;
    let mut csv = String::from("email,lang,topics\n");
    for a in [
        "ok1@example.jp",
        "tempfail-once@example.jp",
        "bounce-me@example.jp",
        "ok2@example.jp",
    ] {
        csv.push_str(&format!("{a},ja,\n"));
    }
    let (s, v) = d.import("text/csv", &csv).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // tempfail-* answers 451 every time: retried up to max_attempts (4), then failed.
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    let v = d
        .wait_status(&id, &["partially_failed"], Duration::from_secs(60))
        .await;
    let mail = channel(&v, "email");
    assert_eq!(mail["total"], 4, "{mail}");
    assert_eq!(mail["sent"], 2, "{mail}");
    assert_eq!(mail["failed"], 2, "{mail}");
    assert_eq!(mail["status"], "failed");
    let (_, log) = d
        .get(&format!(
            "/api/v1/deliveries?announcement_id={id}&outcome=transient"
        ))
        .await;
    let transient = log["items"].as_array().unwrap();
    assert_eq!(transient.len(), 4, "451 retried up to max_attempts: {log}");
    assert!(
        transient[0]["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{log}"
    );
    let (_, log) = d
        .get(&format!(
            "/api/v1/deliveries?announcement_id={id}&outcome=permanent"
        ))
        .await;
    let perm = log["items"].as_array().unwrap();
    assert_eq!(
        perm.len(),
        1,
        "550 fails at once, for that recipient only: {log}"
    );
    assert_eq!(perm[0]["status_code"], 550);
    // An admin can give failed deliveries another round.
    let (s, _) = d
        .post(
            &format!("/api/v1/announcements/{id}/retry"),
            ADMIN,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = d
        .post(
            &format!("/api/v1/announcements/{id}/retry"),
            STAFF,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    d.wait_status(&id, &["partially_failed"], Duration::from_secs(60))
        .await;
}
on_both!(retries_then_per_recipient_failure);

/// A copy whose subscriber leaves while it waits for its retry is skipped, never sent: each
/// claim reads the copy's recipient again, and only an active one.
async fn a_copy_whose_subscriber_left_is_skipped(backend: Backend) {
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .start()
        .await;
    let csv = "email,lang,topics\nstays@example.jp,ja,\ntempfail-leaves@example.jp,en,\n";
    let (s, v) = d.import("text/csv", csv).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    // Its first attempt is refused (451): the copy waits for a retry.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, log) = d
            .get(&format!(
                "/api/v1/deliveries?announcement_id={id}&outcome=transient"
            ))
            .await;
        if !log["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refused attempt: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leaver = d.subscriber_id("tempfail-leaves@example.jp").await;
    assert_eq!(d.delete_subscriber(leaver).await, StatusCode::NO_CONTENT);
    let v = d.wait_status(&id, &["sent"], Duration::from_secs(60)).await;
    let mail = channel(&v, "email");
    assert_eq!(mail["total"], 2, "{mail}");
    assert_eq!(mail["sent"], 1, "{mail}");
    let (_, log) = d
        .get(&format!(
            "/api/v1/deliveries?announcement_id={id}&outcome=cancelled"
        ))
        .await;
    let skipped = log["items"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{log}");
    assert_eq!(
        skipped[0]["error"], "the subscriber unsubscribed or was removed",
        "{log}"
    );
    // The one who stayed got the message, at the address the claim read with it.
    let received = smtp.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, vec!["stays@example.jp".to_string()]);
}
on_both!(a_copy_whose_subscriber_left_is_skipped);

/// After an import, a fan-out reads its subscribers batch by batch along the index, in id
/// order: never every active subscriber after the cursor and a sort (what PostgreSQL plans
/// for a table it has no statistics of; seen at 17 ms for a batch of 500 with 38,000
/// subscribers, and for most batches of that fan-out).
async fn a_fan_out_reads_subscribers_along_the_index_after_an_import(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    d.add_subscribers(3_000, "resident").await;
    let read = noroshi::queue::expand_batch_read("0", "500");
    let plan: Vec<String> = {
        use sqlx::Connection;
        let url = d.database_url();
        if backend == Backend::Sqlite {
            use sqlx::Row;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(&format!("EXPLAIN QUERY PLAN {read}"))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect()
        } else {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, String>(&format!("EXPLAIN {read}"))
                .fetch_all(&mut c)
                .await
                .unwrap()
        }
    };
    let plan = plan.join("\n");
    assert!(plan.contains("subscribers"), "{plan}");
    for walk_all in ["Sort", "Bitmap", "TEMP B-TREE", "SCAN subscribers"] {
        assert!(
            !plan.contains(walk_all),
            "the batch read plans as {walk_all}:\n{plan}"
        );
    }
}
on_both!(a_fan_out_reads_subscribers_along_the_index_after_an_import);

async fn auth_failure_pauses_the_channel_until_resumed(backend: Backend) {
    let smtp = FakeSmtp::start(FakeSmtpOptions {
        credentials: Some(("noroshi".into(), "right-password-3f9a".into())),
        ..Default::default()
    })
    .await;
    let password_file = "smtp-password";
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()).replace(
            "pool_size = 4",
            &format!("pool_size = 4\nusername = \"noroshi\"\npassword_file = \"{{dir}}/{password_file}\""),
        ))
        .start_with_file(password_file, "wrong-password-SECRET-77e1\n")
        .await;
    d.add_subscribers(2, "r").await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    // The 535 pauses the channel: visible, not retried forever, nothing lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let email = loop {
        let (_, chans) = d.get("/api/v1/channels").await;
        let email = chans
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "email")
            .unwrap()
            .clone();
        if email["state"] == "paused" {
            break email;
        }
        assert!(std::time::Instant::now() < deadline, "not paused: {email}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        email["reason"].as_str().unwrap().contains("535"),
        "the reason names the refusal: {email}"
    );
    // `noroshi status` shows it and exits 1, for a monitoring check.
    let base = d.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_noroshi"))
            .args(["status", "--server", &base, "--token", VIEWER])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("email") && l.contains("paused")),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = d.announcement(&id).await;
    assert_eq!(
        channel(&v, "email")["failed"],
        0,
        "an auth failure is not the delivery's fault"
    );
    assert_ne!(v["status"], "sent");
    let (_, log) = d
        .get(&format!(
            "/api/v1/deliveries?announcement_id={id}&outcome=auth"
        ))
        .await;
    let auth_attempts = log["items"].as_array().unwrap().len();
    // The start-up healthcheck may have paused it before any delivery was tried.
    assert!(
        auth_attempts <= 8,
        "paused quickly, no retry storm: {auth_attempts}"
    );
    // Fix the credential, then resume: everything goes out.
    smtp.clear();
    std::fs::write(d.dir.path().join(password_file), "right-password-3f9a\n").unwrap();
    // The daemon reads secrets at start: an operator fixes the file and restarts, then resumes.
    let mut d = d;
    d.restart().await;
    let (s, _) = d
        .post("/api/v1/channels/email/resume", STAFF, json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "resume is for admins");
    let (s, _) = d
        .post("/api/v1/channels/email/resume", ADMIN, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;
    assert!(smtp.wait_for(2, Duration::from_secs(10)).await);
    // No secret in the logs, ever.
    let logs = d.logs();
    for secret in [
        "wrong-password-SECRET-77e1",
        "right-password-3f9a",
        ADMIN,
        STAFF,
        DISASTER,
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret} leaked into the log"
        );
    }
}
on_both!(auth_failure_pauses_the_channel_until_resumed);

async fn cancelled_scheduled_announcement_never_goes_out(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let mut body = notice();
    body["scheduled_at"] = json!(at);
    let (s, v) = d.post("/api/v1/announcements", STAFF, body).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["status"], "scheduled");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = d
        .post(
            &format!("/api/v1/announcements/{id}/cancel"),
            STAFF,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let v = d.announcement(&id).await;
    assert_eq!(v["status"], "cancelled");
    assert_eq!(channel(&v, "website")["status"], "cancelled");
    assert!(!d.site_dir().join(format!("a/{id}.html")).exists());
    // A scheduled one that is not cancelled goes out on time.
    let mut body = notice();
    body["scheduled_at"] = json!((chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339());
    let id = d.submit(body).await;
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    // Nothing is left to cancel once everything went out: the status stays true.
    let (s, p) = d
        .post(
            &format!("/api/v1/announcements/{id}/cancel"),
            STAFF,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert_eq!(d.announcement(&id).await["status"], "sent");
}
on_both!(cancelled_scheduled_announcement_never_goes_out);

/// SIGKILL the daemon in the middle of a fan-out to 1,000 subscribers; after a restart
/// every subscriber has the message.
async fn crash_during_fan_out_loses_nothing(backend: Backend) {
    let (smtp, mut d) = email_fan_out(backend, 1000, 3, 8).await;
    let id = d.submit(json!({"title": "断水のお知らせ", "body": "明日9時から断水します。", "channels": ["email", "website"]})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while smtp.message_count() < 150 {
        assert!(
            std::time::Instant::now() < deadline,
            "fan-out did not start:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.kill9();
    let at_kill = smtp.message_count();
    assert!(
        at_kill < 1000,
        "the kill came too late to prove anything ({at_kill})"
    );
    d.restart().await;
    let v = d
        .wait_status(&id, &["sent"], Duration::from_secs(120))
        .await;
    let messages = smtp.messages();
    let unique: HashSet<String> = messages.iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(unique.len(), 1000, "every subscriber received the message");
    let duplicates = messages.len() - unique.len();
    eprintln!("crash test: killed at {at_kill}, {duplicates} duplicate(s) after restart (in flight at the kill)");
    assert!(
        duplicates <= 64,
        "duplicates are bounded by the copies in flight: {duplicates}"
    );
    assert_eq!(channel(&v, "email")["sent"], 1000);
    assert!(d.site_dir().join(format!("a/{id}.html")).exists());
}
on_both!(crash_during_fan_out_loses_nothing);

/// A disaster alert does not wait behind a normal backlog on the same channel.
async fn disaster_lane_overtakes_a_backlog(backend: Backend) {
    let (smtp, d) = email_fan_out(backend, 200, 40, 2).await;
    let normal = d
        .submit(json!({"title": "イベントのお知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    while smtp.message_count() < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v) = d.post("/api/v1/announcements", DISASTER,
        json!({"title": "避難指示", "body": "直ちに避難してください。", "priority": "disaster", "channels": ["website"]})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let alert = v["id"].as_str().unwrap().to_string();
    d.wait_status(&alert, &["sent"], Duration::from_secs(10))
        .await;
    let backlog = d.announcement(&normal).await;
    assert_eq!(
        backlog["status"], "sending",
        "the alert finished while the backlog was still sending"
    );
    // And on the same channel: the disaster copies overtake the normal ones.
    let (s, v) = d.post("/api/v1/announcements", DISASTER,
        json!({"title": "避難指示（緊急）", "body": "直ちに避難してください。", "priority": "disaster", "channels": ["email"]})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let alert = v["id"].as_str().unwrap().to_string();
    d.wait_status(&alert, &["sent"], Duration::from_secs(60))
        .await;
    let backlog = d.announcement(&normal).await;
    assert_eq!(
        backlog["status"], "sending",
        "200 disaster copies went out before the normal backlog ended: {backlog}"
    );
}
on_both!(disaster_lane_overtakes_a_backlog);

/// Cancelling while an email fan-out runs stops it: nothing is claimed after the answer
/// except what was already on the wire.
async fn cancel_stops_a_running_fan_out(backend: Backend) {
    let (smtp, d) = email_fan_out(backend, 400, 20, 2).await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    while smtp.message_count() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, v) = d
        .post(
            &format!("/api/v1/announcements/{id}/cancel"),
            STAFF,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let at_cancel = smtp.message_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = smtp.message_count();
    assert!(
        after <= at_cancel + 2,
        "only the copies on the wire may finish: {at_cancel} → {after}"
    );
    let v = d.announcement(&id).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    let mail = channel(&v, "email");
    assert!(mail["sent"].as_i64().unwrap() < 400, "{mail}");
    let (_, chans) = d.get("/api/v1/channels").await;
    let email = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "email")
        .unwrap();
    assert_eq!(
        email["queue"]["normal"], 0,
        "nothing of it is left queued: {email}"
    );
}
on_both!(cancel_stops_a_running_fan_out);

/// SIGTERM in the middle of a fan-out: the daemon stops taking work, exits cleanly, and what
/// it had not finished is taken up by the next start.
async fn sigterm_stops_cleanly_and_loses_nothing(backend: Backend) {
    let (smtp, mut d) = email_fan_out(backend, 300, 5, 8).await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    while smtp.message_count() < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = d.terminate().await;
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        d.logs()
    );
    assert!(d.logs().contains("Stopping"), "{}", d.logs());
    d.start_again().await;
    d.wait_status(&id, &["sent"], Duration::from_secs(60)).await;
    let unique: HashSet<String> = smtp
        .messages()
        .iter()
        .map(|m| m.rcpt_to[0].clone())
        .collect();
    assert_eq!(unique.len(), 300);
}
on_both!(sigterm_stops_cleanly_and_loses_nothing);

/// A fan-out is queued whole while every worker hangs on an SMTP server that does not
/// answer. The expansion used to hand its row back after each batch and wait to claim it
/// again; on PostgreSQL a claim skips a row that is locked at that moment (a lease renewal
/// or a reclaim that had just checked it holds it until its statement ends), so a send took
/// the freed worker, and with every worker hung the expansion waited for the server's
/// timeout: `noroshi-bench memory` stalled at 944,501 of 1,000,000 for 600 s. Here the test
/// holds that lock itself, right after each of the expansion's transactions.
/// An SMTP server that answers each message only after 120 s, and a daemon with two email
/// workers that wait for it (a longer timeout): every worker hangs on its first send.
async fn hanging_smtp(backend: Backend) -> (FakeSmtp, DaemonBuilder) {
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_secs(120));
    let config = email_config(smtp.port())
        .replace("concurrency = 8", "concurrency = 2")
        .replace("timeout_secs = 5", "timeout_secs = 300");
    let builder = Daemon::builder(backend).config(&config);
    (smtp, builder)
}

async fn a_fan_out_is_queued_whole_while_every_worker_hangs(backend: Backend) {
    let (_smtp, builder) = hanging_smtp(backend).await;
    let d = builder
        .env("NOROSHI__QUEUE__EXPAND_BATCH", "50")
        .start()
        .await;
    d.add_subscribers(600, "resident").await;
    let url = d.database_url();
    let holder = (backend == Backend::Postgres).then(|| {
        let url = url.clone();
        tokio::spawn(async move {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            loop {
                // Queued behind the expansion's own transaction, so granted the moment it
                // commits; held for a while after.
                let mut tx = c.begin().await.unwrap();
                let held =
                    sqlx::query("SELECT id FROM deliveries WHERE kind = 'expand' FOR UPDATE")
                        .fetch_optional(&mut *tx)
                        .await
                        .unwrap();
                if held.is_some() {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(if held.is_some() { 1 } else { 20 }))
                    .await;
            }
        })
    });
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        n = d
            .scalar_i64("SELECT COUNT(*) FROM deliveries WHERE kind = 'send'")
            .await;
        if n == 600 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(h) = holder {
        h.abort();
    }
    assert_eq!(
        n, 600,
        "copies of {id} queued after 20 s while both workers hang"
    );
}
on_both!(a_fan_out_is_queued_whole_while_every_worker_hangs);

/// The claim is the hot statement; it must take due rows along `deliveries_due` and stop
/// after its batch, also once the database has statistics of a backlog (autovacuum analyzes
/// `deliveries` during any large fan-out). Planned as a scan of every queued row and a sort,
/// each claim costs the whole backlog (seen at 56 ms a claim with 40,000 queued).
async fn a_claim_reads_the_due_index_once_statistics_see_a_backlog(backend: Backend) {
    let (_smtp, builder) = hanging_smtp(backend).await;
    let d = builder.start().await;
    d.add_subscribers(2_000, "resident").await;
    d.submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let queued = d
            .scalar_i64("SELECT COUNT(*) FROM deliveries WHERE kind = 'send'")
            .await;
        if queued == 2_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queued} of 2,000 queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let claim = noroshi::queue::claim_sql(backend == Backend::Postgres);
    let now = 1_900_000_000_000i64;
    let plans: Vec<(&str, String)> = {
        use sqlx::{Connection, Executor};
        let url = d.database_url();
        if backend == Backend::Sqlite {
            use sqlx::Row;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            c.execute("ANALYZE").await.unwrap();
            let plan = sqlx::query(&format!("EXPLAIN QUERY PLAN {claim}"))
                .bind("test")
                .bind(now)
                .bind(now)
                .bind("email")
                .bind(0i32)
                .bind(64i64)
                .bind(false)
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect::<Vec<_>>()
                .join("\n");
            vec![("after ANALYZE", plan)]
        } else {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            c.execute("ANALYZE deliveries, announcements, subscribers")
                .await
                .unwrap();
            c.execute(&*format!(
                "PREPARE claim (TEXT, BIGINT, BIGINT, TEXT, INTEGER, BIGINT, BOOLEAN) AS {claim}"
            ))
            .await
            .unwrap();
            let mut plans = Vec::new();
            for mode in ["force_custom_plan", "force_generic_plan"] {
                c.execute(&*format!("SET plan_cache_mode = {mode}"))
                    .await
                    .unwrap();
                let plan = sqlx::query_scalar::<_, String>(&format!(
                    "EXPLAIN EXECUTE claim ('test', {now}, {now}, 'email', 0, 64, FALSE)"
                ))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .join("\n");
                plans.push((mode, plan));
            }
            plans
        }
    };
    for (mode, plan) in plans {
        assert!(plan.contains("deliveries_due"), "{mode}:\n{plan}");
        for walk_all in [
            "Sort",
            "Seq Scan on deliveries",
            "TEMP B-TREE",
            "SCAN deliveries",
        ] {
            assert!(
                !plan.contains(walk_all),
                "{mode}, the claim plans as {walk_all}:\n{plan}"
            );
        }
    }
}
on_both!(a_claim_reads_the_due_index_once_statistics_see_a_backlog);

/// The PostgreSQL suite creates a database per daemon; a test that passes drops it (a
/// failed one keeps it, to look at), so runs do not pile databases up on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_test_leaves_no_database_behind() {
    let Some(admin) = postgres_url() else {
        eprintln!("SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)");
        return;
    };
    let d = Daemon::builder(Backend::Postgres).start().await;
    let url = d.database_url();
    let name = url.rsplit('/').next().unwrap().to_string();
    let exists = |name: String| {
        let admin = admin.clone();
        async move {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap()
                == 1
        }
    };
    assert!(exists(name.clone()).await, "{name} was not created");
    drop(d);
    assert!(!exists(name.clone()).await, "{name} is still there");
    // A database that two daemons share (made by the test itself) goes too, after them.
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_postgres_database(tmp.path()).await;
    let name = shared.rsplit('/').next().unwrap().to_string();
    let a = Daemon::builder(Backend::Postgres)
        .database(&shared)
        .start()
        .await;
    let b = Daemon::builder(Backend::Postgres)
        .database(&shared)
        .start()
        .await;
    assert!(exists(name.clone()).await, "{name} was not created");
    drop((a, b));
    assert!(exists(name.clone()).await, "{name} went with its daemons");
    drop(shared);
    assert!(!exists(name.clone()).await, "{name} is still there");
}

/// Holds every insert into the delivery log (every outcome's record) until the returned
/// transaction ends.
async fn hold_the_delivery_log(
    c: &mut sqlx::PgConnection,
) -> sqlx::Transaction<'_, sqlx::Postgres> {
    use sqlx::Connection;
    let mut held = c.begin().await.unwrap();
    sqlx::query("LOCK TABLE delivery_attempts IN SHARE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    held
}

/// A worker's place at the platform is free once the platform has answered: outcomes that
/// wait for their commit do not hold it, and at most `concurrency` of them wait per
/// channel. PostgreSQL only: there the claims and the delivery log take different locks, so
/// the test can hold the log's inserts back while claims go on (on SQLite every write waits
/// for the one write turn, claims too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_send_on_while_outcomes_wait_for_their_commit() {
    if postgres_url().is_none() {
        eprintln!("SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)");
        return;
    }
    use sqlx::Connection;
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let d = Daemon::builder(Backend::Postgres)
        .config(&email_config(smtp.port()).replace("concurrency = 8", "concurrency = 2"))
        .start()
        .await;
    d.add_subscribers(10, "resident").await;
    // Every outcome's record inserts into the delivery log: hold those inserts back.
    let mut c = sqlx::PgConnection::connect(&d.database_url())
        .await
        .unwrap();
    let held = hold_the_delivery_log(&mut c).await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    // Two workers: two copies whose outcomes wait for the commit, and two more sent by the
    // same workers, which then wait for a place among the outcomes. No more than that.
    assert!(
        smtp.wait_for(4, Duration::from_secs(10)).await,
        "{} copies sent while the first outcomes waited for their commit",
        smtp.message_count()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        smtp.message_count(),
        4,
        "outcomes waiting for the commit are bounded"
    );
    held.rollback().await.unwrap();
    assert!(smtp.wait_for(10, Duration::from_secs(10)).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = d.announcement(&id).await;
        if v["status"] == "sent" {
            assert_eq!(channel(&v, "email")["sent"], 10, "{v}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(smtp.message_count(), 10, "each subscriber got one copy");
    // The disaster lane keeps its workers through the commit: a live alert to 30
    // subscribers sends at most one copy per worker, two general and five reserved
    // (`disaster_burst`), while the log is held.
    d.add_subscribers(20, "more").await;
    let held = hold_the_delivery_log(&mut c).await;
    let (status, v) = d
        .post(
            "/api/v1/announcements",
            DISASTER,
            json!({"title": "避難指示", "body": "直ちに避難してください。", "priority": "disaster", "channels": ["email"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert!(smtp.wait_for(11, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let alert_copies = smtp.message_count() - 10;
    assert!(
        (1..=7).contains(&alert_copies),
        "{alert_copies} alert copies sent while their outcomes could not be committed"
    );
    held.rollback().await.unwrap();
    assert!(smtp.wait_for(40, Duration::from_secs(10)).await);
}

/// Two daemons on one PostgreSQL share the queue: the second wakes on the first's
/// `NOTIFY` (its poll is a minute), both send, and nobody gets the message twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_postgres_queue() {
    if postgres_url().is_none() {
        eprintln!("SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)");
        return;
    }
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_millis(10));
    let tmp = tempfile::tempdir().unwrap();
    let url = shared_postgres_database(tmp.path()).await;
    let config = format!(
        "{}\n",
        email_config(smtp.port()).replace("concurrency = 8", "concurrency = 2")
    );
    let slow_poll = |b: DaemonBuilder| {
        b.config(&config)
            .database(&url)
            .env("NOROSHI__QUEUE__POLL_INTERVAL_MS", "60000")
    };
    let a = slow_poll(Daemon::builder(Backend::Postgres)).start().await;
    let b = slow_poll(Daemon::builder(Backend::Postgres)).start().await;
    a.add_subscribers(200, "resident").await;
    let id = a
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    a.wait_status(&id, &["sent"], Duration::from_secs(60)).await;
    let messages = smtp.messages();
    let unique: HashSet<String> = messages.iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(unique.len(), 200);
    assert_eq!(messages.len(), 200, "no copy was sent twice");
    let mut workers = HashSet::new();
    let mut cursor: Option<i64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/api/v1/deliveries?announcement_id={id}&limit=200&cursor={c}"),
            None => format!("/api/v1/deliveries?announcement_id={id}&limit=200"),
        };
        let (_, log) = b.get(&path).await;
        for item in log["items"].as_array().unwrap() {
            workers.insert(item["worker"].as_str().unwrap().to_string());
        }
        match log["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(workers.len(), 2, "both instances sent: {workers:?}");
}

/// Two daemons on one PostgreSQL; one is SIGKILLed in the middle of a fan-out. Its leases
/// expire and the other finishes the work: every subscriber gets the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_its_work_to_the_other() {
    if postgres_url().is_none() {
        eprintln!("SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)");
        return;
    }
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_millis(5));
    let tmp = tempfile::tempdir().unwrap();
    let url = shared_postgres_database(tmp.path()).await;
    let config = email_config(smtp.port());
    let mut a = Daemon::builder(Backend::Postgres)
        .config(&config)
        .database(&url)
        .start()
        .await;
    let b = Daemon::builder(Backend::Postgres)
        .config(&config)
        .database(&url)
        .start()
        .await;
    a.add_subscribers(600, "resident").await;
    let id = a
        .submit(json!({"title": "断水のお知らせ", "body": "明日9時から断水します。", "channels": ["email"]}))
        .await;
    while smtp.message_count() < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill9();
    b.wait_status(&id, &["sent"], Duration::from_secs(90)).await;
    let messages = smtp.messages();
    let unique: HashSet<String> = messages.iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(unique.len(), 600, "every subscriber received the message");
    eprintln!(
        "instance kill: {} duplicate(s) (copies in flight at the kill)",
        messages.len() - unique.len()
    );
}

async fn log_csv(d: &Daemon, query: String) -> Vec<Vec<String>> {
    let r = d
        .http
        .get(format!("{}/api/v1/deliveries?{query}", d.base))
        .bearer_auth(ADMIN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    csv_reader(&r.text().await.unwrap())
}

/// The delivery log as CSV with the same filters (read back by a CSV reader), and its
/// retention: attempts past `[queue] log_retention_days` are pruned, while the
/// announcement and each channel's outcome stay.
async fn the_delivery_log_exports_csv_and_old_attempts_are_pruned(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    let id = d.submit(notice()).await;
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    let rows = log_csv(&d, format!("announcement_id={id}")).await;
    assert_eq!(
        rows[0],
        [
            "id",
            "announcement_id",
            "channel",
            "attempt",
            "outcome",
            "status_code",
            "error",
            "note",
            "remote_id",
            "started_at",
            "finished_at",
            "exercise"
        ]
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (
            rows[1][1].as_str(),
            rows[1][2].as_str(),
            rows[1][4].as_str()
        ),
        (id.as_str(), "website", "sent")
    );
    assert_eq!(
        log_csv(&d, format!("announcement_id={id}&channel=x"))
            .await
            .len(),
        1,
        "the filters apply"
    );
    // Two days later, with a one-day retention: the attempt is pruned, the outcome stays.
    d.terminate().await;
    d.set_env(
        "NOROSHI_TEST_CLOCK_OFFSET_MS",
        &(2 * 86_400_000i64).to_string(),
    );
    d.set_env("NOROSHI__QUEUE__LOG_RETENTION_DAYS", "1");
    d.start_again().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while log_csv(&d, format!("announcement_id={id}")).await.len() > 1 {
        assert!(std::time::Instant::now() < deadline, "not pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = d.announcement(&id).await;
    assert_eq!(a["status"], "sent");
    assert_eq!(channel(&a, "website")["sent"], 1);
}
on_both!(the_delivery_log_exports_csv_and_old_attempts_are_pruned);
