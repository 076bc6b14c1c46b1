//! Configuration: one TOML file, `NOROSHI__…` environment overrides, `KEY_env`/`KEY_file`
//! secrets, unknown keys refused, and pure validation (`check-config`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use noroshi_channel_core::SecretString;
use serde::Deserialize;

/// The whole daemon configuration. Every section and key has a default, so an empty file
/// (or none at all) is a working single-machine setup.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener and public addresses.
    pub server: ServerConfig,
    /// Where announcements and the queue are kept.
    pub database: DatabaseConfig,
    /// API bearer tokens.
    pub auth: AuthConfig,
    /// Queue behaviour: leases, retries, polling.
    pub queue: QueueConfig,
    /// One section per channel adapter.
    pub channels: ChannelsConfig,
    /// Disaster desk settings (confirmation, drill marker).
    pub disaster: DisasterConfig,
    /// CAP 1.2 intake.
    pub cap: CapConfig,
    /// Recurring posts.
    pub schedules: SchedulesConfig,
    /// Reach collection.
    pub reach: ReachConfig,
    /// KPI targets from the city plan, by fiscal year.
    pub kpi: Vec<KpiConfig>,
    /// Log output.
    pub log: LogConfig,
    /// What submitted URLs may make the daemon reach.
    pub security: SecurityConfig,
    /// The web console.
    pub console: ConsoleConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port the public routes (`/site/`, `/unsubscribe`, `/webhooks/line`,
    /// `/healthz`, `/readyz`) listen on, and the API too unless `admin_bind` is set.
    pub bind: String,
    /// When set, the API (`/api/v1/…`) and `/metrics` listen here instead of on `bind`
    /// (for example an internal address), and `bind` serves only the public routes.
    pub admin_bind: Option<String>,
    /// The address residents and staff reach this daemon at, used in unsubscribe links.
    /// Default: `http://{bind}/`.
    pub public_url: Option<String>,
    /// Directory for the SQLite file's neighbours: the first-start admin token, site files.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes (larger: `413`).
    pub body_limit_bytes: usize,
    /// The longest one request to a platform (LINE, X, Graph, a webhook, an image fetch)
    /// may take, in milliseconds. A send that times out after it left is uncertain and is
    /// checked before any resend.
    pub platform_timeout_ms: u64,
    /// How long a client may take to send its whole request (then `408`, nothing stored).
    pub request_timeout_secs: u64,
    /// On SIGTERM, how long sends already on the wire may take to finish (attempts that
    /// had not started are given back at once). After it, they are stopped and their
    /// deliveries marked uncertain.
    pub shutdown_grace_secs: u64,
    /// One-click unsubscribe POSTs allowed per client address and minute (it is
    /// unauthenticated and writes); more get `429` with `Retry-After`.
    pub unsubscribe_per_minute: u32,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` is believed: addresses or
    /// networks (`"127.0.0.1"`, `"10.0.0.0/8"`). From anyone else those headers are
    /// ignored and the socket's address is the client's.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// A client must send a request's headers within this many seconds of opening the
    /// connection, and a kept-alive connection must start its next request within it (the
    /// idle keep-alive timeout), else the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Requests per client address and minute on `/site/` and the unsubscribe page (more:
    /// `429` with `Retry-After`).
    pub site_per_minute: u32,
    /// Requests per client address and minute on `/webhooks/line`.
    pub webhook_per_minute: u32,
    /// API requests per token and minute (requests without a valid token: per client
    /// address). More get `429` problem+json with `Retry-After`.
    pub api_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            admin_bind: None,
            public_url: None,
            data_dir: PathBuf::from("data"),
            body_limit_bytes: 1024 * 1024,
            platform_timeout_ms: 20_000,
            request_timeout_secs: 30,
            shutdown_grace_secs: 30,
            unsubscribe_per_minute: 20,
            max_connections: 1024,
            trusted_proxies: Vec::new(),
            header_read_timeout_secs: 10,
            site_per_minute: 600,
            webhook_per_minute: 600,
            api_per_minute: 1200,
        }
    }
}

/// A reverse proxy's address or network, as `server.trusted_proxies` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedProxy(pub ipnet::IpNet);

impl TrustedProxy {
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(TrustedProxy)
            .map_err(|_| format!("`{s}` is not an address or network (10.0.0.0/8)"))
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl ServerConfig {
    /// The public base URL, always ending in `/`.
    pub fn public_base_url(&self) -> String {
        let url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}/", self.bind));
        if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (embedded, the default) or `postgres://user@host/db`.
    pub url: String,
    /// Connections in the pool. On SQLite, writes go through one more connection of their
    /// own (its page cache and prepared statements stay warm; `store::Db`).
    pub max_connections: u32,
    /// SQLite only: the largest the database may grow, in pages (4 KiB each); unset = no
    /// limit. Reaching it behaves like a full disk: writes are refused with `503`
    /// `storage-full` until space is freed, and the daemon recovers by itself.
    pub sqlite_max_page_count: Option<u64>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/noroshi.db".into(),
            max_connections: 10,
            sqlite_max_page_count: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API bearer tokens. With none configured, the first start creates an admin token.
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token (shown in the audit trail as `created_by`).
    pub name: String,
    /// viewer | staff | disaster | admin
    pub role: String,
    /// SHA-256 of the token, lowercase hex.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The plain token (use `token_env` or `token_file`, never inline in a committed file).
    #[serde(default)]
    pub token: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a claimed delivery stays leased; renewed while the attempt runs. A crashed
    /// worker's deliveries are reclaimed after this.
    pub lease_secs: u64,
    /// Attempts before a delivery fails for good (rate-limit waits do not count).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with full jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_secs: u64,
    /// Fallback poll when no wake-up arrives (another instance inserted work).
    pub poll_interval_ms: u64,
    /// Default share of each channel's workers and rate kept for disaster deliveries.
    pub disaster_reserve: f64,
    /// Default number of disaster sends each channel lets go at once, whatever normal work
    /// has used of its rate (also the least number of workers reserved for them).
    pub disaster_burst: u32,
    /// Email subscribers expanded into deliveries per batch.
    pub expand_batch: u32,
    /// Delivery attempts older than this many days are pruned (in batches of 1,000 a
    /// heartbeat); announcements, each channel's outcome and reach are kept. 0 keeps all.
    pub log_retention_days: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_secs: 60,
            max_attempts: 8,
            retry_base_ms: 2_000,
            retry_max_secs: 3_600,
            poll_interval_ms: 1_000,
            disaster_reserve: 0.2,
            disaster_burst: 5,
            expand_batch: 500,
            log_retention_days: 400,
        }
    }
}

