//! Issue 17 (campaigns): recurring posts on a controlled clock. `NOROSHI_TEST_CLOCK_OFFSET_MS`
//! puts the daemon a few seconds before a minute boundary, so a firing comes in seconds,
//! never after a slept minute.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both;

/// The offset that puts the daemon `lead` before the next minute boundary that is at least
/// `lead` away (so it has time to start), and that boundary in the daemon's time (ms).
fn before_boundary(lead: Duration) -> (i64, i64) {
    let now = chrono::Utc::now().timestamp_millis();
    // Far enough ahead that the daemon can start; the offset is what makes it close.
    let boundary = (now / 60_000 + 5) * 60_000;
    let offset = boundary - lead.as_millis() as i64 - now;
    (offset, boundary)
}

fn schedule_body(title: &str) -> Value {
    json!({
        "name": "ごみ収集日のお知らせ",
        "cron": "* * * * *",
        "announcement": {"title": title, "body": "朝8時30分までに集積所へ出してください。", "channels": ["website"]},
    })
}

async fn schedule_announcements(d: &Daemon, id: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/schedules/{id}")).await;
    let mut out = Vec::new();
    for f in v["recent_firings"].as_array().cloned().unwrap_or_default() {
        if let Some(a) = f["announcement_id"].as_str() {
            out.push(d.announcement(a).await);
        }
    }
    out
}

