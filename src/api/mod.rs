//! The HTTP edge: routes, bearer-token roles, problem+json errors, the OpenAPI document.

pub mod announcements;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod desk;
pub mod problem;
pub mod reach;
pub mod redact;
pub mod reference;
pub mod schedules;
pub mod schema;
pub mod subscribers;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use noroshi_channel_core::{Channel, SecretString};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;

use crate::dispatch::Dispatcher;
use crate::store::Db;
use problem::Problem;
use schema::Conventions;

/// Everything a handler can reach.
pub struct AppState {
    pub db: Db,
    pub dispatcher: Arc<Dispatcher>,
    /// Enabled channels.
    pub channels: Vec<Arc<dyn Channel>>,
    /// Every channel name that exists, enabled or not.
    pub known_channels: Vec<String>,
    pub tokens: auth::Tokens,
    pub website_base_url: Option<String>,
    pub site_dir: Option<std::path::PathBuf>,
    pub exercise_marker: String,
    /// `[security] allow_private_fetch`, for accepting image URLs.
    pub allow_private_fetch: bool,
    pub line_channel_secret: Option<SecretString>,
    pub body_limit: usize,
    /// The supervised background tasks, for `/readyz`.
    pub tasks: crate::tasks::Tasks,
    /// Where the audit hook sends each successful write.
    pub audit: audit::Audit,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::config::TrustedProxy>,
    /// Rate limits: public routes per client address, the API per token.
    pub limits: Limits,
    /// `[disaster] confirm = "second_person"`.
    pub confirm_second_person: bool,
    /// `[disaster] pause_channels`.
    pub pause_channels: Vec<String>,
    /// `[cap] trusted_senders`: their alerts skip second-person confirmation.
    pub trusted_cap_senders: Vec<String>,
    /// Who Noroshi writes CAP messages as (`[cap] sender`, `sender_name`).
    pub cap_author: crate::desk::cap::Author,
    /// `[[kpi]]`: the plan's targets.
    pub kpis: std::sync::Arc<Vec<crate::config::KpiConfig>>,
    /// Page views of `/site/`, counted as they are served.
    pub site_views: crate::reach::SiteViews,
    /// Japanese public holidays (`[schedules] holidays_file`).
    pub holidays: std::sync::Arc<crate::schedule::Holidays>,
    /// Wakes the schedule runner when a schedule changes.
    pub schedule_wake: crate::schedule::runner::Wake,
    /// `[cap] channels`: where CAP alerts go (none: every enabled channel).
    pub cap_channels: Option<Vec<String>>,
    /// `[cap] feeds` and what each last did.
    pub cap_feeds: crate::desk::feeds::Feeds,
    /// The shared HTTP client (CAP feeds).
    pub http: reqwest::Client,
    /// Named templates (`[disaster] templates_dir`), checked against every channel at start.
    pub templates: crate::desk::templates::Templates,
    /// `Strict-Transport-Security` on every answer (the public URL is HTTPS).
    pub hsts: bool,
    /// How long a client may take to send its request.
    pub request_timeout: std::time::Duration,
    /// `[console] approval = "staff"`: staff posts wait for a second person's approval.
    pub approval_staff: bool,
}

pub type SharedState = Arc<AppState>;