/// `[channels]`: one section per channel adapter, each implementing
/// [`noroshi_channel_core::ChannelConfig`]. [`crate::registry::sections`] lists every one of
/// them once; validation, the build and the channel names all walk that list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// LINE Messaging API.
    pub line: noroshi_line::Config,
    /// X API v2.
    pub x: noroshi_x::Config,
    /// A Facebook Page through the Graph API.
    pub facebook: noroshi_facebook::Config,
    /// Email to subscribers over SMTP.
    pub email: noroshi_email::Config,
    /// The city website: pages, index, Atom and RSS feeds under `output_dir`.
    pub website: noroshi_website::Config,
    /// Generic webhooks, any number, by name: `[channels.webhook.cms]`.
    pub webhook: BTreeMap<String, noroshi_webhook::Config>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisasterConfig {
    /// `none` or `second_person` (a live disaster announcement waits for a second user).
    pub confirm: String,
    /// Marker put at the start of every drill's output.
    pub exercise_marker: String,
    /// While a live alert is active (disaster mode), these channels send nothing but live
    /// disaster work; normal, urgent and scheduled posts and drills wait until it ends.
    pub pause_channels: Vec<String>,
    /// Named templates in the official wording (`NAME.toml` each). Unset: `config/templates`
    /// when that directory exists, else none.
    pub templates_dir: Option<PathBuf>,
}

