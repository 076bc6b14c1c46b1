//! A fake Graph API on loopback for tests (CHANNELS.md §3.7): Page token checks, versioned
//! paths, feed and photo posts, `/posts`, `debug_token`, usage headers, insights, followers.
//!
//! ```ignore
//! let fb = noroshi_facebook::fake::start("1001", "page-token").await;
//! config.graph_base = fb.base_url();
//! fb.set_followers(9560);
//! fb.set_buc_usage(Some(UsageLevels { call_count: 90, ..Default::default() }));
//! // … run the adapter …
//! assert_eq!(fb.posts().len(), 1);
//! ```
//!
//! Every request is recorded ([`FakeGraph::requests`]); [`FakeGraph::script`] (or
//! `POST /__fake/script`) replaces the answer to the next request, e.g. code 1 / 2 faults,
//! `is_transient`, 368, or a post that is created while the client never hears back
//! (`after_applying` with a `delay_ms` beyond the client's timeout).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use noroshi_channel_core::fake::{FakeServer, FakeState, RecordedRequest, ScriptedResponse};
use serde_json::{json, Value};
use sha2::Sha256;

/// Insight metrics the fake serves for the Page (current names only).
pub const PAGE_METRICS: &[&str] = &[
    "page_media_view",
    "page_total_media_view_unique",
    "page_follows",
    "page_post_engagements",
    "page_views_total",
];
/// Insight metrics the fake serves for a post.
pub const POST_METRICS: &[&str] = &["post_media_view", "post_total_media_view_unique"];
/// Retired names: asking for one fails the whole call with code 100, as Graph does.
pub const RETIRED_METRICS: &[&str] = &[
    "page_impressions",
    "page_impressions_unique",
    "page_impressions_paid",
    "page_impressions_viral",
    "page_impressions_nonviral",
    "page_fans",
    "page_fans_city",
    "page_fans_country",
    "page_fans_locale",
    "page_fan_adds",
    "page_fan_adds_unique",
    "page_fan_removes",
    "page_fan_removes_unique",
    "post_impressions",
    "post_impressions_unique",
    "post_impressions_paid",
    "post_impressions_organic",
    "post_impressions_fan",
    "post_impressions_viral",
    "post_impressions_nonviral",
];

/// Identical messages this close together are refused as duplicates (code 506).
const DUPLICATE_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// A post the fake holds.
#[derive(Clone, Debug)]
pub struct FakePost {
    /// `{page-id}_{n}`.
    pub id: String,
    /// The photo's own id, for photo posts.
    pub photo_id: Option<String>,
    pub message: String,
    pub link: Option<String>,
    /// `url` of a photo post, or `upload:{bytes}` for a multipart `source`.
    pub image: Option<String>,
    pub created_time: DateTime<Utc>,
}

/// Usage percentages for a usage header (each 0–100).
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageLevels {
    pub call_count: u32,
    pub total_time: u32,
    pub total_cputime: u32,
    /// Minutes (BUC only); above 0 the fake refuses Page-token calls with code 80001.
    pub estimated_time_to_regain_access: u32,
}

impl UsageLevels {
    fn max(&self) -> u32 {
        self.call_count.max(self.total_time).max(self.total_cputime)
    }
}

struct Inner {
    page_id: String,
    page_token: String,
    app_token: Option<String>,
    app_secret: Option<String>,
    token_expired: bool,
    expires_at: i64,
    data_access_expires_at: i64,
    scopes: Vec<String>,
    followers: i64,
    fan_count: i64,
    page_metrics: HashMap<String, i64>,
    post_metrics: HashMap<String, i64>,
    app_usage: Option<UsageLevels>,
    buc_usage: Option<UsageLevels>,
    buc_budget: Option<u32>,
    buc_calls: u32,
    regain_minutes: u32,
    expired_versions: HashSet<String>,
    posts: Vec<FakePost>,
    next_id: u64,
    next_trace: u64,
}

/// A running fake Graph API for one Page.
pub struct FakeGraph {
    /// The loopback server with its request record and script queue.
    pub server: FakeServer,
    inner: Arc<Mutex<Inner>>,
}