#[derive(OpenApi)]
#[openapi(
    info(title = "Noroshi", description = "Announce once, reach every channel: the HTTP API of a city hall's PR and disaster broadcaster.\n\nEvery `/api/v1` operation takes `Authorization: Bearer TOKEN`; each says the role it needs (viewer < staff < disaster < admin). Errors are `application/problem+json` (RFC 9457) with `field` naming the request field at fault. Times are RFC 3339; the city's are Asia/Tokyo.", license(name = "MIT OR Apache-2.0")),
    tags(
        (name = "announcements", description = "Accept an announcement once; follow it on every channel."),
        (name = "disaster", description = "The disaster desk: second-person confirmation, all-clear and correction, active alerts and disaster mode."),
        (name = "reach", description = "Followers and views with their lineage, manual figures, the plan's KPIs by fiscal year (JSON or CSV)."),
        (name = "schedules", description = "Recurring posts: crontab in a time zone, holidays, the next firings."),
        (name = "deliveries", description = "The delivery log: every attempt on every channel."),
        (name = "channels", description = "Each channel's state, budget and last error; resume after a pause."),
        (name = "subscribers", description = "The email channel's subscribers: add, list, import (CSV), remove."),
        (name = "audit", description = "Who changed what, when, from where."),
        (name = "operations", description = "Health, readiness, storage state."),
        (name = "reference", description = "This document and its reference page."),
        (name = "public", description = "What residents and platforms reach from the internet (no token)."),
    ),
    paths(
        announcements::submit,
        announcements::get_one,
        announcements::list,
        announcements::cancel,
        announcements::retry,
        announcements::preview,
        announcements::deliveries,
        channels::list,
        channels::resume,
        channels::storage,
        audit::list,
        subscribers::create,
        subscribers::list,
        subscribers::delete,
        subscribers::import,
        subscribers::unsubscribe_page,
        subscribers::unsubscribe_post,
        channels::line_webhook,
        desk::confirm,
        desk::all_clear,
        desk::active,
        desk::ingest_cap,
        desk::list_cap,
        reach::list,
        reach::enter,
        reach::collect,
        reach::kpi,
        schedules::create,
        schedules::list,
        schedules::get_one,
        schedules::edit,
        schedules::pause,
        schedules::resume,
        schedules::delete,
        healthz,
        readyz,
        openapi,
        reference::page,
    ),
    components(schemas(
        crate::accept::Submission,
        crate::accept::ChannelOverride,
        crate::accept::Variant,
        announcements::Accepted,
        announcements::DeliveryBrief,
        announcements::AnnouncementView,
        announcements::AnnouncementPage,
        announcements::PreviewResponse,
        announcements::ChannelPreview,
        announcements::AttemptPage,
        crate::store::announcements::ChannelSummary,
        crate::store::announcements::AttemptRow,
        channels::ChannelView,
        channels::ResumeResult,
        desk::ActiveAlerts,
        desk::CapStored,
        reach::ManualFigure,
        reach::Collected,
        crate::store::reach::Sample,
        crate::reach::KpiView,
        crate::reach::Lineage,
        schedules::NewSchedule,
        schedules::ScheduleEdit,
        schedules::ScheduleView,
        crate::store::schedules::FiringRow,
        crate::store::alerts::CapMessage,
        crate::desk::FollowUp,
        crate::store::alerts::AlertRow,
        crate::store::alerts::CapIdentity,
        crate::store::health::StorageState,
        audit::AuditEntry,
        audit::AuditPage,
        subscribers::NewSubscriberBody,
        subscribers::SubscriberPage,
        subscribers::ImportResult,
        crate::store::subscribers::Subscriber,
        problem::Problem,
        problem::FieldError,
    )),
    modifiers(&BearerAuth, &Conventions),
)]
pub struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What one listener serves: everything (one address), or, with `server.admin_bind`, the
/// public routes on `bind` and the API on the admin address. `/healthz` and `/readyz` are
/// on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    All,
    Public,
    Admin,
}

pub fn router(state: SharedState, face: Face) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if face != Face::Public {
        app = app.merge(admin_routes(&state));
    }
    if face != Face::Admin {
        app = app.merge(public_routes(&state));
    }
    harden(app, state)
}