impl Default for DisasterConfig {
    fn default() -> Self {
        DisasterConfig {
            confirm: "none".into(),
            exercise_marker: "【訓練】".into(),
            pause_channels: vec!["line".into(), "x".into(), "facebook".into()],
            templates_dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapConfig {
    /// CAP `sender` values whose alerts skip second-person confirmation.
    pub trusted_senders: Vec<String>,
    /// The `sender` of the CAP messages Noroshi writes for disaster announcements submitted
    /// through the API (e.g. `bousai@city.suzaka.nagano.jp`). Default: `noroshi@` and the
    /// public URL's host.
    pub sender: Option<String>,
    /// Their `senderName` (e.g. 須坂市). Default: the website's `site_author`.
    pub sender_name: Option<String>,
    /// CAP Atom feeds to poll (a prefecture's, a weather service's); their new alerts are
    /// taken as `POST /api/v1/cap` takes one.
    pub feeds: Vec<String>,
    /// Seconds between polls of each feed (conditional GETs).
    pub feed_poll_secs: u64,
    /// The channels CAP alerts go to (default: every enabled channel).
    pub channels: Option<Vec<String>>,
}

impl Default for CapConfig {
    fn default() -> Self {
        CapConfig {
            trusted_senders: Vec::new(),
            sender: None,
            sender_name: None,
            feeds: Vec::new(),
            feed_poll_secs: 60,
            channels: None,
        }
    }
}

/// `[schedules]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulesConfig {
    /// Japanese public holidays (the Cabinet Office's `syukujitsu.csv`, `YYYY/M/D,name`).
    /// Unset: `config/holidays.csv` when it exists.
    pub holidays_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReachConfig {
    /// When reach is collected (5-field crontab, Asia/Tokyo).
    pub schedule: String,
}

impl Default for ReachConfig {
    fn default() -> Self {
        ReachConfig {
            schedule: "0 * * * *".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiConfig {
    /// Name shown in reports.
    pub name: String,
    /// The measured metric, e.g. `x.followers_count + facebook.followers_count`.
    pub metric: String,
    /// The plan's target value.
    pub target: f64,
    /// The plan's starting value.
    #[serde(default)]
    pub baseline: Option<f64>,
    /// Japanese fiscal year (April–March) the target is for, e.g. 2026.
    pub fiscal_year: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (human text when standard output is a terminal, JSON otherwise), `human` or
    /// `json` (one object per line, every field at the top level, the API request id as
    /// `request_id` on each line about that announcement's deliveries).
    pub format: String,
    /// A tracing filter, e.g. `info` or `noroshi=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "auto".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Fetch announcement images from loopback, private (RFC 1918), link-local, CGNAT,
    /// unique-local and other non-public addresses too. Off: such an image is refused when
    /// submitted (a literal address, `422` naming `images[i]`) or when fetched (a name that
    /// resolves to one). Only for test setups whose fakes run on 127.0.0.1.
    pub allow_private_fetch: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// `none` (default): staff posts go out as they are sent. `staff`: a post from the staff
    /// role (console or API) waits in `awaiting_approval` until someone else with the staff
    /// role or higher approves it, or returns it with a comment. Disaster and admin posts
    /// never wait for approval (live alerts have second-person confirmation instead).
    pub approval: Approval,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    #[default]
    None,
    Staff,
}

/// A config that was read, with what its secrets' sources said.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub source: Option<PathBuf>,
    /// `KEY_env` variables that were named but not set: (`channels.line.channel_access_token`,
    /// `LINE_CHANNEL_ACCESS_TOKEN`).
    pub unset_secrets: Vec<(String, String)>,
}

/// Secrets with a conventional environment variable when nothing else names a source.
const DEFAULT_SECRET_ENVS: &[(&str, &str, &str)] = &[
    ("line", "channel_access_token", "LINE_CHANNEL_ACCESS_TOKEN"),
    ("line", "channel_secret", "LINE_CHANNEL_SECRET"),
    ("facebook", "page_access_token", "FACEBOOK_PAGE_TOKEN"),
];

/// Reads the config: `path`, else `config/noroshi.toml` when it exists, else defaults;
/// then `NOROSHI__…` overrides; then secret sources. Errors name the offending key.
pub fn load(path: Option<&Path>) -> Result<Loaded, String> {
    load_with_env(path, std::env::vars())
}

pub fn load_with_env(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, String> {
    let source = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from("config/noroshi.toml")).filter(|p| p.exists()),
    };
    let mut table = match &source {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
            toml::from_str::<toml::Table>(&text)
                .map_err(|e| format!("config file {} is not valid TOML: {e}", p.display()))?
        }
        None => toml::Table::new(),
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    apply_env_overrides(&mut table, &env)?;
    for (channel, key, var) in DEFAULT_SECRET_ENVS {
        let section = table
            .entry("channels")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(channels) = section.as_table_mut() {
            let s = channels
                .entry(channel.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let Some(s) = s.as_table_mut() {
                let named = [key.to_string(), format!("{key}_env"), format!("{key}_file")];
                if !named.iter().any(|k| s.contains_key(k)) {
                    s.insert(format!("{key}_env"), toml::Value::String(var.to_string()));
                }
            }
        }
    }
    default_website_base_url(&mut table);
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut unset_secrets = Vec::new();
    resolve_secrets(&mut table, "", &lookup, &mut unset_secrets)?;
    let mut config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            format!(
                "config key `{path}`: {}",
                without_values(&e.into_inner().to_string())
            )
        })?;
    // The adapters that fetch submitted images learn `[security]` through their config.
    config.channels.x.image_fetch = noroshi_channel_core::fetch::FetchPolicy {
        allow_private: config.security.allow_private_fetch,
        timeout: std::time::Duration::from_millis(config.server.platform_timeout_ms),
    };
    Ok(Loaded {
        config,
        source,
        unset_secrets,
    })
}

/// Unless `channels.website.base_url` is set, the site lives under this daemon's own public
/// address (`server.public_url`, else `http://{server.bind}/`) at `site/`.
fn default_website_base_url(table: &mut toml::Table) {
    let server = table.get("server").and_then(|s| s.as_table());
    let public = server
        .and_then(|s| s.get("public_url"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let bind = server
        .and_then(|s| s.get("bind"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let base = match (public, bind) {
        (Some(p), _) => format!("{}/site/", p.trim_end_matches('/')),
        (None, Some(b)) => format!("http://{b}/site/"),
        (None, None) => return,
    };
    let channels = table
        .entry("channels")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    if let Some(channels) = channels.as_table_mut() {
        let site = channels
            .entry("website")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(site) = site.as_table_mut() {
            site.entry("base_url").or_insert(toml::Value::String(base));
        }
    }
}

/// `NOROSHI__CHANNELS__LINE__ENABLED=true` sets `channels.line.enabled`. Values are read as
/// TOML scalars (`true`, `42`, `0.5`, `["a"]`) when they parse, else as strings.
fn apply_env_overrides(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), String> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("NOROSHI__") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("environment variable {name}: empty key segment"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut cursor = &mut *table;
        for segment in &path[..path.len() - 1] {
            let entry = cursor
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            cursor = entry.as_table_mut().ok_or_else(|| {
                format!("environment variable {name}: `{segment}` is not a section")
            })?;
        }
        cursor.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

/// Settings whose names end in `_file` but which are paths, not secret references.
const PATH_SETTINGS: &[&str] = &["holidays_file"];

/// Replaces every `KEY_env = "VAR"` with `KEY = $VAR` and `KEY_file = "path"` with the
/// file's content (one trailing newline removed). A named variable that is unset leaves
/// `KEY` unset and is remembered, so validation can say which variable to set.
fn resolve_secrets(
    table: &mut toml::Table,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match table.get_mut(&key) {
            Some(toml::Value::Table(inner)) => resolve_secrets(inner, &path, lookup, unset)?,
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        resolve_secrets(inner, &format!("{path}[{i}]"), lookup, unset)?;
                    }
                }
            }
            _ => {}
        }
        if PATH_SETTINGS.contains(&key.as_str()) {
            continue;
        }
        let (base, is_env) = if let Some(b) = key.strip_suffix("_env") {
            (b.to_string(), true)
        } else if let Some(b) = key.strip_suffix("_file") {
            (b.to_string(), false)
        } else {
            continue;
        };
        let Some(toml::Value::String(reference)) = table.get(&key).cloned() else {
            return Err(format!("config key `{path}`: must be a string"));
        };
        let base_path = path[..path.len() - key.len()].to_string() + &base;
        if table.contains_key(&base) {
            return Err(format!(
                "config key `{base_path}`: give the secret once (`{base}`, `{base}_env` or `{base}_file`)"
            ));
        }
        table.remove(&key);
        let value = if is_env {
            match lookup(&reference) {
                Some(v) if !v.is_empty() => Some(v),
                _ => {
                    unset.push((base_path.clone(), reference.clone()));
                    None
                }
            }
        } else {
            let text = std::fs::read_to_string(&reference).map_err(|e| {
                format!("config key `{path}`: cannot read secret file {reference}: {e}")
            })?;
            Some(
                text.strip_suffix('\n')
                    .unwrap_or(&text)
                    .trim_end_matches('\r')
                    .to_string(),
            )
        };
        if let Some(v) = value {
            table.insert(base, toml::Value::String(v));
        }
    }
    Ok(())
}

/// Serde quotes the offending value ("invalid type: integer `12345`, expected a string");
/// for a secret given in the wrong form that value is the secret, so values are left out.
fn without_values(message: &str) -> String {
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let mut out = String::new();
        for (i, part) in message.split('`').enumerate() {
            out.push_str(if i % 2 == 1 {
                "(value not shown)"
            } else {
                part
            });
        }
        out
    } else {
        message.to_string()
    }
}

/// A problem found by validation, with the full key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub const ROLES: &[&str] = &["viewer", "staff", "disaster", "admin"];

/// Pure validation (no I/O): every problem, each naming its key.
pub fn validate(loaded: &Loaded) -> Vec<Problem> {
    let c = &loaded.config;
    let mut problems = Vec::new();
    let mut push = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            message,
        })
    };
    if c.server.bind.parse::<std::net::SocketAddr>().is_err() {
        push(
            "server.bind",
            format!("`{}` is not an address:port", c.server.bind),
        );
    }
    if let Some(admin) = &c.server.admin_bind {
        match admin.parse::<std::net::SocketAddr>() {
            Err(_) => push(
                "server.admin_bind",
                format!("`{admin}` is not an address:port"),
            ),
            Ok(a) if a.port() != 0 && Some(a) == c.server.bind.parse().ok() => push(
                "server.admin_bind",
                "must differ from server.bind (leave it unset to serve everything on bind)".into(),
            ),
            Ok(_) => {}
        }
    }
    if let Some(url) = &c.server.public_url {
        if url::Url::parse(url).is_err() {
            push("server.public_url", format!("`{url}` is not a URL"));
        }
    }
    if c.server.body_limit_bytes < 1024 {
        push("server.body_limit_bytes", "must be at least 1024".into());
    }
    if !(1..=100_000).contains(&c.server.max_connections) {
        push(
            "server.max_connections",
            "must be between 1 and 100000".into(),
        );
    }
    if !(1..=300).contains(&c.server.header_read_timeout_secs) {
        push(
            "server.header_read_timeout_secs",
            "must be between 1 and 300".into(),
        );
    }
    for (key, value) in [
        (
            "server.unsubscribe_per_minute",
            c.server.unsubscribe_per_minute,
        ),
        ("server.site_per_minute", c.server.site_per_minute),
        ("server.webhook_per_minute", c.server.webhook_per_minute),
        ("server.api_per_minute", c.server.api_per_minute),
    ] {
        if !(1..=1_000_000).contains(&value) {
            push(key, "must be between 1 and 1000000".into());
        }
    }
    if !(1..=600).contains(&c.server.shutdown_grace_secs) {
        push(
            "server.shutdown_grace_secs",
            "must be between 1 and 600".into(),
        );
    }
    if !(1..=600).contains(&c.server.request_timeout_secs) {
        push(
            "server.request_timeout_secs",
            "must be between 1 and 600".into(),
        );
    }
    if !(100..=300_000).contains(&c.server.platform_timeout_ms) {
        push(
            "server.platform_timeout_ms",
            "must be between 100 and 300000 (5 minutes)".into(),
        );
    }
    if !(c.database.url.starts_with("sqlite:")
        || c.database.url.starts_with("postgres://")
        || c.database.url.starts_with("postgresql://"))
    {
        push(
            "database.url",
            "must start with sqlite:// or postgres://".into(),
        );
    }
    for (i, t) in c.auth.tokens.iter().enumerate() {
        let key = format!("auth.tokens[{i}]");
        if !ROLES.contains(&t.role.as_str()) {
            push(
                &format!("{key}.role"),
                format!("`{}` is not one of viewer, staff, disaster, admin", t.role),
            );
        }
        match (&t.token_sha256, &t.token) {
            (Some(h), None) => {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    push(
                        &format!("{key}.token_sha256"),
                        "must be 64 hex digits (SHA-256)".into(),
                    );
                }
            }
            (None, Some(_)) => {}
            (Some(_), Some(_)) => push(
                &format!("{key}.token"),
                "give token_sha256 or token (token_env / token_file), not both".into(),
            ),
            (None, None) => {
                let hint = unset_hint(loaded, &format!("{key}.token"));
                push(
                    &format!("{key}.token_sha256"),
                    format!("missing: give token_sha256, token_env or token_file{hint}"),
                );
            }
        }
    }
    let q = &c.queue;
    if q.lease_secs < 5 {
        push("queue.lease_secs", "must be at least 5".into());
    }
    if q.max_attempts == 0 {
        push("queue.max_attempts", "must be at least 1".into());
    }
    if !(0.0..=0.9).contains(&q.disaster_reserve) {
        push(
            "queue.disaster_reserve",
            "must be between 0.0 and 0.9".into(),
        );
    }
    if q.disaster_burst == 0 || q.disaster_burst > 100 {
        push("queue.disaster_burst", "must be between 1 and 100".into());
    }
    if q.expand_batch == 0 || q.expand_batch > 10_000 {
        push("queue.expand_batch", "must be between 1 and 10000".into());
    }
    if !["none", "second_person"].contains(&c.disaster.confirm.as_str()) {
        push(
            "disaster.confirm",
            format!("`{}` is not one of none, second_person", c.disaster.confirm),
        );
    }
    if let Err(e) = crate::schedule::Cron::parse(&c.reach.schedule) {
        push("reach.schedule", e);
    }
    if c.disaster.exercise_marker.trim().is_empty() {
        push(
            "disaster.exercise_marker",
            "must not be blank: every drill's output starts with it (e.g. 【訓練】 or [EXERCISE])"
                .into(),
        );
    }
    for (i, feed) in c.cap.feeds.iter().enumerate() {
        if !url::Url::parse(feed).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            push(
                &format!("cap.feeds[{i}]"),
                format!("`{feed}` is not an http(s) URL"),
            );
        }
    }
    if !(1..=86_400).contains(&c.cap.feed_poll_secs) {
        push("cap.feed_poll_secs", "must be between 1 and 86400".into());
    }
    for (i, name) in c.disaster.pause_channels.iter().enumerate() {
        if !crate::registry::known_channel_names(&c.channels).contains(name) {
            push(
                &format!("disaster.pause_channels[{i}]"),
                format!("`{name}` is not a channel"),
            );
        }
    }
    if !["auto", "human", "json"].contains(&c.log.format.as_str()) {
        push(
            "log.format",
            format!("`{}` is not one of auto, human, json", c.log.format),
        );
    }
    let ch = &c.channels;
    // Each enabled channel's own checks, walked from the registry's one list of sections.
    for p in crate::registry::validate_channels(ch) {
        let hint = unset_hint(loaded, &p.key);
        push(&p.key, format!("{}{hint}", p.message));
    }
    for name in ch.webhook.keys() {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            push(
                &format!("channels.webhook.{name}"),
                "instance names use letters, digits, - and _".into(),
            );
        }
    }
    problems
}

