//! `noroshi serve`: wires config, database, channels, dispatcher and HTTP together, and
//! shuts down gracefully.

use crate::status::ChannelState;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use noroshi_channel_core::{BuildEnv, ErrorClass};

use crate::api::auth::{self, Role, Tokens};
use crate::api::{AppState, SharedState};
use crate::config::{Config, Loaded};
use crate::dispatch::{DispatchSettings, Dispatcher};
use crate::store::{self, Db};
use crate::tasks::Tasks;
use crate::{queue, registry};

/// One TLS stack for every client (reqwest, lettre, sqlx): rustls with ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn init_tracing(config: &Config) {
    crate::logging::init(&config.log);
}

pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(
        &config.database.url,
        config.database.max_connections,
        config.database.sqlite_max_page_count,
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the database ({})",
            redact_url(&config.database.url)
        )
    })?;
    db.migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(db)
}

/// A database URL for messages, without its password: the one before `@` and a
/// `password` query parameter (PostgreSQL's driver takes either).
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let in_query = u
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if u.password().is_none() && !in_query {
        return url.to_string();
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    if in_query {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "REDACTED".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The shared HTTP client: rustls (ring), timeouts, no redirects to other hosts' surprise.
pub fn http_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let timeout = Duration::from_millis(config.server.platform_timeout_ms);
    Ok(reqwest::Client::builder()
        .user_agent(concat!("noroshi/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Configured tokens plus the daemon's own; creates the first-start admin token when there
/// are none at all.
async fn load_tokens(config: &Config, db: &Db) -> anyhow::Result<Tokens> {
    use noroshi_channel_core::ExposeSecret;
    let mut tokens = Tokens::default();
    for t in &config.auth.tokens {
        let role = Role::parse(&t.role).context("token role")?;
        match (&t.token_sha256, &t.token) {
            (Some(h), _) => tokens
                .add_digest_hex(&t.name, role, &h.to_ascii_lowercase())
                .map_err(anyhow::Error::msg)?,
            (None, Some(plain)) => tokens.add_plain(&t.name, role, plain.expose_secret()),
            (None, None) => anyhow::bail!("auth.tokens: token {} has no secret", t.name),
        }
    }
    // Tokens created on the console open the API beside configured ones; configured tokens
    // replace the first-start token: it no longer opens anything.
    let own = store::people::stored_tokens(db).await?;
    if !config.auth.tokens.is_empty() && own.iter().any(|t| t.created_by.is_none()) {
        tracing::info!("API tokens are configured; the first-start admin token is disabled");
    }
    tokens.reload_stored(tokens.generation(), &own);
    if tokens.is_empty() {
        let token = auth::new_token();
        let digest = hex::encode(auth::sha256(&token));
        // The file first: if writing it fails, no token exists that nobody knows.
        let path = config.server.data_dir.join("admin.token");
        write_private(&path, &format!("{token}\n"))?;
        store::channels::insert_api_token(db, "admin", "admin", &digest).await?;
        tokens
            .add_stored("admin", Role::Admin, &digest)
            .map_err(anyhow::Error::msg)?;
        // Printed once, on the console, as the contract says; never logged.
        println!(
            "\nNo API token was configured, so an admin token was created.\n\
             It is shown only this once and was written to {} (mode 0600):\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>`; only its SHA-256 is stored.\n",
            path.display()
        );
    }
    Ok(tokens)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub async fn serve(loaded: Loaded) -> anyhow::Result<()> {
    let config = loaded.config;
    install_crypto_provider();
    let db = open_database(&config).await?;
    db.sync_clock()
        .await
        .context("cannot read the database server's clock")?;
    tracing::info!(database = db.dialect(), "Database ready");
    let tokens = load_tokens(&config, &db).await?;
    let public_base_url = config.server.public_base_url();
    let env = BuildEnv {
        http: http_client(&config)?,
        data_dir: config.server.data_dir.clone(),
        public_base_url: public_base_url.clone(),
        clock: Arc::new(crate::clock::now),
    };
    let registered = registry::build_channels(&config.channels, &env).map_err(|problems| {
        anyhow::anyhow!(
            "channel configuration has problems:\n{}",
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let channels: Vec<_> = registered.iter().map(|r| r.channel.clone()).collect();
    for (name, saved) in store::channels::saved_credentials(&db).await? {
        if let Some(c) = channels.iter().find(|c| c.name() == name) {
            if c.restore_credentials(&noroshi_channel_core::SecretString::from(saved)) {
                tracing::info!(channel = %name, "Using the credentials the platform rotated last time");
            }
        }
    }
    // Imports a crash cut short: on SQLite any (one process owns the file), on PostgreSQL
    // those older than an hour (another instance may be importing right now).
    store::subscribers::recover_imports(&db, if db.is_postgres() { 3_600_000 } else { 0 }).await?;
    if !db.is_postgres() {
        // One process owns a SQLite file: whatever is in flight belongs to a run that died.
        let n = queue::reclaim(&db, queue::Reclaim::All).await?;
        if n > 0 {
            tracing::warn!(
                count = n,
                "Deliveries left in flight by a previous run were queued again"
            );
        }
    }
    let paused: Vec<String> = store::channels::all(&db)
        .await?
        .into_iter()
        .filter(|s| s.state == ChannelState::Paused.as_str())
        .map(|s| s.channel)
        .collect();
    let tasks = Tasks::default();
    let audit = crate::api::audit::Audit::default();
    {
        let (audit, db) = (audit.clone(), db.clone());
        tasks.spawn("audit", move || {
            let (audit, db) = (audit.clone(), db.clone());
            async move { audit.run(db).await }
        });
    }
    let dispatcher = Dispatcher::new(
        db.clone(),
        registered,
        &config.queue,
        DispatchSettings {
            pause_in_disaster: config.disaster.pause_channels.clone(),
            ..DispatchSettings::from_config(&config.queue, public_base_url)
        },
        &paused,
        tasks.shutdown.clone(),
    );
    // Disaster mode as the stored alerts say, before the first claim.
    dispatcher.sync_disaster_mode().await;
    dispatcher.start(&tasks);
    let site_dir = config
        .channels
        .website
        .enabled
        .then(|| config.channels.website.output_dir.clone());
    if let Some(dir) = &site_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // The site's stable addresses (index, feeds) answer from the first request on: the
        // website's healthcheck lays them out now, not when the health loop gets to it after
        // the other channels (an SMTP server that never greets holds that loop for its
        // timeout). Local disk only; the loop checks again every five minutes.
        if let Some(c) = dispatcher.channels.iter().find(|c| c.name == "website") {
            if let Err(e) = c.channel.healthcheck().await {
                tracing::warn!(error = %e, "Could not lay out the website at start");
            }
        }
    }
    let templates = load_templates(&config, &channels)?;
    let state: SharedState = Arc::new(AppState {
        db: db.clone(),
        dispatcher: dispatcher.clone(),
        channels: channels.clone(),
        known_channels: registry::known_channel_names(&config.channels),
        tokens,
        website_base_url: config
            .channels
            .website
            .enabled
            .then(|| config.channels.website.base_url.clone()),
        site_dir,
        exercise_marker: config.disaster.exercise_marker.clone(),
        allow_private_fetch: config.security.allow_private_fetch,
        line_channel_secret: config.channels.line.channel_secret.clone(),
        body_limit: config.server.body_limit_bytes,
        tasks: tasks.clone(),
        audit: audit.clone(),
        request_timeout: Duration::from_secs(config.server.request_timeout_secs),
        hsts: config.server.public_base_url().starts_with("https://"),
        approval_staff: config.console.approval == crate::config::Approval::Staff,
        trusted_proxies: config.server.trusted_proxies.clone(),
        limits: crate::api::Limits::from_config(&config.server),
        confirm_second_person: config.disaster.confirm == "second_person",
        pause_channels: config.disaster.pause_channels.clone(),
        trusted_cap_senders: config.cap.trusted_senders.clone(),
        cap_author: crate::desk::cap::Author {
            sender: config.cap.sender.clone().unwrap_or_else(|| {
                let host = url::Url::parse(&config.server.public_base_url())
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| "localhost".into());
                format!("noroshi@{host}")
            }),
            sender_name: config
                .cap
                .sender_name
                .clone()
                .unwrap_or_else(|| config.channels.website.site_author.clone()),
        },
        templates,
        cap_feeds: crate::desk::feeds::Feeds::default(),
        holidays: std::sync::Arc::new(load_holidays(&config)?),
        kpis: std::sync::Arc::new(config.kpi.clone()),
        site_views: crate::reach::SiteViews::default(),
        schedule_wake: crate::schedule::runner::Wake::default(),
        cap_channels: config.cap.channels.clone(),
        http: env.http.clone(),
    });
    if db.is_postgres() {
        // Other instances on the same database create and revoke API tokens too.
        let state = state.clone();
        tasks.spawn("api-tokens", move || {
            crate::api::auth::follow_stored_tokens(state.clone())
        });
    }
    {
        let state = state.clone();
        tasks.spawn("schedules", move || {
            crate::schedule::runner::run(
                state.clone(),
                state.holidays.clone(),
                state.schedule_wake.clone(),
            )
        });
    }
    {
        let schedule = crate::schedule::Cron::parse(&config.reach.schedule)
            .map_err(|e| anyhow::anyhow!("reach.schedule: {e}"))?;
        let state = state.clone();
        tasks.spawn("reach", move || {
            crate::reach::run(state.clone(), schedule.clone())
        });
    }
    {
        let state = state.clone();
        tasks.spawn("page-views", move || {
            let state = state.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    state.site_views.flush(&state.db).await;
                }
            }
        });
    }
    for url in &config.cap.feeds {
        let (state, url) = (state.clone(), url.clone());
        let every = Duration::from_secs(config.cap.feed_poll_secs);
        tasks.spawn(format!("cap-feed:{url}"), move || {
            crate::desk::feeds::poll(state.clone(), state.cap_feeds.clone(), url.clone(), every)
        });
    }
    {
        let (db, dispatcher) = (db.clone(), dispatcher.clone());
        tasks.spawn("healthcheck", move || {
            health_loop(db.clone(), dispatcher.clone())
        });
    }
    let listener = tokio::net::TcpListener::bind(&config.server.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.bind))?;
    let admin_listener = match &config.server.admin_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.admin_bind)"))?,
        ),
        None => None,
    };
    let limits = Connections {
        max: config.server.max_connections,
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
    };
    let (stop, _) = tokio::sync::watch::channel(false);
    let stopped = |stop: &tokio::sync::watch::Sender<bool>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let admin = match admin_listener {
        Some(admin_listener) => {
            tracing::info!(admin_bind = %admin_listener.local_addr()?, "Admin API is listening");
            Some(tokio::spawn(serve_http(
                admin_listener,
                crate::api::router(state.clone(), crate::api::Face::Admin),
                limits,
                stopped(&stop),
            )))
        }
        None => None,
    };
    let face = if admin.is_some() {
        crate::api::Face::Public
    } else {
        crate::api::Face::All
    };
    tracing::info!(bind = %listener.local_addr()?, channels = ?channels.iter().map(|c| c.name().to_string()).collect::<Vec<_>>(), "Noroshi is listening");
    let public = tokio::spawn(serve_http(
        listener,
        crate::api::router(state, face),
        limits,
        stopped(&stop),
    ));
    shutdown_signal().await;
    // Both listeners stop taking connections; requests in progress finish.
    let _ = stop.send(true);
    let _ = public.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!("Stopping: finishing attempts in flight");
    dispatcher
        .shutdown(Duration::from_secs(config.server.shutdown_grace_secs))
        .await;
    tasks.stop(Duration::from_secs(2)).await;
    db.close().await;
    Ok(())
}

/// Japanese public holidays for schedules that skip or move firings on them.
pub(crate) fn load_holidays(config: &Config) -> anyhow::Result<crate::schedule::Holidays> {
    let path = match &config.schedules.holidays_file {
        Some(p) => p.clone(),
        None if Path::new("config/holidays.csv").is_file() => "config/holidays.csv".into(),
        None => {
            tracing::info!("No holiday list: schedules that skip or move holidays treat every day as a working day");
            return Ok(crate::schedule::Holidays::default());
        }
    };
    let h = crate::schedule::Holidays::load(&path).map_err(anyhow::Error::msg)?;
    if let Some(last) = h.last {
        tracing::info!(file = %path.display(), last = %last, "Holiday list loaded");
    }
    Ok(h)
}

/// Where the disaster templates are read from: `[disaster] templates_dir`, else
/// `config/templates` of the working directory when it exists, else none.
pub(crate) fn templates_dir(config: &Config) -> Option<std::path::PathBuf> {
    match &config.disaster.templates_dir {
        Some(dir) => Some(dir.clone()),
        None if Path::new("config/templates").is_dir() => Some("config/templates".into()),
        None => None,
    }
}

/// The named templates, each rendered with its example values for every enabled channel:
/// a template a channel would refuse stops the start, naming the template and the rule.
pub(crate) fn load_templates(
    config: &Config,
    channels: &[Arc<dyn noroshi_channel_core::Channel>],
) -> anyhow::Result<crate::desk::templates::Templates> {
    use crate::desk::templates::{check_against_channels, Templates};
    let Some(dir) = templates_dir(config) else {
        tracing::info!(
            "No templates: config/templates does not exist and [disaster] templates_dir is not set"
        );
        return Ok(Templates::default());
    };
    let templates = Templates::load_dir(&dir).map_err(|problems| {
        anyhow::anyhow!(
            "templates in {} have problems:\n  {}",
            dir.display(),
            problems.join("\n  ")
        )
    })?;
    let known = registry::known_channel_names(&config.channels);
    let website_base_url = config
        .channels
        .website
        .enabled
        .then(|| config.channels.website.base_url.clone());
    let ctx = crate::accept::AcceptContext {
        channels,
        known: &known,
        website_base_url: website_base_url.as_deref(),
        exercise_marker: &config.disaster.exercise_marker,
        can_send_disaster: true,
        allow_private_fetch: true,
        templates: &templates,
        cap_message: None,
        replaces: None,
    };
    let problems = check_against_channels(&templates, &ctx);
    if !problems.is_empty() {
        anyhow::bail!(
            "templates in {} do not fit the enabled channels (shorten them or the example values):\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }
    tracing::info!(dir = %dir.display(), templates = ?templates.names(), "Templates loaded and checked against every channel");
    Ok(templates)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Walks each channel's real auth path now and every five minutes, so a revoked token or an
/// expiring one shows in the channel's state before a disaster needs the channel.
async fn health_loop(db: Db, dispatcher: Arc<Dispatcher>) {
    loop {
        for c in &dispatcher.channels {
            match c.channel.healthcheck().await {
                Ok(()) => {}
                Err(e) if e.class == ErrorClass::Auth => {
                    let reason = format!("healthcheck: credentials refused: {}", e.message);
                    tracing::error!(channel = %c.name, reason = %reason, "Channel paused");
                    let _ = store::channels::set_state(
                        &db,
                        &c.name,
                        ChannelState::Paused,
                        Some(&reason),
                    )
                    .await;
                    dispatcher.set_paused(&c.name, true);
                }
                Err(e) => {
                    tracing::warn!(channel = %c.name, error = %e, "Channel healthcheck failed");
                    let _ =
                        store::channels::record_error(&db, &c.name, &format!("healthcheck: {e}"))
                            .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
}

/// The HTTP server: HTTP/1.1 with a header-read timeout (a client that opens a connection
/// and sends nothing, or half a request, is dropped; hyper starts the same timer again when
/// a kept-alive connection waits for its next request, so it is also the idle keep-alive
/// timeout) and a cap on connections open at once
/// (more are closed as soon as they are accepted). Each request carries the peer's address
/// (`ConnectInfo`). On the shutdown signal it stops accepting and lets requests in progress
/// finish.
/// Connection hygiene for each listener (`server.max_connections` is per listener).
#[derive(Clone, Copy)]
struct Connections {
    max: usize,
    header_read_timeout: Duration,
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    Connections {
        max: max_connections,
        header_read_timeout,
    }: Connections,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut refused_logged_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    tracing::warn!(error = %e, "Could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if refused_logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(
                    max_connections,
                    "Connection limit reached; closing new connections"
                );
                refused_logged_at = Some(tokio::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Connection closed with an error");
            }
        });
    }
    drop(listener);
    // Requests in progress finish; idle connections are closed.
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Some connections were still open 10 s after shutdown began");
    }
}
