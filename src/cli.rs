//! The `noroshi` command: `serve`, `migrate`, `check-config`, the operator's `healthcheck`
//! and `backup`, and the thin API clients `send` and `status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config;

/// `noroshi --version`: the crate's version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("NOROSHI_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "noroshi",
    version = VERSION,
    about = "Announce once, reach every channel (LINE, X, Facebook, email, website)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: HTTP API, site, queue workers.
    Serve(ConfigArg),
    /// Apply database migrations and exit.
    Migrate(ConfigArg),
    /// Validate the configuration; name every problem with its key.
    CheckConfig(ConfigArg),
    /// Submit an announcement through the HTTP API.
    Send(SendArgs),
    /// Show an announcement's per-channel delivery state, or, without an id, every channel's.
    Status(StatusArgs),
    /// Console users: `noroshi user add NAME --role admin` (the password is read from the
    /// terminal, or from `--password-file`; never from an argument).
    #[command(subcommand)]
    User(UserCommand),
    /// Ask a running daemon whether it is ready (`GET /readyz`): exit 0 when it answers
    /// `200`, else 1 with the reason. For container health checks and monitors.
    Healthcheck(HealthcheckArgs),
    /// Copy the SQLite database into a new file while the daemon runs (`VACUUM INTO`: one
    /// consistent snapshot, mode 0600). On PostgreSQL use `pg_dump` (docs/deployment.md).
    Backup(BackupArgs),
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The address to ask (default: `/readyz` on `server.bind` from the configuration; an
    /// unspecified bind address such as 0.0.0.0 is asked on loopback).
    #[arg(long)]
    url: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct BackupArgs {
    /// The new file to write; an existing file is never overwritten.
    #[arg(long)]
    to: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a console user, or set the role and password of an existing one.
    Add(UserAddArgs),
}

#[derive(Args)]
struct UserAddArgs {
    /// The sign-in name.
    name: String,
    /// viewer | staff | disaster | admin
    #[arg(long)]
    role: String,
    /// Read the password from this file (its first line) instead of the terminal.
    #[arg(long)]
    password_file: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct ConfigArg {
    /// Config file (default: config/noroshi.toml when present, else built-in defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// The daemon's address.
    #[arg(long, env = "NOROSHI_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API bearer token (default: $NOROSHI_TOKEN, else data/admin.token).
    #[arg(long, env = "NOROSHI_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct SendArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Headline.
    #[arg(long)]
    title: Option<String>,
    /// Text; `-` reads it from standard input.
    #[arg(long)]
    body: Option<String>,
    /// A whole submission as a JSON file (`-` for standard input); flags given too override it.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    link: Option<String>,
    /// normal | urgent | disaster
    #[arg(long)]
    priority: Option<String>,
    /// A channel to use (repeat); default every enabled channel.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// RFC 3339 time to publish at, e.g. 2026-12-01T09:00:00+09:00.
    #[arg(long)]
    scheduled_at: Option<String>,
    /// A department or campaign tag (repeat).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Mark as a drill (訓練).
    #[arg(long)]
    exercise: bool,
    /// Idempotency-Key: retrying the same command never posts twice.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow each channel's progress until the fan-out ends; exit non-zero if any failed.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Announcement id; without one, the state of every channel.
    id: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The runtime's threads are scheduled as `SCHED_BATCH` (Linux; any user may choose it, and
/// it changes no priority): a runtime thread that is woken does not preempt the thread
/// running on its core, it runs when that one blocks or its time slice ends. sqlx runs each
/// SQLite connection on a thread of its own and hands every statement and every result
/// across a channel whose lock is held while it wakes the other side; on a busy core the
/// woken runtime thread preempted the SQLite thread inside that lock, found it locked,
/// slept, and was woken again: with the daemon on one core, context switches took about a
/// third of its CPU before and about a seventh after (docs/PERFORMANCE.md). Other threads (SQLite's, other
/// processes') keep the default policy.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call about the calling thread (0), with a valid parameter
        // that outlives it. A refusal (a seccomp filter, say) leaves the default policy.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

/// glibc's malloc serves only C code here (SQLite; Rust allocates through mimalloc). It opens
/// a new arena whenever a thread finds its arena busy, and each arena keeps what it freed:
/// with the runtime's threads as `SCHED_BATCH` the SQLite threads meet more often, and the
/// resident memory with 1,000,000 queued deliveries went from 77 to 112-129 MB. With one
/// arena it is about 80 MB (two: 93 MB) at the same CPU per delivery (docs/PERFORMANCE.md).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: sets a glibc malloc parameter before any thread is started; a refusal
        // leaves glibc's default.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

pub fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(batch_scheduling)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("noroshi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Migrate(a) => migrate(a).await,
            Command::CheckConfig(a) => check_config(a),
            Command::Send(a) => send(a).await,
            Command::Status(a) => status(a).await,
            Command::User(UserCommand::Add(a)) => user_add(a).await,
            Command::Healthcheck(a) => healthcheck(a).await,
            Command::Backup(a) => backup(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("noroshi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates; prints every problem. None when the config is unusable.
fn load_checked(path: Option<&std::path::Path>) -> Option<config::Loaded> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("noroshi: {e}");
            return None;
        }
    };
    let problems = config::validate(&loaded);
    if problems.is_empty() {
        Some(loaded)
    } else {
        print_problems(&problems);
        None
    }
}

/// Every problem of a configuration, one per line, on standard error.
fn print_problems(problems: &[impl std::fmt::Display]) {
    eprintln!(
        "noroshi: the configuration has {} problem(s):",
        problems.len()
    );
    for p in problems {
        eprintln!("  {p}");
    }
}

fn check_config(a: ConfigArg) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(a.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("noroshi: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = &loaded.config;
    let mut problems: Vec<String> = config::validate(&loaded)
        .iter()
        .map(ToString::to_string)
        .collect();
    let valid = problems.is_empty();
    // What the start reads from files besides the config, checked as the start checks it.
    if let Err(e) = crate::server::load_holidays(config) {
        problems.push(format!("schedules.holidays_file: {e:#}"));
    }
    crate::server::install_crypto_provider();
    // Build the channels too (still no network I/O): catches what validation alone cannot,
    // and the disaster templates are checked against them. Built only from a valid config.
    let mut enabled = Vec::new();
    if valid {
        let env = noroshi_channel_core::BuildEnv {
            http: crate::server::http_client(config)?,
            data_dir: config.server.data_dir.clone(),
            public_base_url: config.server.public_base_url(),
            clock: std::sync::Arc::new(crate::clock::now),
        };
        match crate::registry::build_channels(&config.channels, &env) {
            Ok(channels) => {
                let built: Vec<_> = channels.iter().map(|c| c.channel.clone()).collect();
                if let Err(e) = crate::server::load_templates(config, &built) {
                    problems.push(format!("disaster.templates_dir: {e:#}"));
                }
                enabled = built.iter().map(|c| c.name().to_string()).collect();
            }
            Err(ps) => problems.extend(ps.iter().map(ToString::to_string)),
        }
    } else if let Some(dir) = crate::server::templates_dir(config) {
        // Not checked against channels here, but whether they load at all.
        if let Err(ps) = crate::desk::templates::Templates::load_dir(&dir) {
            problems.push(format!("disaster.templates_dir: {}", ps.join("; ")));
        }
    }
    if !problems.is_empty() {
        print_problems(&problems);
        return Ok(ExitCode::FAILURE);
    }
    let source = loaded
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults".into());
    println!("Configuration OK ({source}).");
    println!(
        "Database: {}",
        crate::server::redact_url(&config.database.url)
    );
    println!("Channels enabled: {}", enabled.join(", "));
    Ok(ExitCode::SUCCESS)
}

async fn serve(a: ConfigArg) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_checked(a.config.as_deref()) else {
        return Ok(ExitCode::FAILURE);
    };
    crate::server::init_tracing(&loaded.config);
    crate::server::serve(loaded).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(a: ConfigArg) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_checked(a.config.as_deref()) else {
        return Ok(ExitCode::FAILURE);
    };
    crate::server::install_crypto_provider();
    let db = crate::server::open_database(&loaded.config).await?;
    println!("Migrations applied ({}).", db.dialect());
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn user_add(a: UserAddArgs) -> anyhow::Result<ExitCode> {
    if crate::api::auth::Role::parse(&a.role).is_none() {
        eprintln!("noroshi: --role must be viewer, staff, disaster or admin");
        return Ok(ExitCode::FAILURE);
    }
    let password = match &a.password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        None => {
            let first = rpassword::prompt_password(format!("Password for {}: ", a.name))?;
            let again = rpassword::prompt_password("Again: ")?;
            if first != again {
                eprintln!("noroshi: the two passwords differ; nothing was changed");
                return Ok(ExitCode::FAILURE);
            }
            first
        }
    };
    if let Err(why) = crate::console::password_is_acceptable(&password) {
        eprintln!("noroshi: {why}; nothing was changed");
        return Ok(ExitCode::FAILURE);
    }
    let Some(loaded) = load_checked(a.config.config.as_deref()) else {
        return Ok(ExitCode::FAILURE);
    };
    crate::server::install_crypto_provider();
    let db = crate::server::open_database(&loaded.config).await?;
    let hash = crate::console::hash_password(&password)?;
    crate::store::people::upsert_user(&db, &a.name, &a.role, &hash).await?;
    // A new password signs the user out everywhere.
    crate::store::people::end_sessions_of(&db, &a.name).await?;
    println!("User {} ({}) saved.", a.name, a.role);
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `noroshi healthcheck`: one `GET /readyz`, no retries (the caller's schedule retries).
async fn healthcheck(a: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = match a.url {
        Some(url) => url,
        None => {
            let loaded = config::load(a.config.config.as_deref()).map_err(anyhow::Error::msg)?;
            readyz_url(&loaded.config.server.bind)?
        }
    };
    crate::server::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(a.timeout.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = match http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "noroshi: not ready: cannot reach {url}: {}",
                e.without_url()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::OK {
        println!("ready ({url})");
        return Ok(ExitCode::SUCCESS);
    }
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let detail = body["detail"].as_str().unwrap_or("no detail");
    eprintln!("noroshi: not ready: {url} answered {status}: {detail}");
    Ok(ExitCode::FAILURE)
}

/// `http://{bind}/readyz`, asked on loopback when `bind` is an unspecified address.
fn readyz_url(bind: &str) -> anyhow::Result<String> {
    let mut addr: std::net::SocketAddr = bind
        .parse()
        .map_err(|_| anyhow::anyhow!("server.bind `{bind}` is not an address:port"))?;
    if addr.port() == 0 {
        anyhow::bail!("server.bind `{bind}` has port 0 (chosen at start): pass --url");
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{addr}/readyz"))
}

/// `noroshi backup --to FILE`: SQLite's `VACUUM INTO` over a connection of its own. It
/// reads one consistent snapshot while the daemon goes on writing (WAL readers do not block
/// writers), so it takes neither the daemon's lock file nor its write turn.
async fn backup(a: BackupArgs) -> anyhow::Result<ExitCode> {
    use sqlx::{ConnectOptions, Connection};
    let Some(loaded) = load_checked(a.config.config.as_deref()) else {
        return Ok(ExitCode::FAILURE);
    };
    let url = &loaded.config.database.url;
    if !url.starts_with("sqlite:") {
        eprintln!(
            "noroshi: backup copies SQLite databases; this one is PostgreSQL ({}). \
             Back it up with pg_dump: pg_dump -Fc -f noroshi.dump \"$DATABASE_URL\" \
             (restore with pg_restore; see docs/deployment.md)",
            crate::server::redact_url(url)
        );
        return Ok(ExitCode::FAILURE);
    }
    // Created here, empty, 0600 and only if absent (VACUUM INTO accepts an empty file):
    // the copy holds subscribers' addresses, and an existing file is never replaced.
    let file = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&a.to).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} exists; give a new file name", a.to.display())
            }
            _ => anyhow::anyhow!("cannot create {}: {e}", a.to.display()),
        })?
    };
    let copied = async {
        let options = std::str::FromStr::from_str(url)
            .map(|o: sqlx::sqlite::SqliteConnectOptions| o.create_if_missing(false))?;
        let mut conn = options.connect().await?;
        let target = a.to.to_string_lossy().into_owned();
        sqlx::query("VACUUM INTO $1")
            .bind(&target)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        // The copy is a database of its own: check it and say what it holds.
        let mut copy = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&a.to)
            .read_only(true)
            .connect()
            .await?;
        let check: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&mut copy)
            .await?;
        let announcements: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM announcements")
            .fetch_one(&mut copy)
            .await?;
        copy.close().await?;
        anyhow::ensure!(
            check == "ok",
            "the copy fails SQLite's quick_check: {check}"
        );
        // VACUUM INTO does not sync what it wrote.
        file.sync_all()?;
        if let Some(dir) = a.to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        anyhow::Ok(announcements)
    }
    .await;
    match copied {
        Ok(announcements) => {
            println!(
                "Backed up {} to {} ({announcements} announcements).",
                url,
                a.to.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&a.to);
            Err(e.context(format!("backup to {} failed", a.to.display())))
        }
    }
}

struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Client {
    fn new(a: &ClientArgs) -> anyhow::Result<Client> {
        crate::server::install_crypto_provider();
        let token = match &a.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string("data/admin.token")
                .map(|t| t.trim().to_string())
                .map_err(|_| anyhow::anyhow!("no token: pass --token, set NOROSHI_TOKEN, or run where data/admin.token exists"))?,
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            server: a.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends a request; an API problem becomes an error carrying its detail.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
        let resp =
            req.bearer_auth(&self.token).send().await.map_err(|e| {
                anyhow::anyhow!("cannot reach {}: {}", self.server, e.without_url())
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let detail = body
                .get("detail")
                .and_then(|d| d.as_str())
                .unwrap_or("no detail");
            anyhow::bail!("the server refused ({status}): {detail}")
        }
    }

    async fn get_announcement(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.call(
            self.http
                .get(format!("{}/api/v1/announcements/{id}", self.server)),
        )
        .await
    }
}

fn read_arg(value: &str) -> anyhow::Result<String> {
    if value == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        Ok(s)
    } else {
        Ok(value.to_string())
    }
}

async fn send(a: SendArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.client)?;
    let mut body = match &a.json {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                read_arg("-")?
            } else {
                std::fs::read_to_string(path)?
            };
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| anyhow::anyhow!("--json: not valid JSON: {e}"))?
        }
        None => serde_json::json!({}),
    };
    let obj = body
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("--json: must be a JSON object"))?;
    if let Some(t) = &a.title {
        obj.insert("title".into(), t.clone().into());
    }
    if let Some(b) = &a.body {
        obj.insert("body".into(), read_arg(b)?.into());
    }
    if let Some(l) = &a.link {
        obj.insert("link".into(), l.clone().into());
    }
    if let Some(p) = &a.priority {
        obj.insert("priority".into(), p.clone().into());
    }
    if !a.channels.is_empty() {
        obj.insert("channels".into(), a.channels.clone().into());
    }
    if let Some(s) = &a.scheduled_at {
        obj.insert("scheduled_at".into(), s.clone().into());
    }
    if !a.tags.is_empty() {
        obj.insert("tags".into(), a.tags.clone().into());
    }
    if a.exercise {
        obj.insert("exercise".into(), true.into());
    }
    if !obj.contains_key("title") || !obj.contains_key("body") {
        anyhow::bail!("give --title and --body (or --json with both)");
    }
    let mut req = client
        .http
        .post(format!("{}/api/v1/announcements", client.server))
        .json(&body);
    if let Some(k) = &a.idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let accepted = client.call(req).await?;
    let id = accepted["id"].as_str().unwrap_or_default().to_string();
    println!(
        "Accepted {id} ({})",
        accepted["status"].as_str().unwrap_or("")
    );
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
    let mut last: Vec<String> = Vec::new();
    loop {
        let view = client.get_announcement(&id).await?;
        let lines = progress_lines(&view);
        for line in &lines {
            if !last.contains(line) {
                println!("{line}");
            }
        }
        last = lines;
        let status = view["status"].as_str().unwrap_or("");
        match status {
            "sent" => {
                println!("Done: every channel sent.");
                return Ok(ExitCode::SUCCESS);
            }
            "partially_failed" | "failed" | "cancelled" => {
                println!("Done: {status}.");
                return Ok(ExitCode::from(2));
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "noroshi: gave up waiting after {}s; the fan-out goes on (noroshi status {id})",
                a.timeout
            );
            return Ok(ExitCode::from(3));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every channel: enabled, state, why, what waits. Exits 1 when a channel is paused, so a
/// monitoring script can run `noroshi status` as a check.
async fn channel_status(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let channels = client
        .call(
            client
                .http
                .get(format!("{}/api/v1/channels", client.server)),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&channels)?);
    }
    let mut paused = false;
    for c in channels.as_array().cloned().unwrap_or_default() {
        let state = c["state"].as_str().unwrap_or("");
        paused |= c["enabled"] == true && state == "paused";
        if json {
            continue;
        }
        let queue = &c["queue"];
        let waiting = ["disaster", "urgent", "normal"]
            .iter()
            .map(|l| queue[*l].as_i64().unwrap_or(0))
            .sum::<i64>();
        let why = c["reason"]
            .as_str()
            .or_else(|| c["last_error"].as_str())
            .unwrap_or("");
        println!(
            "  {:<14} {:<9} {:<9} {:>6} waiting  {}",
            c["name"].as_str().unwrap_or(""),
            if c["enabled"] == true {
                "enabled"
            } else {
                "disabled"
            },
            state,
            waiting,
            why
        );
    }
    Ok(if paused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn progress_lines(view: &serde_json::Value) -> Vec<String> {
    view["deliveries"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let mut line = format!(
                        "  {:<14} {:<10} {}/{} sent, {} failed",
                        d["channel"].as_str().unwrap_or(""),
                        d["status"].as_str().unwrap_or(""),
                        d["sent"],
                        d["total"],
                        d["failed"]
                    );
                    if let Some(e) = d["last_error"].as_str() {
                        line.push_str(&format!(" — {e}"));
                    }
                    line
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.client)?;
    let Some(id) = &a.id else {
        return channel_status(&client, a.json).await;
    };
    let view = client.get_announcement(id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "{}  {}  [{}{}]  {}",
            view["id"].as_str().unwrap_or(""),
            view["status"].as_str().unwrap_or(""),
            view["priority"].as_str().unwrap_or(""),
            if view["exercise"].as_bool() == Some(true) {
                ", drill"
            } else {
                ""
            },
            view["title"].as_str().unwrap_or("")
        );
        for line in progress_lines(&view) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