/// The API and `/metrics`: for staff, their tools and the operators.
fn admin_routes(state: &SharedState) -> Router<SharedState> {
    let api = Router::new()
        .route(
            "/announcements",
            post(announcements::submit).get(announcements::list),
        )
        .route("/announcements/{id}", get(announcements::get_one))
        .route("/announcements/{id}/cancel", post(announcements::cancel))
        .route("/announcements/{id}/retry", post(announcements::retry))
        .route("/announcements/{id}/confirm", post(desk::confirm))
        .route("/announcements/{id}/all-clear", post(desk::all_clear))
        .route("/preview", post(announcements::preview))
        .route("/deliveries", get(announcements::deliveries))
        .route("/channels", get(channels::list))
        .route("/channels/{name}/resume", post(channels::resume))
        .route(
            "/subscribers",
            post(subscribers::create).get(subscribers::list),
        )
        .route("/subscribers/import", post(subscribers::import))
        .route(
            "/subscribers/{id}",
            axum::routing::delete(subscribers::delete),
        )
        .route("/cap", post(desk::ingest_cap).get(desk::list_cap))
        .route("/alerts/active", get(desk::active))
        .route("/reach", get(reach::list).post(reach::enter))
        .route("/reach/collect", post(reach::collect))
        .route("/kpi", get(reach::kpi))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route(
            "/schedules/{id}",
            get(schedules::get_one)
                .patch(schedules::edit)
                .delete(schedules::delete),
        )
        .route("/schedules/{id}/pause", post(schedules::pause))
        .route("/schedules/{id}/resume", post(schedules::resume))
        .route("/audit", get(audit::list))
        .route("/storage", get(channels::storage))
        // Runs for matched routes: the caller is identified once (and counted against its
        // token's rate limit), and writes are audited.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::identify_caller,
        ))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(reference::page))
        .route("/docs.css", get(reference::stylesheet))
        .fallback(|| async { Problem::not_found("API route") });
    Router::new()
        .nest("/api/v1", api)
        // No token, as the contract says: Prometheus scrapes it where the operator binds
        // it (`server.admin_bind`, an internal address). Nothing in it is secret.
        .route("/metrics", get(metrics))
        // The console: for staff, on the API's address.
        .merge(crate::console::routes())
}

/// What residents and platforms reach from the internet, each family limited per client
/// address.
fn public_routes(state: &SharedState) -> Router<SharedState> {
    let limit =
        |family| axum::middleware::from_fn_with_state((state.clone(), family), limit_per_client);
    let mut app = Router::new()
        .route(
            "/unsubscribe",
            get(subscribers::unsubscribe_page).post(subscribers::unsubscribe_post),
        )
        .route_layer(limit(PublicFamily::Site))
        .merge(
            Router::new()
                .route("/webhooks/line", post(channels::line_webhook))
                .route_layer(limit(PublicFamily::Webhook)),
        );
    if let Some(dir) = &state.site_dir {
        let site = Router::new()
            .nest_service(
                "/site",
                ServeDir::new(dir).append_index_html_on_directories(true),
            )
            .layer(axum::middleware::map_response(site_content_types))
            .layer(axum::middleware::from_fn_with_state(
                state.site_views.clone(),
                count_page_views,
            ))
            .layer(axum::middleware::from_fn(conditional_get))
            .layer(axum::middleware::from_fn(hide_dotfiles))
            .layer(limit(PublicFamily::Site));
        app = app.merge(site);
    }
    app
}