/// Starts a fake Graph API for Page `page_id` that accepts `page_token`.
pub async fn start(page_id: &str, page_token: &str) -> FakeGraph {
    let inner = Arc::new(Mutex::new(Inner {
        page_id: page_id.to_string(),
        page_token: page_token.to_string(),
        app_token: None,
        app_secret: None,
        token_expired: false,
        expires_at: 0,
        data_access_expires_at: Utc::now().timestamp() + 90 * 86_400,
        scopes: [
            "pages_manage_posts",
            "pages_read_engagement",
            "pages_show_list",
            "read_insights",
        ]
        .map(String::from)
        .to_vec(),
        followers: 0,
        fan_count: 0,
        page_metrics: HashMap::new(),
        post_metrics: HashMap::new(),
        app_usage: None,
        buc_usage: None,
        buc_budget: None,
        buc_calls: 0,
        regain_minutes: 10,
        expired_versions: HashSet::new(),
        posts: Vec::new(),
        next_id: 1,
        next_trace: 1,
    }));
    let router = Router::new().fallback(graph).with_state(inner.clone());
    let server = FakeServer::start(router)
        .await
        .expect("bind the fake Graph API on loopback");
    FakeGraph { server, inner }
}

impl FakeGraph {
    /// `http://127.0.0.1:PORT`, for `graph_base`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    /// The shared request record and script queue.
    pub fn state(&self) -> &FakeState {
        &self.server.state
    }
    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.state.requests()
    }
    /// Answers the next matching request with `response` instead of the Graph logic.
    pub fn script(&self, response: ScriptedResponse) {
        self.server.state.script(response)
    }
    /// Posts on the Page, oldest first.
    pub fn posts(&self) -> Vec<FakePost> {
        self.inner.lock().unwrap().posts.clone()
    }
    /// Puts a post on the Page as if someone had posted it.
    pub fn add_post(&self, message: &str) -> String {
        let mut g = self.inner.lock().unwrap();
        g.create_post(message.to_string(), None, None, None)
    }
    /// Accepts `token` as the app access token (for `debug_token`).
    pub fn set_app_token(&self, token: &str) {
        self.inner.lock().unwrap().app_token = Some(token.to_string());
    }
    /// "Require App Secret": every call must carry a valid `appsecret_proof`.
    pub fn require_appsecret_proof(&self, app_secret: &str) {
        self.inner.lock().unwrap().app_secret = Some(app_secret.to_string());
    }
    /// The Page token's session expires: calls answer 190/463, `debug_token` says invalid.
    pub fn expire_token(&self) {
        self.inner.lock().unwrap().token_expired = true;
    }
    /// What `debug_token` reports as `expires_at` (Unix seconds, 0 = never).
    pub fn set_token_expires_at(&self, unix: i64) {
        self.inner.lock().unwrap().expires_at = unix;
    }
    /// What `debug_token` reports as `data_access_expires_at` (Unix seconds, 0 = never).
    pub fn set_data_access_expires_at(&self, unix: i64) {
        self.inner.lock().unwrap().data_access_expires_at = unix;
    }
    /// The token's granted permissions.
    pub fn set_scopes(&self, scopes: &[&str]) {
        self.inner.lock().unwrap().scopes = scopes.iter().map(|s| s.to_string()).collect();
    }
    /// `followers_count` (and `fan_count`, a little lower).
    pub fn set_followers(&self, n: i64) {
        let mut g = self.inner.lock().unwrap();
        g.followers = n;
        g.fan_count = n * 98 / 100;
    }
    /// The latest daily value of a Page insight metric.
    pub fn set_page_metric(&self, metric: &str, value: i64) {
        self.inner
            .lock()
            .unwrap()
            .page_metrics
            .insert(metric.to_string(), value);
    }
    /// The lifetime value of a post insight metric, for every post.
    pub fn set_post_metric(&self, metric: &str, value: i64) {
        self.inner
            .lock()
            .unwrap()
            .post_metrics
            .insert(metric.to_string(), value);
    }
    /// `X-App-Usage` on every answer; at 100 % calls fail with code 4.
    pub fn set_app_usage(&self, levels: Option<UsageLevels>) {
        self.inner.lock().unwrap().app_usage = levels;
    }
    /// `X-Business-Use-Case-Usage` on every answer; at 100 % or with a regain time,
    /// Page-token calls fail with code 80001.
    pub fn set_buc_usage(&self, levels: Option<UsageLevels>) {
        self.inner.lock().unwrap().buc_usage = levels;
    }
    /// A BUC budget of `calls` Page-token calls: usage climbs with each call and the call
    /// after the last fails with 80001 and a regain time of `regain_minutes`.
    pub fn set_buc_budget(&self, calls: u32, regain_minutes: u32) {
        let mut g = self.inner.lock().unwrap();
        g.buc_budget = Some(calls.max(1));
        g.buc_calls = 0;
        g.regain_minutes = regain_minutes;
    }
    /// Meta stops serving `version` (`v21.0`): calls to it answer code 2635. Versions below
    /// v21.0 are expired from the start.
    pub fn expire_version(&self, version: &str) {
        self.inner
            .lock()
            .unwrap()
            .expired_versions
            .insert(version.to_string());
    }
}