fn unset_hint(loaded: &Loaded, key: &str) -> String {
    loaded
        .unset_secrets
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, var)| format!(" (environment variable {var} is not set)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Loaded, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noroshi.toml");
        std::fs::write(&path, text).unwrap();
        load_with_env(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_match_the_contract() {
        let loaded = load_str("", &[]).unwrap();
        let c = &loaded.config;
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.database.url, "sqlite://data/noroshi.db");
        assert!(c.channels.website.enabled);
        assert!(!c.channels.line.enabled && !c.channels.x.enabled && !c.channels.email.enabled);
        assert!(validate(&loaded).is_empty(), "{:?}", validate(&loaded));
    }

    #[test]
    fn security_reaches_the_image_fetching_adapters() {
        let c = load_str("", &[]).unwrap().config;
        assert!(!c.security.allow_private_fetch);
        assert!(!c.channels.x.image_fetch.allow_private);
        let c = load_str(
            "[server]\nplatform_timeout_ms = 7000\n[security]\nallow_private_fetch = true\n",
            &[],
        )
        .unwrap()
        .config;
        assert!(c.security.allow_private_fetch);
        assert!(c.channels.x.image_fetch.allow_private);
        assert_eq!(
            c.channels.x.image_fetch.timeout,
            std::time::Duration::from_millis(7000)
        );
        let c = load_str("", &[("NOROSHI__SECURITY__ALLOW_PRIVATE_FETCH", "true")])
            .unwrap()
            .config;
        assert!(c.channels.x.image_fetch.allow_private);
        let err = load_str("[security]\nallow_private = true\n", &[]).unwrap_err();
        assert!(err.contains("security"), "{err}");
        // Not a key of [channels.x]: only [security] sets it.
        let err = load_str("[channels.x]\nimage_fetch = true\n", &[]).unwrap_err();
        assert!(err.contains("image_fetch"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let err = load_str("[channels.line]\nenabeld = true\n", &[]).unwrap_err();
        assert!(err.contains("channels.line"), "{err}");
        assert!(err.contains("enabeld"), "{err}");
        let err = load_str("[server]\nbnd = \"x\"\n", &[]).unwrap_err();
        assert!(err.contains("bnd"), "{err}");
    }

    #[test]
    fn environment_overrides_reach_nested_keys() {
        let loaded = load_str(
            "[server]\nbind = \"127.0.0.1:1\"\n",
            &[
                ("NOROSHI__SERVER__BIND", "0.0.0.0:9000"),
                ("NOROSHI__QUEUE__MAX_ATTEMPTS", "3"),
                ("NOROSHI__CHANNELS__WEBSITE__ENABLED", "false"),
            ],
        )
        .unwrap();
        assert_eq!(loaded.config.server.bind, "0.0.0.0:9000");
        assert_eq!(loaded.config.queue.max_attempts, 3);
        assert!(!loaded.config.channels.website.enabled);
    }

    #[test]
    fn secrets_come_from_env_and_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "file-secret-123\n").unwrap();
        let text = format!(
            "[[auth.tokens]]\nname = \"a\"\nrole = \"admin\"\ntoken_file = \"{}\"\n\
             [[auth.tokens]]\nname = \"b\"\nrole = \"staff\"\ntoken_env = \"B_TOKEN\"\n",
            file.display()
        );
        let loaded = load_str(&text, &[("B_TOKEN", "env-secret-456")]).unwrap();
        use noroshi_channel_core::ExposeSecret;
        let t = &loaded.config.auth.tokens;
        assert_eq!(
            t[0].token.as_ref().unwrap().expose_secret(),
            "file-secret-123"
        );
        assert_eq!(
            t[1].token.as_ref().unwrap().expose_secret(),
            "env-secret-456"
        );
        let debug = format!("{:?}", loaded.config);
        assert!(!debug.contains("file-secret-123") && !debug.contains("env-secret-456"));
    }

    #[test]
    fn an_unset_secret_variable_is_named_when_the_channel_needs_it() {
        let loaded = load_str("[channels.line]\nenabled = true\n", &[]).unwrap();
        let problems = validate(&loaded);
        assert!(
            problems.iter().any(|p| p.key.starts_with("channels.line")
                && p.message.contains("LINE_CHANNEL_ACCESS_TOKEN")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_secret_in_the_wrong_form_is_not_printed() {
        let err = load_str(
            "[channels.email]\n",
            &[("NOROSHI__CHANNELS__EMAIL__PASSWORD", "31415926")],
        )
        .unwrap_err();
        assert!(err.contains("channels.email.password"), "{err}");
        assert!(!err.contains("31415926"), "{err}");
    }

    /// A setting that is a path and happens to end in `_file` is not a secret reference.
    #[test]
    fn holidays_file_is_a_path_not_a_secret() {
        let loaded = load_str(
            "[schedules]\nholidays_file = \"/etc/noroshi/syukujitsu.csv\"\n",
            &[],
        )
        .expect("holidays_file is a setting");
        assert_eq!(
            loaded.config.schedules.holidays_file.as_deref(),
            Some(std::path::Path::new("/etc/noroshi/syukujitsu.csv"))
        );
    }

    /// A Facebook Page id set through the environment is a run of digits, which TOML reads
    /// as an integer: it is still the Page id.
    #[test]
    fn a_numeric_page_id_from_the_environment_is_the_page_id() {
        let loaded = load_str(
            "",
            &[
                ("NOROSHI__CHANNELS__FACEBOOK__PAGE_ID", "102030405060708"),
                (
                    "NOROSHI__CHANNELS__FACEBOOK__EXERCISE_TARGET",
                    "908070605040302",
                ),
            ],
        )
        .unwrap();
        let fb = &loaded.config.channels.facebook;
        assert_eq!(fb.page_id, "102030405060708");
        assert_eq!(fb.exercise_target.as_deref(), Some("908070605040302"));
        for wrong in ["true", "-5", "1.5"] {
            let err =
                load_str(&format!("[channels.facebook]\npage_id = {wrong}\n"), &[]).unwrap_err();
            assert!(err.contains("page_id"), "{wrong}: {err}");
        }
    }

    /// A drill must never look like a live alert: its marker cannot be blank.
    #[test]
    fn a_blank_exercise_marker_is_refused() {
        for marker in ["", "   ", "\u{3000}"] {
            let loaded = load_str(
                &format!("[disaster]\nexercise_marker = \"{marker}\"\n"),
                &[],
            )
            .unwrap();
            let keys: Vec<String> = validate(&loaded).into_iter().map(|p| p.key).collect();
            assert_eq!(keys, ["disaster.exercise_marker"], "{marker:?}");
        }
        let loaded = load_str("[disaster]\nexercise_marker = \"[EXERCISE]\"\n", &[]).unwrap();
        assert!(validate(&loaded).is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let loaded = load_str(
            "[server]\nbind = \"nowhere\"\n[[auth.tokens]]\nname = \"x\"\nrole = \"boss\"\ntoken_sha256 = \"abc\"\n",
            &[],
        )
        .unwrap();
        let keys: Vec<String> = validate(&loaded).into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"server.bind".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"auth.tokens[0].role".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"auth.tokens[0].token_sha256".to_string()),
            "{keys:?}"
        );
        let loaded = load_str(
            "[server]\nbind = \"127.0.0.1:8080\"\nadmin_bind = \"127.0.0.1:8080\"\napi_per_minute = 0\n",
            &[],
        )
        .unwrap();
        let keys: Vec<String> = validate(&loaded).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["server.admin_bind", "server.api_per_minute"]);
        // A proxy list entry that is neither an address nor a network is refused by name.
        let err = load_str(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.lan\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("trusted_proxies") && err.contains("proxy.lan"),
            "{err}"
        );
    }

    #[test]
    fn the_example_config_parses_and_covers_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/noroshi.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = load_with_env(Some(&path), Vec::new()).unwrap();
        assert!(loaded.source.is_some());
        for section in [
            "[server]",
            "[database]",
            "[[auth.tokens]]",
            "[queue]",
            "[channels.line]",
            "[channels.x]",
            "[channels.facebook]",
            "[channels.email]",
            "[channels.website]",
            "[channels.webhook.",
            "[disaster]",
            "[cap]",
            "[reach]",
            "[[kpi]]",
            "[log]",
            "[security]",
            ".delivery]",
        ] {
            assert!(text.contains(section), "example config lacks {section}");
        }
    }
}