/// What every listener's answers go through: body limit and read timeout, request ids,
/// problem+json for errors, security headers.
fn harden(app: Router<SharedState>, state: SharedState) -> Router {
    let limit = state.body_limit;
    let read_timeout = state.request_timeout;
    let hsts = state.hsts;
    app.layer(DefaultBodyLimit::max(limit))
        // A client that stalls sending its request does not hold a connection for ever.
        // Only the reading is timed: once a handler runs, a submission gets its real answer
        // (or 503 when nothing was written), never a 408 while it may still commit.
        .layer(axum::middleware::from_fn_with_state(
            (read_timeout, limit),
            read_body_within,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(axum::middleware::map_response(problem_for_plain_errors))
        .layer(axum::middleware::map_response_with_state(
            hsts,
            security_headers,
        ))
        .layer(axum::middleware::from_fn(refuse_control_characters))
        .layer(axum::middleware::from_fn(in_request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Runs the request in a span carrying its request id (the caller's `X-Request-Id`, or the
/// one made for it): every line logged while handling it, such as an accepted
/// announcement's, carries the same `request_id` as its deliveries' lines later.
async fn in_request_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %id);
    next.run(request).instrument(span).await
}

/// Reads the whole request body within the request timeout (`408` otherwise, before any
/// handler ran, so nothing was stored), then hands it on.
async fn read_body_within(
    State((timeout, limit)): State<(std::time::Duration, usize)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request was not received in time; nothing was stored",
        )
        .into_response(),
        Ok(Err(_)) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the configured limit (server.body_limit_bytes)",
        )
        .into_response(),
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
    }
}

/// A path or query whose decoded form holds a control character (`%00`, `%0A`) is
/// refused before any handler sees it: no such value is ever a valid id, token or filter,
/// and PostgreSQL refuses NUL in text.
async fn refuse_control_characters(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let bad = |s: &str| percent_encoding::percent_decode_str(s).any(|b| b < 0x20 || b == 0x7f);
    if bad(uri.path()) || uri.query().is_some_and(bad) {
        return Problem::bad_request(
            "the path or query contains a control character (such as %00); remove it",
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a `/site/` path names something that is not a page of the site: a dot-file or
/// dot-folder (the adapter's `.entries.json`, `.lock`, `.noroshi-tmp-*`), `.` or `..`, or a
/// temporary or backup file, however the path is spelled (`%2E`, `./`).
pub fn hidden_site_path(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.split(['/', '\\']).any(|seg| {
        let seg = seg.to_ascii_lowercase();
        seg.starts_with('.')
            || seg.ends_with('~')
            || [".tmp", ".temp", ".swp", ".bak", ".lock", ".part"]
                .iter()
                .any(|ext| seg.ends_with(ext))
    })
}

/// The adapter's state files (`.entries.json`, temporary files) are not part of the site.
async fn hide_dotfiles(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if hidden_site_path(request.uri().path()) {
        return Problem::not_found("page").into_response();
    }
    next.run(request).await
}

/// The content security policy of every HTML page the daemon serves (website pages, the
/// unsubscribe page): nothing runs, nothing frames it, forms post only to the daemon, and
/// images come from the daemon or HTTPS hosts (announcement images).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; img-src 'self' https:; \
     style-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers: on HTML pages a strict CSP, `Referrer-Policy: no-referrer` (an
/// unsubscribe link carries its token) and `X-Frame-Options: DENY`; HSTS on every answer
/// when the public URL is HTTPS.
async fn security_headers(State(hsts): State<bool>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if html {
        // The console sets its own (it runs its own script); everything else gets this.
        if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
        }
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// `/site/` for feed readers and CAP consumers that poll: every file carries a validator
/// (`ETag` from its size and modification time, beside `Last-Modified`) and
/// `Cache-Control: no-cache`, and a conditional GET whose validator still matches is
/// answered `304` without a body.
async fn conditional_get(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let mut response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (Some(modified), Some(length)) = (
        response.headers().get(header::LAST_MODIFIED).cloned(),
        response.headers().get(header::CONTENT_LENGTH).cloned(),
    ) else {
        return response;
    };
    let tag = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest([modified.as_bytes(), b"/", length.as_bytes()].concat());
        format!("W/\"{}\"", hex::encode(&digest[..8]))
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, v);
    }
    let matches = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if matches {
        let mut not_modified = Response::new(axum::body::Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL] {
            if let Some(v) = response.headers().get(&name) {
                not_modified.headers_mut().insert(name, v.clone());
            }
        }
        return not_modified;
    }
    response
}

/// Counts a served website page (HTML, answered 200) for the reach figures: no tracker, no
/// cookie, nothing about the reader, only the path and the day.
async fn count_page_views(
    State(views): State<crate::reach::SiteViews>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if response.status() == StatusCode::OK && (path.ends_with(".html") || path.ends_with('/')) {
        views.count(&path);
    }
    response
}

/// Feeds are served with the types feed readers expect, and everything in UTF-8.
async fn site_content_types(uri: axum::http::Uri, mut response: Response) -> Response {
    let path = uri.path();
    let ctype = if path.ends_with(".atom") {
        Some("application/atom+xml; charset=utf-8")
    } else if path.ends_with(".rss") {
        Some("application/rss+xml; charset=utf-8")
    } else if path.ends_with(".html") || path.ends_with('/') {
        Some("text/html; charset=utf-8")
    } else if path.ends_with(".xml") && path.contains("/cap/") {
        // CAP 1.2 documents (CHANNELS.md §5.4).
        Some("application/cap+xml; charset=utf-8")
    } else if path.ends_with(".xml") {
        Some("application/xml; charset=utf-8")
    } else {
        None
    };
    if let (Some(ct), true) = (ctype, response.status().is_success()) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    response
}

/// Errors produced below the handlers (an oversize body, a wrong method) come as plain
/// text; the API promises problem+json everywhere.
async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes().starts_with(b"application/problem+json"))
        .unwrap_or(false);
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than the configured limit (server.body_limit_bytes)"
                .to_string()
        }
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this path".to_string(),
        StatusCode::NOT_FOUND => "not found".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type".to_string(),
        other => other.canonical_reason().unwrap_or("error").to_string(),
    };
    let ct = response.headers().get(header::CONTENT_TYPE).cloned();
    // Static site 404s keep their own type only if HTML; everything else becomes a problem.
    if ct
        .map(|v| v.as_bytes().starts_with(b"text/html"))
        .unwrap_or(false)
    {
        return response;
    }
    Problem::new(status, detail).into_response()
}