impl Inner {
    fn trace(&mut self) -> String {
        self.next_trace += 1;
        format!("AfakeTrace{:06}", self.next_trace)
    }

    fn create_post(
        &mut self,
        message: String,
        link: Option<String>,
        image: Option<String>,
        photo: Option<()>,
    ) -> String {
        let n = self.next_id;
        self.next_id += 1;
        let id = format!("{}_{}", self.page_id, 100_000 + n);
        let photo_id = photo.map(|_| format!("{}", 900_000 + n));
        self.posts.push(FakePost {
            id: id.clone(),
            photo_id,
            message,
            link,
            image,
            created_time: Utc::now(),
        });
        id
    }

    /// Graph refuses Page-token calls: scripted levels at 100 % or with a regain time, or
    /// the budget spent.
    fn buc_blocked(&self) -> bool {
        match (self.buc_usage, self.buc_budget) {
            (Some(l), _) => l.max() >= 100 || l.estimated_time_to_regain_access > 0,
            (None, Some(budget)) => self.buc_calls > budget,
            (None, None) => false,
        }
    }

    /// Usage for BUC: the scripted levels, else the budget's consumption.
    fn buc_levels(&self) -> Option<UsageLevels> {
        if let Some(l) = self.buc_usage {
            return Some(l);
        }
        let budget = self.buc_budget?;
        let pct = (self.buc_calls * 100 / budget).min(100);
        Some(UsageLevels {
            call_count: pct,
            total_time: pct / 2,
            total_cputime: pct / 2,
            estimated_time_to_regain_access: if self.buc_calls > budget {
                self.regain_minutes
            } else {
                0
            },
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Page,
    App,
}

struct GraphFailure {
    status: StatusCode,
    body: Value,
}

fn failure(
    g: &mut Inner,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
) -> GraphFailure {
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": g.trace(),
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    GraphFailure {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "error": error }),
    }
}

type Params = HashMap<String, String>;

/// Query string and form (or multipart) body, as Graph reads both.
fn params(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Params {
    let mut p: Params = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/x-www-form-urlencoded") {
        p.extend(url::form_urlencoded::parse(body).into_owned());
    } else if let Some(boundary) = ctype
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
    {
        p.extend(multipart_fields(body, boundary.trim_matches('"')));
    }
    p
}

/// Just enough multipart/form-data for `/photos`: text fields, and a `source` file
/// recorded by size.
fn multipart_fields(body: &[u8], boundary: &str) -> Vec<(String, String)> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for part in split_on(body, delimiter.as_bytes()) {
        let Some(at) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..at]);
        let value = &part[at + 4..];
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        if head.contains("filename=") {
            out.push((name.to_string(), format!("upload:{}", value.len())));
        } else {
            out.push((
                name.to_string(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_on<'a>(mut rest: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(rest, delimiter) {
        parts.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
    }
    parts.push(rest);
    parts
}

fn version_ok(v: &str) -> Option<u32> {
    let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
    minor.parse::<u32>().ok()?;
    major.parse().ok()
}

fn proof(secret: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn graph_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

async fn graph(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = inner.lock().unwrap();
    let (status, body) = match handle(&mut g, &method, &uri, &headers, &body) {
        Ok(value) => (StatusCode::OK, value),
        Err(f) => (f.status, f.body),
    };
    let mut response = (status, axum::Json(body)).into_response();
    let h = response.headers_mut();
    if let Some(app) = g.app_usage {
        let v = json!({"call_count": app.call_count, "total_time": app.total_time,
                       "total_cputime": app.total_cputime});
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert("x-app-usage", v);
        }
    }
    if let Some(buc) = g.buc_levels() {
        let v = json!({ g.page_id.clone(): [{
            "type": "pages", "call_count": buc.call_count, "total_time": buc.total_time,
            "total_cputime": buc.total_cputime,
            "estimated_time_to_regain_access": buc.estimated_time_to_regain_access }]});
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert("x-business-use-case-usage", v);
        }
    }
    let trace = g.trace();
    if let Ok(v) = HeaderValue::from_str(&trace) {
        h.insert("x-fb-trace-id", v);
    }
    response
}

fn handle(
    g: &mut Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, GraphFailure> {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let version = segments.first().copied().unwrap_or("");
    let Some(major) = version_ok(version) else {
        return Err(failure(
            g,
            2500,
            None,
            "OAuthException",
            &format!("Unknown path components: /{version}"),
        ));
    };
    if major < 21 || g.expired_versions.contains(version) {
        return Err(failure(
            g,
            2635,
            None,
            "OAuthException",
            &format!(
                "(#2635) You are calling a deprecated version of the Graph API ({version}). \
                 Please update to the latest version: v25.0."
            ),
        ));
    }
    let p = params(uri, headers, body);
    let method = match (method, p.get("method")) {
        (&Method::POST, Some(m)) => m.to_ascii_uppercase(),
        (m, _) => m.as_str().to_string(),
    };

    // The real API takes the token from the header or an `access_token` parameter (query
    // or body); so does the fake, though the adapter only ever uses the header.
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("OAuth "))
        })
        .map(str::to_string);
    let Some(token) = bearer.or_else(|| p.get("access_token").cloned()) else {
        return Err(failure(
            g,
            104,
            None,
            "OAuthException",
            "An access token is required to request this resource.",
        ));
    };
    let caller = if token == g.page_token {
        Caller::Page
    } else if g.app_token.as_deref() == Some(token.as_str()) {
        Caller::App
    } else {
        return Err(failure(
            g,
            190,
            None,
            "OAuthException",
            "Invalid OAuth access token - Cannot parse access token",
        ));
    };
    let rest = &segments[1..];
    let is_debug = rest == ["debug_token"];
    if caller == Caller::Page && g.token_expired && !is_debug {
        let msg = format!(
            "Error validating access token: Session has expired on {}. The current time is {}.",
            (Utc::now() - chrono::Duration::hours(1)).format("%A, %d-%b-%y %H:%M:%S UTC"),
            Utc::now().format("%A, %d-%b-%y %H:%M:%S UTC")
        );
        return Err(failure(g, 190, Some(463), "OAuthException", &msg));
    }
    if let Some(secret) = g.app_secret.clone() {
        match p.get("appsecret_proof") {
            None => {
                return Err(failure(
                    g,
                    100,
                    None,
                    "GraphMethodException",
                    "API calls from the server require an appsecret_proof argument",
                ))
            }
            Some(given) if *given != proof(&secret, &token) => {
                return Err(failure(
                    g,
                    100,
                    None,
                    "GraphMethodException",
                    "Invalid appsecret_proof provided in the API argument",
                ))
            }
            Some(_) => {}
        }
    }

    // Throttling, counted before the call is served.
    if let Some(app) = g.app_usage {
        if app.max() >= 100 {
            return Err(failure(
                g,
                4,
                None,
                "OAuthException",
                "(#4) Application request limit reached",
            ));
        }
    }
    if caller == Caller::Page {
        g.buc_calls += 1;
        if g.buc_blocked() {
            let mut f = failure(
                g,
                80001,
                None,
                "OAuthException",
                "(#80001) There have been too many calls to this Page account. Wait a bit and \
                 try again. For more info, please refer to \
                 https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
            );
            f.body["error"]["is_transient"] = json!(true);
            return Err(f);
        }
    }

    let page = g.page_id.clone();
    match (method.as_str(), rest) {
        ("GET", ["debug_token"]) => Ok(debug_token(g, &p)),
        ("GET", [node]) if *node == page => Ok(page_fields(g, &p)),
        ("POST", [node, "feed"]) if *node == page => {
            require_page(g, caller)?;
            let message = p.get("message").cloned().unwrap_or_default();
            let link = p.get("link").cloned();
            if message.is_empty() && link.is_none() {
                return Err(failure(
                    g,
                    100,
                    None,
                    "OAuthException",
                    "(#100) Missing message or attachment",
                ));
            }
            duplicate_check(g, &message)?;
            let id = g.create_post(message, link, None, None);
            Ok(json!({ "id": id }))
        }
        ("POST", [node, "photos"]) if *node == page => {
            require_page(g, caller)?;
            let image = p.get("url").or_else(|| p.get("source")).cloned();
            let Some(image) = image else {
                return Err(failure(
                    g,
                    324,
                    None,
                    "OAuthException",
                    "(#324) Requires upload file",
                ));
            };
            let caption = p.get("caption").cloned().unwrap_or_default();
            duplicate_check(g, &caption)?;
            let id = g.create_post(caption, None, Some(image), Some(()));
            let photo_id = g.posts.last().and_then(|p| p.photo_id.clone());
            Ok(json!({ "id": photo_id, "post_id": id }))
        }
        ("GET", [node, "posts"] | [node, "feed"]) if *node == page => Ok(list_posts(g, &p)),
        ("GET", [node, "insights"]) => insights(g, node, &p),
        ("DELETE", [node]) => {
            let before = g.posts.len();
            g.posts.retain(|post| post.id != *node);
            if g.posts.len() == before {
                return Err(missing_object(g, &method, node));
            }
            Ok(json!({ "success": true }))
        }
        (_, [node, ..]) => Err(missing_object(g, &method, node)),
        _ => Err(failure(
            g,
            2500,
            None,
            "OAuthException",
            "Unknown path components",
        )),
    }
}

