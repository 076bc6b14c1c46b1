//! Test harness: the real `noroshi` binary on a free loopback port, a temporary SQLite file
//! or a fresh PostgreSQL database per test, and a small typed client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN: &str = "it-admin-token-7c1f9e";
pub const STAFF: &str = "it-staff-token-28d4ab";
pub const VIEWER: &str = "it-viewer-token-5be0c3";
pub const DISASTER: &str = "it-disaster-token-91aa04";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server for the PostgreSQL suite, when `NOROSHI_TEST_POSTGRES_URL` is set.
pub fn postgres_url() -> Option<String> {
    std::env::var("NOROSHI_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Runs a scenario on SQLite and, when configured, on PostgreSQL, as two tests.
#[macro_export]
macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_url().is_none() {
                    eprintln!(
                        "SKIPPED: PostgreSQL suite (set NOROSHI_TEST_POSTGRES_URL to run it)"
                    );
                    return;
                }
                super::$scenario($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

/// A loopback port free a moment ago (for a process that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh database for one test: its URL.
pub async fn fresh_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("noroshi.db").display()),
        Backend::Postgres => {
            let admin = postgres_url().expect("postgres url");
            let name = format!("noroshi_it_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&admin)
                .await
                .expect("connect to NOROSHI_TEST_POSTGRES_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let mut url = url::Url::parse(&admin).expect("postgres url");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
    }
}

/// A PostgreSQL database that several daemons of one test share (instances on one queue).
/// Declared before its daemons, it outlives them.
pub struct SharedDatabase(String);

impl std::ops::Deref for SharedDatabase {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for SharedDatabase {
    /// Like a daemon's own database: gone when the test passed, kept when it failed.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            drop_database(&self.0);
        }
    }
}

/// A fresh PostgreSQL database for daemons to share.
pub async fn shared_postgres_database(dir: &Path) -> SharedDatabase {
    SharedDatabase(fresh_database(Backend::Postgres, dir).await)
}

/// A running daemon and everything needed to restart it.
pub struct Daemon {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub http: reqwest::Client,
    pub env: Vec<(String, String)>,
    starts: usize,
    /// The PostgreSQL database this daemon's builder created (not one it was given):
    /// dropped with the daemon when the test passed.
    owned_database: Option<String>,
}

pub struct DaemonBuilder {
    backend: Backend,
    extra_toml: String,
    pub env: Vec<(String, String)>,
    database: Option<String>,
}

impl DaemonBuilder {
    /// More config (channel sections) appended to the generated file.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }
    /// Use this database instead of a fresh one (several instances on one PostgreSQL).
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub async fn start(self) -> Daemon {
        self.start_inner(None).await
    }
    /// Starts with a file written in the test directory first (a secret file).
    pub async fn start_with_file(self, name: &str, content: &str) -> Daemon {
        self.start_inner(Some((name.to_string(), content.to_string())))
            .await
    }
    async fn start_inner(self, file: Option<(String, String)>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        if let Some((name, content)) = file {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let owned = self.database.is_none() && self.backend == Backend::Postgres;
        let db = match self.database {
            Some(url) => url,
            None => fresh_database(self.backend, dir.path()).await,
        };
        // Port 0: the daemon binds a free port itself (no race with other tests picking
        // ports) and the harness reads it from the start-up log line.
        let base = String::new();
        let data = dir.path().join("data");
        let config = format!(
            r#"
[server]
bind = "127.0.0.1:0"
public_url = "https://noroshi.city.example.jp/"
data_dir = "{data}"

[database]
url = "{db}"

[[auth.tokens]]
name = "admin"
role = "admin"
token_env = "IT_ADMIN_TOKEN"

[[auth.tokens]]
name = "pr-desk"
role = "staff"
token_env = "IT_STAFF_TOKEN"

[[auth.tokens]]
name = "reader"
role = "viewer"
token_sha256 = "{viewer_hash}"

[[auth.tokens]]
name = "bousai"
role = "disaster"
token_file = "{disaster_file}"

[queue]
lease_secs = 5
retry_base_ms = 50
retry_max_secs = 1
poll_interval_ms = 100
max_attempts = 4

[log]
format = "human"
level = "info,noroshi=debug"

# Not the default hourly collection (minute 0): a test running across the hour saw it fire
# with a refused LINE token and show the channel `degraded` (CI, 18:00 UTC). Tests that
# need reach collect through `POST /api/v1/reach/collect`; this fires only at 00:00 JST on
# January 1st.
[reach]
schedule = "0 0 1 1 *"

{extra}
"#,
            data = data.display(),
            viewer_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(VIEWER.as_bytes())),
            disaster_file = {
                let p = dir.path().join("disaster.token");
                std::fs::write(&p, format!("{DISASTER}\n")).unwrap();
                p.display().to_string()
            },
            extra = self
                .extra_toml
                .replace("{dir}", &dir.path().display().to_string()),
        );
        let config_path = dir.path().join("noroshi.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut env = vec![
            ("IT_ADMIN_TOKEN".to_string(), ADMIN.to_string()),
            ("IT_STAFF_TOKEN".to_string(), STAFF.to_string()),
        ];
        env.extend(self.env);
        let log_path = dir.path().join("daemon.log");
        let mut d = Daemon {
            child: None,
            base,
            config_path,
            log_path,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            env,
            starts: 0,
            owned_database: owned.then(|| db.clone()),
        };
        d.spawn().await;
        d
    }
}

impl Daemon {
    pub fn builder(backend: Backend) -> DaemonBuilder {
        DaemonBuilder {
            backend,
            extra_toml: String::new(),
            env: Vec::new(),
            database: None,
        }
    }

    /// The daemon's database URL, from its config file.
    pub fn database_url(&self) -> String {
        std::fs::read_to_string(&self.config_path)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("url = \""))
            .map(|u| u.trim_end_matches('"').to_string())
            .unwrap()
    }

    /// Runs one statement on the daemon's database, whichever it is.
    pub async fn execute_sql(&self, sql: &str) {
        use sqlx::Connection;
        let url = self.database_url();
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }

    /// The one integer a query on the daemon's database answers (a count).
    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        let url = self.database_url();
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }

    /// The admin listener's base URL (`server.admin_bind`), from the start-up log line.
    pub fn admin_base(&self) -> String {
        let logs = self.logs();
        let addr = logged_address(&logs, "Admin API is listening", "admin_bind")
            .unwrap_or_else(|| panic!("no admin listener in the log:\n{logs}"));
        format!("http://{addr}")
    }

    pub fn site_dir(&self) -> PathBuf {
        self.dir.path().join("data/site")
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_noroshi"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("NOROSHI_LOG")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log_offset = self.logs().len();
        self.child = Some(cmd.spawn().expect("spawn noroshi"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("noroshi exited at start ({status}):\n{}", self.logs());
            }
            let logs = self.logs();
            let this_run = logs.get(log_offset..).unwrap_or("");
            let Some(addr) = logged_address(this_run, "Noroshi is listening", "bind") else {
                assert!(
                    Instant::now() < deadline,
                    "noroshi did not start listening:\n{logs}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            self.base = format!("http://{addr}");
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "noroshi did not become ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (up to 30 s) for the process to exit by itself.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "noroshi did not stop within 30 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
    }

    /// Starts the daemon again after `terminate` or `kill9`.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, Some(ADMIN), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// `POST /api/v1/announcements` with an `Idempotency-Key`.
    pub async fn submit_keyed(&self, token: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.post_keyed("/api/v1/announcements", token, key, body)
            .await
    }

    /// `POST path` with an `Idempotency-Key`.
    pub async fn post_keyed(
        &self,
        path: &str,
        token: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json::<Value>().await.unwrap())
    }

    /// Submits and returns the id, asserting `202`.
    pub async fn submit(&self, body: Value) -> String {
        let (status, v) = self.post("/api/v1/announcements", STAFF, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn announcement(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/v1/announcements/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// Waits until the announcement reaches one of `states`.
    pub async fn wait_status(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.announcement(id).await;
            if states.contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "announcement {id} stuck in {}: {v}\n{}",
                v["status"],
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count_announcements(&self) -> usize {
        let (_, v) = self.get("/api/v1/announcements?limit=200").await;
        v["items"].as_array().map(|a| a.len()).unwrap_or(0)
    }

    /// `POST /api/v1/subscribers/import` as an admin, with this body and content type.
    pub async fn import(&self, content_type: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/subscribers/import", self.base))
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn add_subscribers(&self, n: usize, prefix: &str) {
        let mut csv = String::from("email,lang,topics\n");
        for i in 0..n {
            csv.push_str(&format!("{prefix}{i}@example.jp,ja,\n"));
        }
        let (status, v) = self.import("text/csv", &csv).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    /// The id of the subscriber with this address (from `GET /api/v1/subscribers`).
    pub async fn subscriber_id(&self, email: &str) -> i64 {
        let (_, list) = self.get("/api/v1/subscribers").await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["email"] == email)
            .unwrap_or_else(|| panic!("no subscriber {email}: {list}"))["id"]
            .as_i64()
            .unwrap()
    }

    /// What `DELETE /api/v1/subscribers/{id}` answers, as an admin.
    pub async fn delete_subscriber(&self, id: i64) -> StatusCode {
        self.request(
            reqwest::Method::DELETE,
            &format!("/api/v1/subscribers/{id}"),
            Some(ADMIN),
            None,
        )
        .await
        .0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // A failed test keeps its database to look at; a passing one leaves none behind.
        if let (Some(url), false) = (self.owned_database.take(), std::thread::panicking()) {
            drop_database(&url);
        }
    }
}

/// Drops a test database (from a plain thread: `Drop` may run inside the test's runtime).
fn drop_database(url: &str) {
    let Some(admin) = postgres_url() else { return };
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let dropped = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .map(|_| ())
            })
            .map_err(|e| e.to_string())
    })
    .join();
    if let Ok(Err(e)) = dropped {
        eprintln!("could not drop the test database: {e}");
    }
}

/// The address the last start-up line `message` names in `field`: `MESSAGE FIELD=ADDR` in
/// human text, `{"message":"MESSAGE","FIELD":"ADDR",…}` in JSON (`[log] format`).
pub fn logged_address(logs: &str, message: &str, field: &str) -> Option<String> {
    logs.lines().rev().find_map(|line| {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            return v[field]
                .as_str()
                .filter(|_| v["message"] == message)
                .map(str::to_string);
        }
        let rest = line.split(&format!("{message} {field}=")).nth(1)?;
        rest.split_whitespace().next().map(str::to_string)
    })
}

/// The channel summary for `channel` in a GET announcement answer.
pub fn channel<'a>(v: &'a Value, channel: &str) -> &'a Value {
    v["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|c| c["channel"] == channel))
        .unwrap_or_else(|| panic!("no channel {channel} in {v}"))
}

pub fn notice() -> Value {
    json!({
        "title": "避難所開設のお知らせ",
        "body": "本日15時、須坂市役所に避難所を開設しました。\n\n持ち物：常備薬、飲料水。",
        "link": "https://www.city.suzaka.nagano.jp/bousai/",
    })
}

/// An email channel section pointed at a fake SMTP server.
pub fn email_config(port: u16) -> String {
    format!(
        r#"
[channels.email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
from = "須坂市 <info@city.example.jp>"
list_id = "announce.city.example.jp"
pool_size = 4
timeout_secs = 5

[channels.email.delivery]
rate_per_second = 2000.0
burst = 200
concurrency = 8
"#
    )
}

/// Reads CSV as a spreadsheet or an open-data portal would (the `csv` crate, RFC 4180,
/// every row kept, the header too).
pub fn csv_reader(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_string).collect())
        .collect()
}