/// Prometheus text format: what the daemon did and what waits (`docs/observability.md`).
async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::page(&state).await,
    )
        .into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "checkLiveness", tag = "operations",
    responses((status = 200, description = "The process is alive", body = String, content_type = "text/plain", example = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database is reachable and migrated, storage takes writes, and every
/// background task runs. A load balancer sends work only to a ready instance.
#[utoipa::path(get, path = "/readyz", operation_id = "checkReadiness", tag = "operations", responses(
    (status = 200, description = "Ready", body = String, content_type = "text/plain", example = "ready"),
    (status = 503, description = "Not ready, and why (storage full, a task restarting)", body = Problem)))]
pub async fn readyz(State(state): State<SharedState>) -> Result<&'static str, Problem> {
    state.db.ready().await.map_err(|e| {
        // The cause goes to the log; unauthenticated callers learn only the state.
        tracing::warn!(error = %e, "Not ready");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database is unreachable or not migrated",
        )
    })?;
    if crate::store::health::fault() == Some(crate::store::health::Fault::Full) {
        // Look again now rather than at the next upkeep tick.
        let _ = state.db.probe_room().await;
    }
    if let Some(fault) = crate::store::health::fault() {
        let s = crate::store::health::state();
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: storage {} since {} ({})",
                s.state,
                s.since.unwrap_or_default(),
                fault.problem()
            ),
        ));
    }
    let down = state.tasks.down();
    if !down.is_empty() {
        // Task names only (their causes are in the log at error level).
        let names: Vec<&str> = down.iter().map(|d| d.task.as_str()).collect();
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: background task(s) down and restarting: {}",
                names.join(", ")
            ),
        ));
    }
    Ok("ready")
}

/// This document (OpenAPI 3.1). No token needed.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "getOpenApiDocument", tag = "reference",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// The OpenAPI document, built once.
pub fn document() -> utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi).clone()
}

/// A rate limit per key: a client address (public routes) or a token (the API).
pub struct PerKey<K: std::hash::Hash + Eq + Clone> {
    limiter: governor::DefaultKeyedRateLimiter<K>,
    per_minute: u32,
}

/// A rate limit per client address.
pub type PerClient = PerKey<std::net::IpAddr>;

impl<K: std::hash::Hash + Eq + Clone> PerKey<K> {
    /// `n` requests a minute, all of them at once if need be (the bucket refills evenly).
    pub fn per_minute(n: u32) -> PerKey<K> {
        let n = std::num::NonZeroU32::new(n.max(1)).expect("non-zero");
        PerKey {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            per_minute: n.get(),
        }
    }

    /// `Err(seconds to wait)` when `key` has used its share.
    pub fn check(&self, key: &K) -> Result<(), u32> {
        // Forget quiet clients now and then, so the table stays small.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|_| (60 / self.per_minute.max(1)).max(1))
    }
}

/// Public routes: one limiter per route family, keyed by the client's address.
async fn limit_per_client(
    State((state, family)): State<(SharedState, PublicFamily)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = request_client(&state, &request);
    let limiter = match family {
        PublicFamily::Site => &state.limits.site,
        PublicFamily::Webhook => &state.limits.webhook,
    };
    if let Err(wait) = limiter.check(&client) {
        return Problem::too_many_requests(
            format!("too many requests from this address; try again in {wait} s"),
            wait,
        )
        .into_response();
    }
    next.run(request).await
}

#[derive(Clone, Copy)]
enum PublicFamily {
    Site,
    Webhook,
}