async fn wait_firings(d: &Daemon, id: &str, n: usize, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = d.get(&format!("/api/v1/schedules/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if v["recent_firings"].as_array().map(|f| f.len()).unwrap_or(0) >= n {
            return v;
        }
        assert!(Instant::now() < deadline, "no firing: {v}\n{}", d.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A schedule answers with its next five firings; an edit made two seconds before a firing
/// (under an email fan-out's load) wins: only the new content goes out, exactly once.
/// Bad input is refused naming its field.
async fn an_edit_just_before_a_firing_wins_and_it_fires_once(backend: Backend) {
    use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_millis(5));
    let (offset, boundary) = before_boundary(Duration::from_secs(6));
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .start()
        .await;
    d.add_subscribers(300, "resident").await;
    // Refusals name the field.
    for (body, field) in [
        (
            json!({"cron": "* * *", "announcement": {"title": "a", "body": "b"}}),
            "cron",
        ),
        (
            json!({"cron": "* * * * *", "timezone": "Mars/Base", "announcement": {"title": "a", "body": "b"}}),
            "timezone",
        ),
        (
            json!({"cron": "* * * * *", "announcement": {"title": "", "body": "b"}}),
            "announcement.title",
        ),
        (
            json!({"cron": "* * * * *", "catch_up": "sometimes", "announcement": {"title": "a", "body": "b"}}),
            "catch_up",
        ),
    ] {
        let (status, v) = d.post("/api/v1/schedules", STAFF, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (status, v) = d
        .post("/api/v1/schedules", STAFF, schedule_body("旧い内容"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let next: Vec<i64> = v["next_firings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    assert_eq!(next.len(), 5);
    assert_eq!(next[0], boundary, "{v}");
    assert!(v["next_firings"][0].as_str().unwrap().ends_with("+09:00"));
    // Load: a fan-out to the subscribers while the firing comes.
    d.submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    // Two seconds before the firing: the edit.
    let wait = (boundary - chrono::Utc::now().timestamp_millis() - offset - 2000).max(0);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let r = d
        .http
        .patch(format!("{}/api/v1/schedules/{id}", d.base))
        .bearer_auth(STAFF)
        .json(&json!({"announcement": {"title": "新しい内容", "body": "朝8時30分までに出してください。", "channels": ["website"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_firings(&d, &id, 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fired = schedule_announcements(&d, &id).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["title"], "新しい内容");
    let all = d.get("/api/v1/announcements?limit=200").await.1;
    assert!(
        !all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["title"] == "旧い内容"),
        "the old content went out"
    );
    // Deleted: gone, and never fires again.
    let r = d
        .http
        .delete(format!("{}/api/v1/schedules/{id}", d.base))
        .bearer_auth(STAFF)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = d.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both!(an_edit_just_before_a_firing_wins_and_it_fires_once);

/// A deletion one second before the firing, while an email fan-out sends: nothing goes out.
async fn a_delete_just_before_a_firing_wins(backend: Backend) {
    use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_millis(5));
    let (offset, boundary) = before_boundary(Duration::from_secs(5));
    let d = Daemon::builder(backend)
        .config(&email_config(smtp.port()))
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .start()
        .await;
    d.add_subscribers(300, "resident").await;
    let (_, v) = d
        .post("/api/v1/schedules", STAFF, schedule_body("消される内容"))
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    d.submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    let wait = (boundary - chrono::Utc::now().timestamp_millis() - offset - 1000).max(0);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let r = d
        .http
        .delete(format!("{}/api/v1/schedules/{id}", d.base))
        .bearer_auth(STAFF)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        d.count_announcements().await,
        1,
        "only the fan-out: a deleted schedule fired"
    );
}
on_both!(a_delete_just_before_a_firing_wins);

/// Firings missed while the daemon was down: `once` posts one (not one per missed minute),
/// `skip` posts none and says so in the firing record.
async fn missed_firings_follow_the_catch_up_policy(backend: Backend) {
    let (offset, _) = before_boundary(Duration::from_secs(30));
    let mut d = Daemon::builder(backend)
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .start()
        .await;
    let mut once = schedule_body("まとめて一度");
    once["catch_up"] = json!("once");
    let mut skip = schedule_body("見送り");
    skip["catch_up"] = json!("skip");
    let (_, v) = d.post("/api/v1/schedules", STAFF, once).await;
    let once_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = d.post("/api/v1/schedules", STAFF, skip).await;
    let skip_id = v["id"].as_str().unwrap().to_string();
    d.terminate().await;
    // Three minutes later for the daemon: three firings missed.
    let later = offset + 3 * 60_000;
    d.set_env("NOROSHI_TEST_CLOCK_OFFSET_MS", &later.to_string());
    d.start_again().await;
    let v = wait_firings(&d, &once_id, 1, Duration::from_secs(10)).await;
    let v2 = wait_firings(&d, &skip_id, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let once_fired = schedule_announcements(&d, &once_id).await;
    assert_eq!(once_fired.len(), 1, "{v}");
    assert!(
        schedule_announcements(&d, &skip_id).await.is_empty(),
        "{v2}"
    );
    let (_, v2) = d.get(&format!("/api/v1/schedules/{skip_id}")).await;
    assert!(
        v2["recent_firings"][0]["note"]
            .as_str()
            .unwrap()
            .contains("skip"),
        "{v2}"
    );
}
on_both!(missed_firings_follow_the_catch_up_policy);

/// Two instances on one PostgreSQL database, and one of them killed at the firing instant:
/// the firing happens exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_fire_once_across_a_kill() {
    let Some(_) = postgres_url() else {
        eprintln!("NOTE: NOROSHI_TEST_POSTGRES_URL is not set; SKIPPED");
        return;
    };
    let (offset, boundary) = before_boundary(Duration::from_secs(5));
    let mut a = Daemon::builder(Backend::Postgres)
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .start()
        .await;
    let b = Daemon::builder(Backend::Postgres)
        .database(&a.database_url())
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .start()
        .await;
    let (_, v) = a
        .post("/api/v1/schedules", STAFF, schedule_body("一度だけ"))
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    // Kill one instance at the firing instant, then start it again.
    let wait = (boundary - chrono::Utc::now().timestamp_millis() - offset).max(0);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    a.kill9();
    a.start_again().await;
    wait_firings(&b, &id, 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(schedule_announcements(&b, &id).await.len(), 1);
    assert_eq!(b.count_announcements().await, 1);
}

/// A scheduled post that fires during disaster mode waits on the paused channels, and goes
/// out after the all-clear.
async fn disaster_mode_holds_scheduled_posts(backend: Backend) {
    let (offset, _) = before_boundary(Duration::from_secs(3));
    let d = Daemon::builder(backend)
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .env("NOROSHI__DISASTER__PAUSE_CHANNELS", "[\"website\"]")
        .start()
        .await;
    let (_, v) = d
        .post(
            "/api/v1/announcements",
            DISASTER,
            json!({"title": "【警戒レベル4】避難指示", "body": "避難してください。", "priority": "disaster", "channels": ["website"]}),
        )
        .await;
    let alert = v["id"].as_str().unwrap().to_string();
    d.wait_status(&alert, &["sent"], Duration::from_secs(20))
        .await;
    let (_, v) = d
        .post("/api/v1/schedules", STAFF, schedule_body("定例のお知らせ"))
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let fired = wait_firings(&d, &id, 1, Duration::from_secs(15)).await;
    let post = fired["recent_firings"][0]["announcement_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        d.announcement(&post).await["status"],
        "queued",
        "held in disaster mode"
    );
    let (status, _) = d
        .post(
            &format!("/api/v1/announcements/{alert}/all-clear"),
            DISASTER,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.wait_status(&post, &["sent"], Duration::from_secs(20))
        .await;
}
on_both!(disaster_mode_holds_scheduled_posts);

/// A schedule that names a template gets the firing's date in Japanese form (`date`):
/// 12月1日（火） as Tokyo writes it, for the day it fires.
async fn a_template_schedule_fills_the_firing_date(backend: Backend) {
    let (offset, boundary) = before_boundary(Duration::from_secs(3));
    let d = Daemon::builder(backend)
        .env("NOROSHI_TEST_CLOCK_OFFSET_MS", &offset.to_string())
        .env(
            "NOROSHI__DISASTER__TEMPLATES_DIR",
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/templates")
                .display()
                .to_string(),
        )
        .start()
        .await;
    let (status, v) = d
        .post(
            "/api/v1/schedules",
            STAFF,
            json!({
                "cron": "* * * * *",
                "announcement": {"template": "collection_day", "params": {"kind": "燃やせるごみ", "area": "須坂市内全域"}, "channels": ["website"]},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_firings(&d, &id, 1, Duration::from_secs(15)).await;
    let fired = schedule_announcements(&d, &id).await;
    let tokyo = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
    let day = chrono::DateTime::from_timestamp_millis(boundary)
        .unwrap()
        .with_timezone(&tokyo);
    let weekday = ["月", "火", "水", "木", "金", "土", "日"]
        [chrono::Datelike::weekday(&day).num_days_from_monday() as usize];
    let expected = format!(
        "{}月{}日（{weekday}）は燃やせるごみの収集日です",
        chrono::Datelike::month(&day),
        chrono::Datelike::day(&day)
    );
    assert_eq!(fired[0]["title"], expected.as_str(), "{fired:?}");
}
on_both!(a_template_schedule_fills_the_firing_date);