fn missing_object(g: &mut Inner, method: &str, node: &str) -> GraphFailure {
    failure(
        g,
        100,
        Some(33),
        "GraphMethodException",
        &format!(
            "Unsupported {} request. Object with ID '{node}' does not exist, cannot be loaded \
             due to missing permissions, or does not support this operation.",
            method.to_ascii_lowercase()
        ),
    )
}

fn require_page(g: &mut Inner, caller: Caller) -> Result<(), GraphFailure> {
    if caller == Caller::Page && g.scopes.iter().any(|s| s == "pages_manage_posts") {
        return Ok(());
    }
    Err(failure(
        g,
        200,
        None,
        "OAuthException",
        "(#200) If posting to a page, requires both pages_read_engagement and \
         pages_manage_posts permission with page token",
    ))
}

fn duplicate_check(g: &mut Inner, message: &str) -> Result<(), GraphFailure> {
    let last = g.posts.last();
    if !message.is_empty()
        && last
            .is_some_and(|p| p.message == message && Utc::now() - p.created_time < DUPLICATE_WINDOW)
    {
        let mut f = failure(
            g,
            506,
            Some(1_455_006),
            "OAuthException",
            "(#506) Duplicate status message",
        );
        f.body["error"]["is_transient"] = json!(false);
        f.body["error"]["error_user_title"] = json!("Duplicate Status Update");
        f.body["error"]["error_user_msg"] = json!(
            "This status update is identical to the last one you posted. Try posting something \
             different, or delete your previous update."
        );
        return Err(f);
    }
    Ok(())
}

