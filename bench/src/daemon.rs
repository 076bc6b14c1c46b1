//! The daemon under test: its configuration, the release `noroshi serve` process on a
//! fresh SQLite file or a fresh PostgreSQL database, and its clean-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::Digest;

use crate::disaster::{DisasterArgs, LineMode};
use crate::fakes::{Fakes, FB_PAGE, FB_TOKEN, LINE_TOKEN, LINE_USER};

/// X allows 100 posts per user per 15 minutes (CHANNELS.md §2.7).
const X_POSTS_PER_15_MIN: usize = 100;

/// The daemon under test, its directory and (on PostgreSQL) its database.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log_path: PathBuf,
    /// (the server's URL, the database created there) on PostgreSQL.
    postgres: Option<(String, String)>,
}

impl Daemon {
    /// The daemon's process id (for `/proc/<pid>/stat` and `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The PostgreSQL database this daemon runs on, if any.
    pub fn database(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(_, name)| name.as_str())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, up to 30 s to stop, then SIGKILL; then the PostgreSQL database is dropped.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        if let Some((admin, name)) = self.postgres.take() {
            if let Err(e) = drop_database(&admin, &name).await {
                eprintln!("noroshi-bench: could not drop database {name}: {e:#}");
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The daemon binary to run: `--bin`, else the workspace's release build.
pub fn daemon_bin(bin: Option<&Path>) -> Result<PathBuf> {
    let bin = bin.map(Path::to_path_buf).unwrap_or_else(default_bin);
    if !bin.is_file() {
        bail!(
            "no daemon binary at {} (build it: cargo build --release -p noroshi, or pass --bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// What the binary says of itself (`noroshi --version`: its version and the commit it was
/// built from), printed with every figure so a figure names its build.
pub fn describe(bin: &Path) -> String {
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    format!(
        "{} ({})",
        bin.display(),
        version.as_deref().unwrap_or("its --version failed")
    )
}

fn default_bin() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("release/noroshi"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/noroshi"),
    }
}

fn require_loopback(url: &url::Url) -> Result<()> {
    match url.host_str() {
        Some("127.0.0.1") | Some("localhost") | Some("[::1]") => Ok(()),
        other => bail!("the PostgreSQL server must be on loopback, got host {other:?}"),
    }
}

async fn create_database(admin: &str) -> Result<(String, String)> {
    let mut url = url::Url::parse(admin).context("--postgres is not a URL")?;
    require_loopback(&url)?;
    let name = format!("noroshi_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await
        .with_context(|| format!("connect to {admin}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .context("CREATE DATABASE")?;
    pool.close().await;
    url.set_path(&format!("/{name}"));
    Ok((url.to_string(), name))
}

async fn drop_database(admin: &str, name: &str) -> Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// Pacing of the social channels for the run, within each platform's published limits.
pub struct Pacing {
    /// `(rate_per_second, burst)` for `[channels.x.delivery]`, or the adapter's default.
    x: Option<(f64, usize)>,
    /// `burst` for `[channels.facebook.delivery]` (rate stays at the adapter's 0.5/s).
    facebook_burst: Option<usize>,
}

impl Pacing {
    pub fn for_run(args: &DisasterArgs) -> Pacing {
        if args.default_pacing {
            return Pacing {
                x: None,
                facebook_burst: None,
            };
        }
        // X: a burst that covers the alerts, and a sustained rate low enough that the
        // bucket never lets more than 100 posts through in any 15 minutes.
        let x_burst = args.alerts.clamp(10, X_POSTS_PER_15_MIN - 10);
        let x_rate = ((X_POSTS_PER_15_MIN - x_burst) as f64 / 900.0 * 1e6).floor() / 1e6;
        // Facebook: the Pages budget is per 24 hours (4,800 calls × engaged users), so a
        // burst of a few dozen posts is within it; the sustained rate stays 0.5/s.
        let fb_burst = args.alerts.clamp(3, 100);
        Pacing {
            x: Some((x_rate, x_burst)),
            facebook_burst: Some(fb_burst),
        }
    }

    /// What the bench set; everything else is the adapters' and the queue's defaults.
    pub fn describe(&self) -> String {
        let x = match self.x {
            Some((rate, burst)) => format!(
                "x burst {burst}, rate_per_second {rate:.4} (≤ {X_POSTS_PER_15_MIN} posts in any \
                 15 minutes)"
            ),
            None => "x default".into(),
        };
        let fb = match self.facebook_burst {
            Some(burst) => format!("facebook burst {burst}, rate default"),
            None => "facebook default".into(),
        };
        format!(
            "line default; {x}; {fb}; email pool_size 32, rate_per_second 100000, burst 10000, concurrency (default) 128"
        )
    }
}

/// `GET /api/v1/channels` as an admin.
async fn channel_view(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
) -> Result<serde_json::Value> {
    Ok(http
        .get(format!("{base}/api/v1/channels"))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?)
}

/// One channel as `GET /api/v1/channels` shows it (`null` when absent).
pub async fn channel(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    name: &str,
) -> Result<serde_json::Value> {
    let channels = channel_view(http, base, admin).await?;
    Ok(channels
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_default())
}

/// The pacing each channel runs with, as `GET /api/v1/channels` shows it.
pub async fn effective_pacing(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
) -> Result<Vec<String>> {
    let channels = channel_view(http, base, admin).await?;
    let mut out = Vec::new();
    for c in channels.as_array().into_iter().flatten() {
        let r = &c["rate_limit"];
        if r.is_null() {
            continue;
        }
        out.push(format!(
            "{}: {}/s, burst {}, disaster_burst {}, concurrency {} + {} reserved for disaster",
            c["name"].as_str().unwrap_or("?"),
            r["rate_per_second"]
                .as_f64()
                .map_or("?".into(), |v| if v >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.4}")
                }),
            r["burst"],
            r["disaster_burst"],
            r["concurrency"],
            r["reserved_disaster_workers"],
        ));
    }
    Ok(out)
}

/// Channels whose state is not `ok` after the run, with their reason.
pub async fn unhealthy_channels(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
) -> Result<Vec<String>> {
    let channels = channel_view(http, base, admin).await?;
    Ok(channels
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["enabled"] == true && c["state"] != "ok")
        .map(|c| format!("{} {} ({})", c["name"], c["state"], c["reason"]))
        .collect())
}

/// The bench's API tokens (only their SHA-256 goes into the configuration).
pub struct Tokens {
    pub admin: String,
    pub disaster: String,
}

/// What one daemon of the bench runs with.
pub struct Spec<'a> {
    /// The binary (see [`daemon_bin`]).
    pub bin: PathBuf,
    /// A PostgreSQL server on loopback: a fresh database is created there; else SQLite.
    pub postgres: Option<&'a str>,
    /// `[log] level`.
    pub log_level: &'a str,
    /// Run the daemon on this CPU only (`taskset -c CPU`).
    pub cpu: Option<usize>,
    /// The SMTP server the email channel sends to (127.0.0.1).
    pub smtp_port: u16,
    /// `[channels.email] timeout_secs`.
    pub smtp_timeout_secs: u64,
    /// The LINE, X and Facebook fakes, with the LINE mode and the pacing; else those
    /// channels stay off.
    pub social: Option<(&'a Fakes, LineMode, &'a Pacing)>,
    /// More configuration, appended as is (e.g. a webhook channel).
    pub extra: String,
}

fn config(spec: &Spec, dir: &Path, db: &str, tokens: &Tokens) -> String {
    let mut toml = format!(
        r#"# Written by noroshi-bench.
[server]
bind = "127.0.0.1:0"
public_url = "https://noroshi.city.example.jp/"
data_dir = "{data}"
# The per-token request limit (default 1,200 a minute) would turn the acceptance run and
# the bench's own polling into 429s; it guards against a runaway client, not durability.
api_per_minute = 1000000

[database]
url = "{db}"

[[auth.tokens]]
name = "bench-admin"
role = "admin"
token_sha256 = "{admin}"

[[auth.tokens]]
name = "bousai"
role = "disaster"
token_sha256 = "{disaster}"

[log]
# Human text: the start-up line is read for the bound address.
format = "human"
level = "{log_level}"

[cap]
channels = ["line", "x", "facebook"]

[channels.website]
output_dir = "{site}"

[channels.email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "須坂市 <info@city.example.jp>"
list_id = "announce.city.example.jp"
pool_size = 32
timeout_secs = {timeout}

[channels.email.delivery]
rate_per_second = 100000.0
burst = 10000
"#,
        data = dir.join("data").display(),
        site = dir.join("site").display(),
        admin = sha256_hex(&tokens.admin),
        disaster = sha256_hex(&tokens.disaster),
        log_level = spec.log_level,
        smtp_port = spec.smtp_port,
        timeout = spec.smtp_timeout_secs,
    );
    if let Some((fakes, line_mode, pacing)) = spec.social {
        toml.push_str(&social_config(fakes, line_mode, pacing));
    }
    toml.push_str(&spec.extra);
    toml
}

fn social_config(fakes: &Fakes, line_mode: LineMode, pacing: &Pacing) -> String {
    let creds = noroshi_x::fake::FakeCredentials::default();
    let line_target = match line_mode {
        LineMode::Broadcast => "mode = \"broadcast\"".to_string(),
        LineMode::Multicast => format!("mode = \"multicast\"\nto = [\"{LINE_USER}\"]"),
    };
    let x_delivery = match pacing.x {
        Some((rate, burst)) => {
            format!("[channels.x.delivery]\nrate_per_second = {rate:.6}\nburst = {burst}\n")
        }
        None => String::new(),
    };
    let fb_delivery = match pacing.facebook_burst {
        Some(burst) => format!("[channels.facebook.delivery]\nburst = {burst}\n"),
        None => String::new(),
    };
    format!(
        r#"
[channels.line]
enabled = true
api_base = "{line}"
data_api_base = "{line}"
channel_access_token_env = "BENCH_LINE_TOKEN"
{line_target}

[channels.x]
enabled = true
api_base = "{x}"
upload_base = "{x}"
consumer_key = "{ck}"
consumer_secret_env = "BENCH_X_CONSUMER_SECRET"
access_token = "{at}"
access_token_secret_env = "BENCH_X_ACCESS_SECRET"
long_text = "shorten"

{x_delivery}
[channels.facebook]
enabled = true
graph_base = "{fb}"
page_id = "{FB_PAGE}"
page_access_token_env = "BENCH_FB_TOKEN"

{fb_delivery}"#,
        line = fakes.line.base_url(),
        x = fakes.x.base_url(),
        ck = creds.consumer_key,
        at = creds.access_token,
        fb = fakes.facebook.base_url(),
    )
}

/// Starts `noroshi serve` on a fresh database (pinned to `spec.cpu` when given) and waits
/// until `/readyz` answers.
/// The address in the daemon's "Noroshi is listening" line, logged as text
/// (`… bind=127.0.0.1:PORT …`) or as JSON (`"bind":"127.0.0.1:PORT"`).
fn listening_address(logs: &str) -> Option<&str> {
    let line = logs.lines().find(|l| l.contains("Noroshi is listening"))?;
    if let Some(rest) = line.split("\"bind\":\"").nth(1) {
        return rest.split('"').next();
    }
    line.split("bind=").nth(1)?.split_whitespace().next()
}

pub async fn start_daemon(
    spec: &Spec<'_>,
    tokens: &Tokens,
    http: &reqwest::Client,
) -> Result<Daemon> {
    let bin = &spec.bin;
    let dir = tempfile::Builder::new()
        .prefix("noroshi-bench-")
        .tempdir()
        .context("a temporary directory")?;
    let (db, postgres) = match spec.postgres {
        Some(admin) => {
            let (url, name) = create_database(admin).await?;
            (url, Some((admin.to_string(), name)))
        }
        None => (
            format!("sqlite://{}", dir.path().join("noroshi.db").display()),
            None,
        ),
    };
    let config_path = dir.path().join("noroshi.toml");
    std::fs::write(&config_path, config(spec, dir.path(), &db, tokens))?;
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path)?;
    let creds = noroshi_x::fake::FakeCredentials::default();
    let mut command = match spec.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("NOROSHI_LOG")
        .env("BENCH_LINE_TOKEN", LINE_TOKEN)
        .env("BENCH_X_CONSUMER_SECRET", &creds.consumer_secret)
        .env("BENCH_X_ACCESS_SECRET", &creds.access_token_secret)
        .env("BENCH_FB_TOKEN", FB_TOKEN)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut d = Daemon {
        child: Some(child),
        dir,
        base: String::new(),
        log_path,
        postgres,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !d.alive() {
            let logs = d.logs();
            d.stop().await;
            bail!("noroshi exited at start:\n{logs}");
        }
        let logs = d.logs();
        if let Some(addr) = listening_address(&logs) {
            let base = format!("http://{addr}");
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    d.base = base;
                    return Ok(d);
                }
            }
        }
        if Instant::now() > deadline {
            d.stop().await;
            bail!("noroshi did not become ready within 60 s:\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listening_address_from_text_or_json_logs() {
        let text =
            "2026-11-28T06:16:26Z  INFO Noroshi is listening bind=127.0.0.1:41703 channels=[]";
        assert_eq!(super::listening_address(text), Some("127.0.0.1:41703"));
        let json = "{\"level\":\"INFO\"}\n{\"bind\":\"127.0.0.1:41703\",\"channels\":\"[]\",\"message\":\"Noroshi is listening\"}";
        assert_eq!(super::listening_address(json), Some("127.0.0.1:41703"));
        assert_eq!(super::listening_address("Database ready"), None);
    }
}
