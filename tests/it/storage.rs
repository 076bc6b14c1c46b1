//! Issue 13 (storage faults): a full database or a lost connection never poisons the
//! daemon; it answers clearly and recovers by itself, losing and duplicating nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

async fn sqlite(d: &Daemon) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = d.database_url();
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

/// Submissions until one is refused; returns the ids accepted and the refusal.
async fn submit_until_refused(
    d: &Daemon,
    n: usize,
) -> (Vec<String>, Option<(StatusCode, Value, Option<String>)>) {
    let mut accepted = Vec::new();
    for i in 0..n {
        let r = d
            .http
            .post(format!("{}/api/v1/announcements", d.base))
            .bearer_auth(STAFF)
            .json(&json!({"title": format!("お知らせ {i}"), "body": "本文。".repeat(400)}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == StatusCode::ACCEPTED {
            accepted.push(v["id"].as_str().unwrap().to_string());
        } else {
            return (accepted, Some((status, v, retry_after)));
        }
    }
    (accepted, None)
}

/// SQLite full (`database.sqlite_max_page_count`): submissions get `503 storage-full` with
/// `Retry-After` and nothing half-stored; reads and `/readyz` say so; once space is freed
/// every request succeeds again without a restart, and everything accepted is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_database_answers_503_and_recovers_by_itself() {
    let hook = noroshi_webhook::fake::start(None).await;
    let mut d = Daemon::builder(Backend::Sqlite)
        .config(&format!(
            "[channels.webhook.cms]\nenabled = true\nurl = \"{}\"\n",
            hook.url()
        ))
        .start()
        .await;
    d.add_subscribers(3000, "filler").await;
    let mut c = sqlite(&d).await;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut c)
        .await
        .unwrap();
    drop(c);
    d.kill9();
    // The same daemon, capped a few pages above its size.
    let text = std::fs::read_to_string(&d.config_path).unwrap().replacen(
        "[database]\n",
        &format!("[database]\nsqlite_max_page_count = {}\n", pages + 8),
        1,
    );
    std::fs::write(&d.config_path, text).unwrap();
    d.start_again().await;
    let (before, refused) = submit_until_refused(&d, 300).await;
    let (status, problem, retry_after) = refused.expect("the database filled up");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("/storage-full"),
        "{problem}"
    );
    assert!(retry_after.is_some(), "Retry-After");
    // Reads keep working, and readiness says what is wrong.
    assert_eq!(
        d.count_announcements().await,
        before.len(),
        "nothing half-stored"
    );
    let ready = d
        .http
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().await.unwrap().contains("storage"));
    let (status, storage) = d.get("/api/v1/storage").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(storage["state"], "full", "{storage}");
    assert!(storage["since"].is_string(), "{storage}");

    // Space comes back: the operator deletes what is not needed.
    let mut c = sqlite(&d).await;
    sqlx::query("DELETE FROM subscribers WHERE email LIKE 'filler%'")
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);
    // Every request works again, on every pooled connection, without a restart.
    let (after, refused) = submit_until_refused(&d, 20).await;
    assert!(refused.is_none(), "{refused:?}\n{}", d.logs());
    assert_eq!(after.len(), 20);
    let ready = d
        .http
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "{}", d.logs());
    assert_eq!(d.get("/api/v1/storage").await.1["state"], "ok");
    for id in before.iter().chain(&after) {
        d.wait_status(id, &["sent"], Duration::from_secs(60)).await;
    }
    // Nothing accepted was lost or sent twice: every accepted announcement reached the
    // webhook exactly once.
    let mut per_title = std::collections::HashMap::<String, usize>::new();
    for r in hook
        .state()
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
    {
        *per_title
            .entry(r.json()["id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    for id in before.iter().chain(&after) {
        assert_eq!(per_title.get(id), Some(&1), "{id}: {per_title:?}");
    }
    let logs = d.logs();
    assert!(!logs.contains("non-zero transaction depth"), "{logs}");
    assert_eq!(
        logs.matches("Storage is full").count(),
        1,
        "said once at error level, not once per request:\n{logs}"
    );
    assert!(logs.contains("Storage is writable again"), "{logs}");
}

/// PostgreSQL: the daemon's connections are killed (`pg_terminate_backend`) in the middle
/// of the work; requests get their real answer or `503 storage-unavailable`, never 500, and
/// the daemon recovers by itself; nothing accepted is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_mid_work_recover_by_themselves() {
    if postgres_url().is_none() {
        eprintln!("SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)");
        return;
    }
    use sqlx::Connection;
    let d = Daemon::builder(Backend::Postgres).start().await;
    let url = d.database_url();
    let db_name = url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&postgres_url().unwrap())
        .await
        .unwrap();
    let mut accepted = Vec::new();
    for round in 0..3 {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&db_name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "round {round}: no backend to kill");
        for i in 0..10 {
            let (status, v) = d
                .post(
                    "/api/v1/announcements",
                    STAFF,
                    json!({"title": format!("r{round}-{i}"), "body": "本文"}),
                )
                .await;
            match status {
                StatusCode::ACCEPTED => accepted.push(v["id"].as_str().unwrap().to_string()),
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(
                        v["type"]
                            .as_str()
                            .unwrap()
                            .ends_with("/storage-unavailable"),
                        "{v}"
                    )
                }
                other => panic!("round {round}: {other} {v}\n{}", d.logs()),
            }
        }
    }
    assert!(
        accepted.len() >= 25,
        "it recovered: {} of 30",
        accepted.len()
    );
    for id in &accepted {
        d.wait_status(id, &["sent"], Duration::from_secs(60)).await;
    }
    let ready = d
        .http
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// PostgreSQL unreachable while sends are on the wire: their outcomes wait in memory (the
/// workers keep their leases) and are written once the database returns; nothing is sent
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_wait_for_the_database_and_nothing_is_sent_twice() {
    if postgres_url().is_none() {
        eprintln!("SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)");
        return;
    }
    use sqlx::Connection;
    let hook = noroshi_webhook::fake::start(None).await;
    let d = Daemon::builder(Backend::Postgres)
        .config(&format!(
            "[channels.website]\nenabled = false\n\n[channels.webhook.cms]\nenabled = true\nurl = \"{}\"\n",
            hook.url()
        ))
        .start()
        .await;
    let url = d.database_url();
    let db_name = url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&postgres_url().unwrap())
        .await
        .unwrap();
    while !hook.state().requests().iter().any(|r| r.method == "HEAD") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        hook.script(noroshi_channel_core::fake::ScriptedResponse {
            status: 200,
            body: "{}".into(),
            delay_ms: 1_500,
            ..Default::default()
        });
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            d.submit(
                json!({"title": format!("断水 {i}"), "body": "本文", "channels": ["webhook.cms"]}),
            )
            .await,
        );
    }
    let posts = || {
        hook.state()
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect::<Vec<_>>()
    };
    while posts().len() < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The database goes away while the four sends wait for their answers.
    sqlx::query(&format!(
        "ALTER DATABASE {db_name} WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db_name)
        .execute(&mut admin)
        .await
        .unwrap();
    // The answers come (1.5 s) while the database is gone; it stays away longer than the
    // 5 s lease.
    tokio::time::sleep(Duration::from_secs(7)).await;
    sqlx::query(&format!(
        "ALTER DATABASE {db_name} WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    for id in &ids {
        d.wait_status(id, &["sent"], Duration::from_secs(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posts().len(), 4, "nothing sent twice:\n{}", d.logs());
    assert!(
        d.logs().contains("Outcomes wait for storage"),
        "{}",
        d.logs()
    );
}

/// A small file system mounted for one test, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// `None` (the test is skipped, and says so) where mounting needs privileges we lack.
    fn mount(dir: &std::path::Path, bytes: usize) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| SmallFs(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The website's output directory fills up: the write fails as a transient error, the
/// pages and feeds already there stay intact, and it succeeds once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_site_directory_keeps_the_old_site_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let Some(_fs) = SmallFs::mount(&site, 512 * 1024) else {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    let d = Daemon::builder(Backend::Sqlite)
        .env(
            "NOROSHI__CHANNELS__WEBSITE__OUTPUT_DIR",
            site.to_str().unwrap(),
        )
        // Retries continue while the disk stays full (the harness gives up after 4).
        .env("NOROSHI__QUEUE__MAX_ATTEMPTS", "50")
        .start()
        .await;
    let first = d
        .submit(json!({"title": "一件目のお知らせ", "body": "本文", "channels": ["website"]}))
        .await;
    d.wait_status(&first, &["sent"], Duration::from_secs(20))
        .await;
    let index_before = std::fs::read_to_string(site.join("index.html")).unwrap();
    let atom_before = std::fs::read_to_string(site.join("feed.atom")).unwrap();
    // Fill the file system.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(site.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let second = d
        .submit(json!({"title": "二件目のお知らせ", "body": "本文".repeat(200), "channels": ["website"]}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let failed_attempt = loop {
        let (_, log) = d
            .get(&format!("/api/v1/deliveries?announcement_id={second}"))
            .await;
        if let Some(a) = log["items"].as_array().and_then(|i| i.last()).cloned() {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "{}", d.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed_attempt["outcome"], "transient", "{failed_attempt}");
    assert!(
        failed_attempt["error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{failed_attempt}"
    );
    // The site as it was: whole pages and feeds, not half-written ones.
    assert_eq!(
        std::fs::read_to_string(site.join("index.html")).unwrap(),
        index_before
    );
    assert_eq!(
        std::fs::read_to_string(site.join("feed.atom")).unwrap(),
        atom_before
    );
    // Space returns: the next attempt publishes.
    std::fs::remove_file(site.join("filler")).unwrap();
    d.wait_status(&second, &["sent"], Duration::from_secs(30))
        .await;
    let index = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(index.contains("二件目のお知らせ") && index.contains("一件目のお知らせ"));
}