/// The per-route-family limiters of the public routes and the per-token limiter of the API.
pub struct Limits {
    pub site: PerClient,
    pub webhook: PerClient,
    pub unsubscribe: PerClient,
    pub api: PerKey<ApiKey>,
}

/// Who an API request is counted against: its token, or its address when it has none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ApiKey {
    Token(String),
    Address(std::net::IpAddr),
}

impl Limits {
    pub fn from_config(c: &crate::config::ServerConfig) -> Limits {
        Limits {
            site: PerClient::per_minute(c.site_per_minute),
            webhook: PerClient::per_minute(c.webhook_per_minute),
            unsubscribe: PerClient::per_minute(c.unsubscribe_per_minute),
            api: PerKey::per_minute(c.api_per_minute),
        }
    }
}

/// The client of a request (see [`client_address`]).
pub fn request_client(state: &AppState, request: &axum::extract::Request) -> std::net::IpAddr {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    client_address(peer, request.headers(), &state.trusted_proxies)
}

/// The client's address: the socket's peer or, when the peer is a trusted reverse proxy,
/// the nearest address in the proxies' chain (`Forwarded: for=…`, RFC 7239, or else
/// `X-Forwarded-For`) that is not itself a trusted proxy. From anyone else the headers are
/// ignored: a client cannot pick its own address. A hop the proxy could not name
/// (`for=unknown`, an obfuscated name) stops the walk at the last address known.
pub fn client_address(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[crate::config::TrustedProxy],
) -> std::net::IpAddr {
    let is_trusted = |a: &std::net::IpAddr| trusted.iter().any(|t| t.contains(a));
    if !is_trusted(&peer) {
        return peer;
    }
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|hop| hop.trim().to_string())
            .collect()
    };
    let forwarded = values("forwarded");
    let chain: Vec<Option<std::net::IpAddr>> = if !forwarded.is_empty() {
        forwarded
            .iter()
            .map(|hop| {
                hop.split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| hop_address(v))
            })
            .collect()
    } else {
        values("x-forwarded-for")
            .iter()
            .map(|hop| hop_address(hop))
            .collect()
    };
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            Some(a) if is_trusted(&client) => client = a,
            _ => break,
        }
    }
    client
}

/// One hop's address: `192.0.2.7`, `192.0.2.7:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn hop_address(value: &str) -> Option<std::net::IpAddr> {
    let v = value.trim().trim_matches('"');
    v.parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| v.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            v.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(a, _)| a.parse().ok())
        })
}

#[cfg(test)]
mod client_address_tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.2".parse().unwrap());
        let trusted: Vec<crate::config::TrustedProxy> =
            vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/24".parse().unwrap()];
        assert_eq!(
            client_address(ip("198.51.100.9"), &h, &trusted),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &axum::http::HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_names_the_client_and_unknown_hops_stop_the_walk() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let trusted: Vec<crate::config::TrustedProxy> =
            vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let with = |name: &str, value: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            h
        };
        let peer = ip("127.0.0.1");
        // RFC 7239: quoted IPv6 with a port, several hops, other parameters.
        let h = with(
            "forwarded",
            r#"for="[2001:db8:cafe::17]:4711";proto=https, for=10.1.2.3;by=10.0.0.1"#,
        );
        assert_eq!(client_address(peer, &h, &trusted), ip("2001:db8:cafe::17"));
        let h = with("forwarded", "For=198.51.100.4:5555");
        assert_eq!(client_address(peer, &h, &trusted), ip("198.51.100.4"));
        // A hop nobody could name: the last known address stands (here a trusted proxy's,
        // so the client is never a forged address further left).
        let h = with("forwarded", "for=203.0.113.9, for=unknown, for=10.2.2.2");
        assert_eq!(client_address(peer, &h, &trusted), ip("10.2.2.2"));
        let h = with("x-forwarded-for", "203.0.113.9, _hidden");
        assert_eq!(client_address(peer, &h, &trusted), peer);
        // From an untrusted peer, neither header counts.
        let h = with("forwarded", "for=203.0.113.9");
        assert_eq!(
            client_address(ip("192.0.2.1"), &h, &trusted),
            ip("192.0.2.1")
        );
    }
}