fn debug_token(g: &mut Inner, p: &Params) -> Value {
    let input = p.get("input_token").map(String::as_str).unwrap_or("");
    if input != g.page_token {
        return json!({"data": {"error": {"code": 190, "message": "Invalid OAuth access token."},
                               "is_valid": false, "scopes": []}});
    }
    let now = Utc::now().timestamp();
    let mut data = json!({
        "app_id": "1234567890",
        "type": "PAGE",
        "application": "Noroshi",
        "data_access_expires_at": g.data_access_expires_at,
        "expires_at": g.expires_at,
        "is_valid": !g.token_expired && (g.expires_at == 0 || g.expires_at > now),
        "issued_at": now - 86_400,
        "profile_id": g.page_id,
        "scopes": g.scopes,
        "granular_scopes": [{"scope": "pages_manage_posts", "target_ids": [g.page_id]}],
        "user_id": "5550001",
    });
    if g.token_expired {
        data["error"] = json!({"code": 190, "subcode": 463,
            "message": "Error validating access token: Session has expired."});
    }
    json!({ "data": data })
}

fn page_fields(g: &Inner, p: &Params) -> Value {
    let fields = p.get("fields").map(String::as_str).unwrap_or("name");
    let mut out = json!({ "id": g.page_id });
    for f in fields.split(',').map(str::trim) {
        match f {
            "followers_count" => out["followers_count"] = json!(g.followers),
            "fan_count" => out["fan_count"] = json!(g.fan_count),
            "name" => out["name"] = json!("須坂市 Suzaka City"),
            _ => {}
        }
    }
    out
}

fn list_posts(g: &Inner, p: &Params) -> Value {
    let since = p
        .get("since")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(i64::MIN);
    let limit = p
        .get("limit")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(25)
        .min(100);
    let fields = p
        .get("fields")
        .map(String::as_str)
        .unwrap_or("id,message,created_time");
    let data: Vec<Value> = g
        .posts
        .iter()
        .rev()
        .filter(|post| post.created_time.timestamp() >= since)
        .take(limit)
        .map(|post| {
            let mut v = json!({ "id": post.id });
            for f in fields.split(',').map(str::trim) {
                match f {
                    "message" if !post.message.is_empty() => v["message"] = json!(post.message),
                    "created_time" => v["created_time"] = json!(graph_time(post.created_time)),
                    _ => {}
                }
            }
            v
        })
        .collect();
    json!({ "data": data, "paging": {} })
}

fn insights(g: &mut Inner, node: &str, p: &Params) -> Result<Value, GraphFailure> {
    let is_page = node == g.page_id;
    if !is_page && !g.posts.iter().any(|post| post.id == node) {
        return Err(missing_object(g, "GET", node));
    }
    let metrics: Vec<String> = p
        .get("metric")
        .map(|m| m.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let allowed = if is_page { PAGE_METRICS } else { POST_METRICS };
    // One bad name fails the whole call, retired or unknown alike.
    if metrics.is_empty() || metrics.iter().any(|m| !allowed.contains(&m.as_str())) {
        return Err(failure(
            g,
            100,
            None,
            "OAuthException",
            "(#100) The value must be a valid insights metric",
        ));
    }
    let today = Utc::now().date_naive();
    let data: Vec<Value> = metrics
        .iter()
        .map(|m| {
            if is_page {
                let value = g.page_metrics.get(m).copied().unwrap_or(0);
                let end = |d: chrono::NaiveDate| format!("{}T08:00:00+0000", d.format("%Y-%m-%d"));
                json!({"name": m, "period": "day",
                       "values": [{"value": value / 2, "end_time": end(today - chrono::Duration::days(1))},
                                  {"value": value, "end_time": end(today)}],
                       "title": m, "description": m,
                       "id": format!("{node}/insights/{m}/day")})
            } else {
                let value = g.post_metrics.get(m).copied().unwrap_or(0);
                json!({"name": m, "period": "lifetime", "values": [{"value": value}],
                       "title": m, "description": m,
                       "id": format!("{node}/insights/{m}/lifetime")})
            }
        })
        .collect();
    Ok(json!({ "data": data, "paging": {} }))
}
