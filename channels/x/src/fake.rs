//! A faithful fake of X API v2 on loopback (CHANNELS.md §2.10), for tests in any crate.
//!
//! ```text
//! let fake = noroshi_x::fake::start().await;
//! let channel = noroshi_x::build(&fake.config(), &env)?;   // OAuth 1.0a, pointed at the fake
//! fake.x.set_followers(1200);
//! let posts = fake.x.posts();                                // what was really "posted"
//! let recorded = fake.server.state.requests_to("/2/tweets"); // raw requests, for headers
//! ```
//!
//! It verifies OAuth 1.0a signatures against the URL it was called on and the known
//! secrets (X's 401 body when wrong), OAuth 2.0 bearer tokens with a token endpoint that
//! rotates refresh tokens, validates `POST /2/tweets` (schema keys, weighted length, media
//! ids, replies, duplicate text), keeps 15-minute windows and 24-hour caps with X's headers,
//! and offers knobs: followers, impressions, post age, credits, windows, token expiry, a
//! scripted media `processing_info` sequence, and the 2026 reply restriction of self-serve
//! apps ([`XState::set_refuse_replies`]). Scripted raw responses (timeouts, 5xx after
//! applying) come from the shared toolkit: `fake.server.state.script(...)`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use noroshi_channel_core::fake::FakeServer;
use noroshi_channel_core::fetch::FetchPolicy;
use noroshi_channel_core::SecretString;
use serde_json::{json, Value};

use crate::config::{AuthMode, Config};
use crate::oauth;
use crate::render;

/// The credentials the fake accepts (and [`FakeX::config`] hands to the adapter).
#[derive(Clone, Debug)]
pub struct FakeCredentials {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_token_secret: String,
    pub oauth2_client_id: String,
    /// `Some`: a confidential client (HTTP Basic on the token endpoint); `None`: public.
    pub oauth2_client_secret: Option<String>,
    pub oauth2_access_token: String,
    pub oauth2_refresh_token: String,
}

impl Default for FakeCredentials {
    fn default() -> Self {
        FakeCredentials {
            consumer_key: "fake-consumer-key".into(),
            consumer_secret: "fake-consumer-secret-9f3b".into(),
            access_token: "1600000000000000001-fakeAccessToken".into(),
            access_token_secret: "fake-access-token-secret-77c1".into(),
            oauth2_client_id: "fake-client-id".into(),
            oauth2_client_secret: Some("fake-client-secret-5d2e".into()),
            oauth2_access_token: "fake-oauth2-access-0".into(),
            oauth2_refresh_token: "fake-oauth2-refresh-0".into(),
        }
    }
}

/// A post the fake holds.
#[derive(Clone, Debug)]
pub struct FakePost {
    pub id: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub in_reply_to: Option<String>,
    pub media_ids: Vec<String>,
    pub impressions: i64,
    /// Which credential posted it: `oauth1` or `oauth2`.
    pub auth: String,
}

/// A rate window as X reports it in `*-limit`, `*-remaining`, `*-reset` headers.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub limit: i64,
    pub remaining: i64,
    /// Unix seconds.
    pub reset: i64,
    /// Length of the window in seconds (900 or 86,400).
    pub period: i64,
}

impl Window {
    fn new(limit: i64, period: i64) -> Window {
        Window {
            limit,
            remaining: limit,
            reset: Utc::now().timestamp() + period,
            period,
        }
    }
    fn roll(&mut self, now: i64) {
        if now >= self.reset {
            self.remaining = self.limit;
            self.reset = now + self.period;
        }
    }
}

struct Media {
    created: DateTime<Utc>,
    expires_after_secs: i64,
    total_bytes: Option<usize>,
    received: usize,
    /// `None`: usable (or never needed processing); else the current processing state.
    state: Option<String>,
    processing: VecDeque<Value>,
    finalized: bool,
}

struct Inner {
    user_id: String,
    username: String,
    followers: i64,
    following: i64,
    posts: Vec<FakePost>,
    next_id: u64,
    windows: HashMap<String, Window>,
    user_24h: Window,
    app_24h: Window,
    credits_depleted: bool,
    refuse_replies: bool,
    media: HashMap<String, Media>,
    media_expiry_secs: i64,
    processing_script: Vec<Value>,
    access_token: String,
    refresh_token: String,
    access_expired: bool,
    token_serial: u32,
    nonces: HashSet<String>,
    images: HashMap<String, (String, Vec<u8>)>,
}

/// The fake's platform state and its test knobs.
pub struct XState {
    creds: FakeCredentials,
    inner: Mutex<Inner>,
}

/// A running fake X: the shared toolkit server (recording, scripting) plus X's state.
pub struct FakeX {
    pub server: FakeServer,
    pub x: Arc<XState>,
}

/// Starts the fake with [`FakeCredentials::default`].
pub async fn start() -> FakeX {
    start_with(FakeCredentials::default()).await
}

/// Starts the fake accepting `creds`.
pub async fn start_with(creds: FakeCredentials) -> FakeX {
    let x = Arc::new(XState::new(creds));
    let server = FakeServer::start(router(x.clone()))
        .await
        .expect("bind the fake X server on loopback");
    FakeX { server, x }
}

impl FakeX {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// An enabled OAuth 1.0a `[channels.x]` pointed at this fake. Images may be fetched
    /// from private addresses (the fake's own are on loopback).
    pub fn config(&self) -> Config {
        let c = &self.x.creds;
        Config {
            enabled: true,
            api_base: self.base_url(),
            upload_base: self.base_url(),
            // The fake serves images on loopback too.
            image_fetch: FetchPolicy {
                allow_private: true,
                ..FetchPolicy::default()
            },
            consumer_key: Some(SecretString::from(c.consumer_key.clone())),
            consumer_secret: Some(SecretString::from(c.consumer_secret.clone())),
            access_token: Some(SecretString::from(c.access_token.clone())),
            access_token_secret: Some(SecretString::from(c.access_token_secret.clone())),
            ..Config::default()
        }
    }

    /// An enabled OAuth 2.0 `[channels.x]` pointed at this fake, with its current tokens.
    pub fn config_oauth2(&self) -> Config {
        let c = &self.x.creds;
        let (access, refresh) = self.x.oauth2_tokens();
        Config {
            enabled: true,
            api_base: self.base_url(),
            upload_base: self.base_url(),
            // The fake serves images on loopback too.
            image_fetch: FetchPolicy {
                allow_private: true,
                ..FetchPolicy::default()
            },
            auth: AuthMode::Oauth2,
            oauth2_client_id: Some(SecretString::from(c.oauth2_client_id.clone())),
            oauth2_client_secret: c.oauth2_client_secret.clone().map(SecretString::from),
            oauth2_access_token: Some(SecretString::from(access)),
            oauth2_refresh_token: Some(SecretString::from(refresh)),
            ..Config::default()
        }
    }

    /// The URL at which [`XState::serve_image`] content is served (not an X endpoint: it
    /// stands in for the city website hosting an announcement's images).
    pub fn image_url(&self, name: &str) -> String {
        format!("{}/__fake/media-host/{name}", self.base_url())
    }
}

/// Default per-user 15-minute limits (CHANNELS.md §2.7).
fn default_limit(endpoint: &str) -> i64 {
    match endpoint {
        "POST /2/tweets" => 100,
        "DELETE /2/tweets/:id" => 50,
        "GET /2/tweets" => 5000,
        "GET /2/users/me" => 75,
        "GET /2/users/:id/tweets" => 900,
        "POST /2/media/upload" => 500,
        "GET /2/media/upload" => 1000,
        "POST /2/media/metadata" => 500,
        _ => 1875,
    }
}

const UNAUTHORIZED: &str =
    r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#;
const DUPLICATE: &str = r#"{"detail":"You are not allowed to create a Tweet with duplicate content.","type":"about:blank","title":"Forbidden","status":403}"#;
const TOO_MANY: &str = r#"{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}"#;
/// The 403 X has sent since 2026-02-23 when a self-serve app replies to a post whose author
/// did not mention or quote the app's account (CHANNELS.md §9; observed wording).
pub const REPLY_NOT_ALLOWED: &str = r#"{"detail":"Reply to this conversation is not allowed because you have not been mentioned or otherwise engaged by the author of the post you are replying to.","type":"about:blank","title":"Forbidden","status":403}"#;
const CREDITS: &str = r#"{"title":"CreditsDepleted","detail":"Your enrolled account [0] does not have any credits to fulfill this request.","type":"https://api.twitter.com/2/problems/credits","status":402}"#;

fn problem(status: u16, body: Value) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn raw(status: u16, body: &str) -> Response {
    problem(status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn invalid_request(message: &str) -> Response {
    problem(
        400,
        json!({
            "errors": [{"parameters": {}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request"
        }),
    )
}

fn ok_json(status: u16, v: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), v.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn with_headers(mut r: Response, headers: Vec<(String, String)>) -> Response {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            HeaderValue::try_from(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn window_headers(prefix: &str, w: &Window) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}-limit"), w.limit.to_string()),
        (format!("{prefix}-remaining"), w.remaining.to_string()),
        (format!("{prefix}-reset"), w.reset.to_string()),
    ]
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// How X shows a stored post's text: HTML-escaped, URLs as t.co links, and a t.co link
/// for attached media appended (observed).
fn display_text(p: &FakePost) -> String {
    let mut out = String::new();
    let mut last = 0;
    for (s, e) in render::url_spans(&p.text) {
        out.push_str(&p.text[last..s]);
        out.push_str(&tco(&p.text[s..e]));
        last = e;
    }
    out.push_str(&p.text[last..]);
    let mut out = out
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    if let Some(m) = p.media_ids.first() {
        out.push(' ');
        out.push_str(&tco(m));
    }
    out
}

fn tco(seed: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let code: String = (0..10)
        .map(|i| alphabet[((h >> (i * 6)) % 62) as usize] as char)
        .collect();
    format!("https://t.co/{code}")
}

impl XState {
    fn new(creds: FakeCredentials) -> XState {
        let inner = Inner {
            user_id: "1600000000000000001".into(),
            username: "suzaka_city".into(),
            followers: 0,
            following: 0,
            posts: Vec::new(),
            next_id: 1_880_000_000_000_000_000,
            windows: HashMap::new(),
            user_24h: Window::new(2400, 86_400),
            app_24h: Window::new(10_000, 86_400),
            credits_depleted: false,
            refuse_replies: false,
            media: HashMap::new(),
            media_expiry_secs: 86_400,
            processing_script: Vec::new(),
            access_token: creds.oauth2_access_token.clone(),
            refresh_token: creds.oauth2_refresh_token.clone(),
            access_expired: false,
            token_serial: 0,
            nonces: HashSet::new(),
            images: HashMap::new(),
        };
        XState {
            creds,
            inner: Mutex::new(inner),
        }
    }

    /// The account's numeric id (`GET /2/users/me` → `data.id`).
    pub fn user_id(&self) -> String {
        self.inner.lock().unwrap().user_id.clone()
    }
    /// Sets `public_metrics.followers_count`.
    pub fn set_followers(&self, n: i64) {
        self.inner.lock().unwrap().followers = n;
    }
    /// Sets a post's `impression_count`.
    pub fn set_impressions(&self, id: &str, n: i64) {
        let mut i = self.inner.lock().unwrap();
        if let Some(p) = i.posts.iter_mut().find(|p| p.id == id) {
            p.impressions = n;
        }
    }
    /// Moves a post's creation time back (older than 30 days withholds non-public metrics).
    pub fn age_post(&self, id: &str, days: i64) {
        let mut i = self.inner.lock().unwrap();
        if let Some(p) = i.posts.iter_mut().find(|p| p.id == id) {
            p.created_at -= Duration::days(days);
        }
    }
    /// Every post held, oldest first.
    pub fn posts(&self) -> Vec<FakePost> {
        self.inner.lock().unwrap().posts.clone()
    }
    /// Puts a post on the timeline directly (as if posted by hand or last week).
    pub fn add_post(&self, text: &str, age: Duration) -> String {
        let mut i = self.inner.lock().unwrap();
        let id = i.next_post_id();
        let created_at = Utc::now() - age;
        i.posts.push(FakePost {
            id: id.clone(),
            text: text.into(),
            created_at,
            in_reply_to: None,
            media_ids: vec![],
            impressions: 0,
            auth: "manual".into(),
        });
        i.posts.sort_by_key(|p| p.created_at);
        id
    }
    /// `true`: every request answers `402` credits depleted (pay-per-use).
    pub fn set_credits_depleted(&self, depleted: bool) {
        self.inner.lock().unwrap().credits_depleted = depleted;
    }
    /// `true`: the self-serve reply restriction of 2026-02-23 (CHANNELS.md §9). A reply is
    /// refused with [`REPLY_NOT_ALLOWED`] (403) unless the post it answers mentions the
    /// account (`@username`). Whether replies to one's own posts are exempt is not
    /// documented; this switch assumes the worst: they are not, so a thread's second post
    /// is refused.
    pub fn set_refuse_replies(&self, refuse: bool) {
        self.inner.lock().unwrap().refuse_replies = refuse;
    }
    /// Sets an endpoint's 15-minute window (`"POST /2/tweets"`, `"GET /2/users/me"`, …).
    pub fn set_window(&self, endpoint: &str, limit: i64, remaining: i64, reset_in_secs: i64) {
        let w = Window {
            limit,
            remaining,
            reset: Utc::now().timestamp() + reset_in_secs,
            period: 900,
        };
        self.inner
            .lock()
            .unwrap()
            .windows
            .insert(endpoint.to_string(), w);
    }
    /// Sets the 24-hour post cap of the user (`x-user-limit-24hour-*`).
    pub fn set_user_24h(&self, limit: i64, remaining: i64, reset_in_secs: i64) {
        self.inner.lock().unwrap().user_24h = Window {
            limit,
            remaining,
            reset: Utc::now().timestamp() + reset_in_secs,
            period: 86_400,
        };
    }
    /// Sets the 24-hour post cap of the app (`x-app-limit-24hour-*`).
    pub fn set_app_24h(&self, limit: i64, remaining: i64, reset_in_secs: i64) {
        self.inner.lock().unwrap().app_24h = Window {
            limit,
            remaining,
            reset: Utc::now().timestamp() + reset_in_secs,
            period: 86_400,
        };
    }
    /// The current OAuth 2.0 `(access_token, refresh_token)`.
    pub fn oauth2_tokens(&self) -> (String, String) {
        let i = self.inner.lock().unwrap();
        (i.access_token.clone(), i.refresh_token.clone())
    }
    /// Makes the current OAuth 2.0 access token answer 401 (as after its 2 hours).
    pub fn expire_access_token(&self) {
        self.inner.lock().unwrap().access_expired = true;
    }
    /// Media ids expire this many seconds after upload (default 86,400).
    pub fn set_media_expiry_secs(&self, secs: i64) {
        self.inner.lock().unwrap().media_expiry_secs = secs;
    }
    /// The `processing_info` objects finalize and each STATUS poll return in turn for
    /// chunked uploads (e.g. pending, in_progress, succeeded). Empty: no processing.
    pub fn set_processing_sequence(&self, seq: Vec<Value>) {
        self.inner.lock().unwrap().processing_script = seq;
    }
    /// Serves `bytes` at [`FakeX::image_url`]`(name)` with `content_type`.
    pub fn serve_image(&self, name: &str, content_type: &str, bytes: Vec<u8>) {
        self.inner
            .lock()
            .unwrap()
            .images
            .insert(name.into(), (content_type.into(), bytes));
    }

    /// Checks the credential as X does; `Err` is X's 401.
    #[allow(clippy::result_large_err)]
    fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<&'static str, Response> {
        let deny = || Err(raw(401, UNAUTHORIZED));
        let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return deny();
        };
        if let Some(token) = auth.strip_prefix("Bearer ") {
            let i = self.inner.lock().unwrap();
            return if token == i.access_token && !i.access_expired {
                Ok("oauth2")
            } else {
                deny()
            };
        }
        let Some(params) = oauth::parse_authorization_header(auth) else {
            return deny();
        };
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let c = &self.creds;
        if get("oauth_consumer_key") != Some(c.consumer_key.as_str())
            || get("oauth_token") != Some(c.access_token.as_str())
            || get("oauth_signature_method") != Some("HMAC-SHA1")
            || get("oauth_version").is_some_and(|v| v != "1.0")
        {
            return deny();
        }
        let now = Utc::now().timestamp();
        let fresh = get("oauth_timestamp")
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| (t - now).abs() <= 300);
        let (Some(nonce), Some(signature)) = (get("oauth_nonce"), get("oauth_signature")) else {
            return deny();
        };
        if !fresh || nonce.is_empty() {
            return deny();
        }
        // The URL as actually called: scheme + Host header + path (+ query, signed).
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let Ok(url) = url::Url::parse(&format!("http://{host}{uri}")) else {
            return deny();
        };
        let mut signed = oauth::query_params(&url);
        let is_form = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            signed.extend(oauth::form_params(body));
        }
        signed.extend(
            params
                .iter()
                .filter(|(k, _)| k.starts_with("oauth_") && k != "oauth_signature")
                .cloned(),
        );
        let base =
            oauth::signature_base_string(method.as_str(), &oauth::base_string_uri(&url), &signed);
        let expected = oauth::sign(&base, &c.consumer_secret, &c.access_token_secret);
        if expected != signature {
            return deny();
        }
        // A replayed nonce is refused like a bad signature.
        if !self.inner.lock().unwrap().nonces.insert(nonce.to_string()) {
            return deny();
        }
        Ok("oauth1")
    }

    /// Auth, credits and the endpoint's rate window; `Ok` carries the headers to add.
    #[allow(clippy::result_large_err)]
    fn gate(
        &self,
        endpoint: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(&'static str, Headers), Response> {
        let who = self.authenticate(method, uri, headers, body)?;
        let mut i = self.inner.lock().unwrap();
        if i.credits_depleted {
            return Err(raw(402, CREDITS));
        }
        let now = Utc::now().timestamp();
        let w = i
            .windows
            .entry(endpoint.to_string())
            .or_insert_with(|| Window::new(default_limit(endpoint), 900));
        w.roll(now);
        let exhausted = w.remaining <= 0;
        if !exhausted {
            w.remaining -= 1;
        }
        let mut out = window_headers("x-rate-limit", w);
        let mut capped = false;
        if endpoint == "POST /2/tweets" {
            i.user_24h.roll(now);
            i.app_24h.roll(now);
            capped = i.user_24h.remaining <= 0 || i.app_24h.remaining <= 0;
            if !exhausted && !capped {
                i.user_24h.remaining -= 1;
                i.app_24h.remaining -= 1;
            }
            out.extend(window_headers("x-user-limit-24hour", &i.user_24h));
            out.extend(window_headers("x-app-limit-24hour", &i.app_24h));
        }
        if exhausted || capped {
            return Err(with_headers(raw(429, TOO_MANY), out));
        }
        Ok((who, out))
    }
}

impl Inner {
    /// Snowflake-like: increasing, 19 digits.
    fn next_post_id(&mut self) -> String {
        self.next_id += 1 + (self.next_id % 7) * 4096;
        self.next_id.to_string()
    }

    fn media_usable(&self, id: &str) -> bool {
        self.media.get(id).is_some_and(|m| {
            (Utc::now() - m.created).num_seconds() < m.expires_after_secs
                && m.state.as_deref().is_none_or(|s| s == "succeeded")
                && (m.total_bytes.is_none() || m.finalized)
        })
    }
}

fn router(x: Arc<XState>) -> Router {
    Router::new()
        .route("/2/tweets", post(create_tweet).get(lookup_tweets))
        .route("/2/tweets/{id}", axum::routing::delete(delete_tweet))
        .route("/2/users/me", get(users_me))
        .route("/2/users/{id}/tweets", get(user_tweets))
        .route("/2/media/upload", post(media_upload).get(media_status))
        .route("/2/media/upload/initialize", post(media_initialize))
        .route("/2/media/upload/{id}/append", post(media_append))
        .route("/2/media/upload/{id}/finalize", post(media_finalize))
        .route("/2/media/metadata", post(media_metadata))
        .route("/2/oauth2/token", post(token))
        .route("/__fake/media-host/{name}", get(media_host))
        .with_state(x)
}

type S = State<Arc<XState>>;
/// Rate-limit headers a gated response carries.
type Headers = Vec<(String, String)>;

macro_rules! gate {
    ($x:expr, $endpoint:expr, $method:expr, $uri:expr, $headers:expr, $body:expr) => {
        match $x.gate($endpoint, &$method, &$uri, &$headers, &$body) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

const TWEET_KEYS: &[&str] = &[
    "text",
    "media",
    "reply",
    "quote_tweet_id",
    "poll",
    "reply_settings",
    "card_uri",
    "direct_message_deep_link",
    "for_super_followers_only",
    "nullcast",
    "geo",
    "community_id",
    "share_with_followers",
    "edit_options",
];

fn is_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
}

async fn create_tweet(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (who, h) = gate!(x, "POST /2/tweets", method, uri, headers, body);
    let r = create_tweet_inner(&x, who, &body);
    with_headers(r, h)
}

fn create_tweet_inner(x: &XState, who: &str, body: &[u8]) -> Response {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return invalid_request("The request body is not a JSON object.");
    };
    if let Some(k) = req.keys().find(|k| !TWEET_KEYS.contains(&k.as_str())) {
        return invalid_request(&format!(
            "$.{k}: is not defined in the schema and the schema does not allow additional properties"
        ));
    }
    let exclusive = ["media", "poll", "quote_tweet_id", "card_uri"]
        .iter()
        .filter(|k| req.contains_key(**k))
        .count();
    if exclusive > 1 {
        return invalid_request("media, poll, quote_tweet_id and card_uri are mutually exclusive.");
    }
    let text = match req.get("text") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return invalid_request("$.text: expected a string"),
    };
    let media_ids: Vec<String> = match req.get("media") {
        None => vec![],
        Some(m) => match m["media_ids"].as_array() {
            Some(ids) if (1..=4).contains(&ids.len()) && ids.iter().all(is_id) => ids
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
            _ => return invalid_request("$.media.media_ids: 1 to 4 numeric id strings"),
        },
    };
    if text.as_deref().is_none_or(str::is_empty) && media_ids.is_empty() {
        return invalid_request("$.text: required unless media is present");
    }
    let reply_to = match req.get("reply") {
        None => None,
        Some(r) if is_id(&r["in_reply_to_tweet_id"]) => {
            Some(r["in_reply_to_tweet_id"].as_str().unwrap().to_string())
        }
        Some(_) => return invalid_request("$.reply.in_reply_to_tweet_id: a numeric id string"),
    };
    let text = text.unwrap_or_default();
    if !text.is_empty() {
        let counted = render::count_with(&text, render::config());
        if !counted.valid {
            return problem(
                400,
                json!({
                    "errors": [{"parameters": {"text": [text]},
                                "message": "Your Tweet text is too long. For more information on how X determines text length see https://github.com/twitter/twitter-text."}],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request"
                }),
            );
        }
    }
    let mut i = x.inner.lock().unwrap();
    if let Some(bad) = media_ids.iter().find(|id| !i.media_usable(id)) {
        return invalid_request(&format!("Your media IDs are invalid: {bad}"));
    }
    if let Some(parent) = &reply_to {
        if !i.posts.iter().any(|p| &p.id == parent) {
            return problem(
                403,
                json!({"detail": "You attempted to reply to a Tweet that is deleted or not visible to you.",
                       "type": "about:blank", "title": "Forbidden", "status": 403}),
            );
        }
        if i.refuse_replies {
            let mention = format!("@{}", i.username).to_lowercase();
            let engaged = i
                .posts
                .iter()
                .any(|p| &p.id == parent && p.text.to_lowercase().contains(&mention));
            if !engaged {
                return raw(403, REPLY_NOT_ALLOWED);
            }
        }
    }
    let normalised = render::nfc(&text);
    if !text.is_empty() && i.posts.iter().any(|p| render::nfc(&p.text) == normalised) {
        return raw(403, DUPLICATE);
    }
    let id = i.next_post_id();
    i.posts.push(FakePost {
        id: id.clone(),
        text: text.clone(),
        created_at: Utc::now(),
        in_reply_to: reply_to,
        media_ids,
        impressions: 0,
        auth: who.to_string(),
    });
    ok_json(
        201,
        json!({"data": {"id": id, "text": text, "edit_history_tweet_ids": [id]}}),
    )
}

async fn delete_tweet(
    State(x): S,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "DELETE /2/tweets/:id", method, uri, headers, body);
    let mut i = x.inner.lock().unwrap();
    let before = i.posts.len();
    i.posts.retain(|p| p.id != id);
    let r = if i.posts.len() < before {
        ok_json(200, json!({"data": {"deleted": true}}))
    } else {
        not_found(&id, "ids")
    };
    with_headers(r, h)
}

fn not_found(id: &str, parameter: &str) -> Response {
    problem(
        404,
        json!({"title": "Not Found Error", "detail": format!("Could not find tweet with id: [{id}]."),
               "type": "https://api.twitter.com/2/problems/resource-not-found",
               "resource_type": "tweet", "parameter": parameter, "resource_id": id}),
    )
}

fn fields(q: &HashMap<String, String>, key: &str) -> HashSet<String> {
    q.get(key)
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

fn tweet_json(p: &FakePost, f: &HashSet<String>, errors: &mut Vec<Value>) -> Value {
    let mut t = json!({"id": p.id, "text": display_text(p), "edit_history_tweet_ids": [p.id]});
    if f.contains("created_at") {
        t["created_at"] = json!(p.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    }
    if f.contains("public_metrics") {
        t["public_metrics"] = json!({"retweet_count": 0, "reply_count": 0, "like_count": 0,
            "quote_count": 0, "bookmark_count": 0, "impression_count": p.impressions});
    }
    for private in ["non_public_metrics", "organic_metrics"] {
        if !f.contains(private) {
            continue;
        }
        if Utc::now() - p.created_at < Duration::days(30) {
            t[private] = json!({"impression_count": p.impressions, "url_link_clicks": 0,
                                "user_profile_clicks": 0});
        } else {
            errors.push(json!({"value": p.id, "resource_id": p.id, "resource_type": "tweet",
                "parameter": format!("{private}.impression_count"), "field": private,
                "title": "Field Authorization Error",
                "detail": format!("Sorry, you are not authorized to access '{private}' on a Tweet when it is older than 30 days."),
                "section": "data",
                "type": "https://api.twitter.com/2/problems/not-authorized-for-field"}));
        }
    }
    t
}

async fn lookup_tweets(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "GET /2/tweets", method, uri, headers, body);
    let q = query_map(&uri);
    let ids: Vec<String> = q
        .get("ids")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > 100 || !ids.iter().all(|i| is_id(&json!(i))) {
        return with_headers(invalid_request("ids: 1 to 100 numeric ids"), h);
    }
    let f = fields(&q, "tweet.fields");
    let i = x.inner.lock().unwrap();
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for id in &ids {
        match i.posts.iter().find(|p| &p.id == id) {
            Some(p) => data.push(tweet_json(p, &f, &mut errors)),
            None => errors.push(json!({"value": id, "detail": format!("Could not find tweet with ids: [{id}]."),
                "title": "Not Found Error", "resource_type": "tweet", "parameter": "ids",
                "resource_id": id, "type": "https://api.twitter.com/2/problems/resource-not-found"})),
        }
    }
    let mut out = json!({});
    if !data.is_empty() {
        out["data"] = json!(data);
    }
    if !errors.is_empty() {
        out["errors"] = json!(errors);
    }
    with_headers(ok_json(200, out), h)
}

async fn users_me(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "GET /2/users/me", method, uri, headers, body);
    let f = fields(&query_map(&uri), "user.fields");
    let i = x.inner.lock().unwrap();
    let mut user = json!({"id": i.user_id, "name": "須坂市", "username": i.username});
    if f.contains("public_metrics") {
        user["public_metrics"] = json!({"followers_count": i.followers,
            "following_count": i.following, "tweet_count": i.posts.len(), "listed_count": 0});
    }
    with_headers(ok_json(200, json!({"data": user})), h)
}

async fn user_tweets(
    State(x): S,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "GET /2/users/:id/tweets", method, uri, headers, body);
    let q = query_map(&uri);
    let max = match q.get("max_results").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (5..=100).contains(&n) => n,
        _ => return with_headers(invalid_request("max_results: between 5 and 100"), h),
    };
    let since = match q.get("start_time").map(|v| DateTime::parse_from_rfc3339(v)) {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(_)) => return with_headers(invalid_request("start_time: RFC 3339"), h),
    };
    let f = fields(&q, "tweet.fields");
    let i = x.inner.lock().unwrap();
    if id != i.user_id {
        return with_headers(ok_json(200, json!({"meta": {"result_count": 0}})), h);
    }
    let mut errors = Vec::new();
    let data: Vec<Value> = i
        .posts
        .iter()
        .rev()
        .filter(|p| since.is_none_or(|s| p.created_at >= s))
        .take(max)
        .map(|p| tweet_json(p, &f, &mut errors))
        .collect();
    let mut out = json!({"meta": {"result_count": data.len()}});
    if let (Some(first), Some(last)) = (data.first(), data.last()) {
        out["meta"]["newest_id"] = first["id"].clone();
        out["meta"]["oldest_id"] = last["id"].clone();
        out["data"] = json!(data);
    }
    with_headers(ok_json(200, out), h)
}

/// Minimal `multipart/form-data` reader: `(name, bytes)` per part.
fn multipart(headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let ct = headers.get("content-type")?.to_str().ok()?;
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0)? + delim.len();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            break;
        }
        let head_start = pos + 2;
        let head_end = find(body, b"\r\n\r\n", head_start)?;
        let head = std::str::from_utf8(&body[head_start..head_end]).ok()?;
        let next = find(body, format!("\r\n{delim}").as_bytes(), head_end + 4)?;
        let name = head
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| {
                n.trim_matches('"')
                    .split('"')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })?;
        parts.push((name, body[head_end + 4..next].to_vec()));
        pos = next + 2 + delim.len();
    }
    Some(parts)
}

const MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

async fn media_upload(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "POST /2/media/upload", method, uri, headers, body);
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (media, category, media_type) = if is_json {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(bytes) = v["media"]
            .as_str()
            .and_then(|m| base64::engine::general_purpose::STANDARD.decode(m).ok())
        else {
            return with_headers(invalid_request("media: base64 data required"), h);
        };
        (
            bytes,
            v["media_category"].as_str().unwrap_or("").to_string(),
            v["media_type"].as_str().map(str::to_string),
        )
    } else {
        let Some(parts) = multipart(&headers, &body) else {
            return with_headers(invalid_request("multipart/form-data body expected"), h);
        };
        let get = |n: &str| parts.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let Some(media) = get("media") else {
            return with_headers(invalid_request("media: required"), h);
        };
        (
            media,
            get("media_category")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default(),
            get("media_type").map(|v| String::from_utf8_lossy(&v).into_owned()),
        )
    };
    if category != "tweet_image" && category != "tweet_gif" {
        return with_headers(
            invalid_request("media_category: tweet_image or tweet_gif for one-shot upload"),
            h,
        );
    }
    if media_type
        .as_deref()
        .is_some_and(|t| !MEDIA_TYPES.contains(&t))
    {
        return with_headers(invalid_request("media_type: unsupported"), h);
    }
    let max = if category == "tweet_gif" { 15 } else { 5 } * 1024 * 1024;
    if media.len() > max {
        return with_headers(
            invalid_request(&format!("File size exceeds {max} bytes.")),
            h,
        );
    }
    let mut i = x.inner.lock().unwrap();
    let id = i.next_post_id();
    let expires = i.media_expiry_secs;
    i.media.insert(
        id.clone(),
        Media {
            created: Utc::now(),
            expires_after_secs: expires,
            total_bytes: None,
            received: media.len(),
            state: None,
            processing: VecDeque::new(),
            finalized: true,
        },
    );
    with_headers(
        ok_json(
            200,
            json!({"data": {"id": id, "media_key": format!("3_{id}"), "size": media.len(), "expires_after_secs": expires}}),
        ),
        h,
    )
}

async fn media_initialize(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(
        x,
        "POST /2/media/upload/initialize",
        method,
        uri,
        headers,
        body
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(total), Some(_)) = (v["total_bytes"].as_u64(), v["media_type"].as_str()) else {
        return with_headers(
            invalid_request("total_bytes and media_type are required"),
            h,
        );
    };
    let mut i = x.inner.lock().unwrap();
    let id = i.next_post_id();
    let expires = i.media_expiry_secs;
    let processing: VecDeque<Value> = i.processing_script.iter().cloned().collect();
    i.media.insert(
        id.clone(),
        Media {
            created: Utc::now(),
            expires_after_secs: expires,
            total_bytes: Some(total as usize),
            received: 0,
            state: None,
            processing,
            finalized: false,
        },
    );
    with_headers(
        ok_json(
            200,
            json!({"data": {"id": id, "media_key": format!("7_{id}"), "expires_after_secs": expires}}),
        ),
        h,
    )
}

async fn media_append(
    State(x): S,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(
        x,
        "POST /2/media/upload/:id/append",
        method,
        uri,
        headers,
        body
    );
    let parts = multipart(&headers, &body).unwrap_or_default();
    let media = parts
        .iter()
        .find(|(k, _)| k == "media")
        .map(|(_, v)| v.len());
    let segment = parts
        .iter()
        .find(|(k, _)| k == "segment_index")
        .and_then(|(_, v)| String::from_utf8_lossy(v).parse::<u32>().ok());
    let (Some(len), Some(seg)) = (media, segment) else {
        return with_headers(invalid_request("media and segment_index are required"), h);
    };
    if seg > 999 {
        return with_headers(invalid_request("segment_index: 0 to 999"), h);
    }
    let mut i = x.inner.lock().unwrap();
    let Some(m) = i.media.get_mut(&id) else {
        return with_headers(invalid_request("unknown media id"), h);
    };
    m.received += len;
    let expires_at = (m.created + Duration::seconds(m.expires_after_secs)).timestamp();
    with_headers(ok_json(200, json!({"data": {"expires_at": expires_at}})), h)
}

fn advance_processing(m: &mut Media) -> Option<Value> {
    let next = m.processing.pop_front()?;
    m.state = next["state"].as_str().map(str::to_string);
    Some(next)
}

async fn media_finalize(
    State(x): S,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(
        x,
        "POST /2/media/upload/:id/finalize",
        method,
        uri,
        headers,
        body
    );
    let mut i = x.inner.lock().unwrap();
    let Some(m) = i.media.get_mut(&id) else {
        return with_headers(invalid_request("unknown media id"), h);
    };
    if Some(m.received) != m.total_bytes {
        return with_headers(
            invalid_request("total_bytes does not match the appended segments"),
            h,
        );
    }
    m.finalized = true;
    let mut data = json!({"id": id, "media_key": format!("7_{id}"), "size": m.received,
                          "expires_after_secs": m.expires_after_secs});
    if let Some(p) = advance_processing(m) {
        data["processing_info"] = p;
    }
    with_headers(ok_json(200, json!({"data": data})), h)
}

async fn media_status(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "GET /2/media/upload", method, uri, headers, body);
    let q = query_map(&uri);
    if q.get("command").map(String::as_str) != Some("STATUS") {
        return with_headers(invalid_request("command: STATUS"), h);
    }
    let id = q.get("media_id").cloned().unwrap_or_default();
    let mut i = x.inner.lock().unwrap();
    let Some(m) = i.media.get_mut(&id) else {
        return with_headers(invalid_request("unknown media id"), h);
    };
    let mut data = json!({"id": id, "media_key": format!("7_{id}")});
    match advance_processing(m) {
        Some(p) => data["processing_info"] = p,
        None => {
            if let Some(state) = &m.state {
                data["processing_info"] = json!({"state": state});
            }
        }
    }
    with_headers(ok_json(200, json!({"data": data})), h)
}

async fn media_metadata(
    State(x): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, h) = gate!(x, "POST /2/media/metadata", method, uri, headers, body);
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let alt = v["metadata"]["alt_text"]["text"]
        .as_str()
        .unwrap_or_default();
    if !x.inner.lock().unwrap().media.contains_key(&id) {
        return with_headers(invalid_request("unknown media id"), h);
    }
    if alt.chars().count() > 1000 {
        return with_headers(invalid_request("alt_text: at most 1000 characters"), h);
    }
    with_headers(
        ok_json(
            200,
            json!({"data": {"id": id, "associated_metadata": true}}),
        ),
        h,
    )
}

fn token_error(status: u16, error: &str, description: &str) -> Response {
    ok_json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

async fn token(State(x): S, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = oauth::form_params(&body).into_iter().collect();
    let c = &x.creds;
    let client_ok = match &c.oauth2_client_secret {
        Some(secret) => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|d| d == format!("{}:{secret}", c.oauth2_client_id).as_bytes()),
        None => form.get("client_id") == Some(&c.oauth2_client_id),
    };
    if !client_ok {
        return token_error(
            401,
            "unauthorized_client",
            "Missing valid authorization header",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return token_error(
            400,
            "invalid_request",
            "Value passed for the grant type was invalid.",
        );
    }
    let mut i = x.inner.lock().unwrap();
    if form.get("refresh_token") != Some(&i.refresh_token) {
        return token_error(
            400,
            "invalid_request",
            "Value passed for the token was invalid.",
        );
    }
    i.token_serial += 1;
    i.access_token = format!("fake-oauth2-access-{}", i.token_serial);
    i.refresh_token = format!("fake-oauth2-refresh-{}", i.token_serial);
    i.access_expired = false;
    ok_json(
        200,
        json!({"token_type": "bearer", "expires_in": 7200, "access_token": i.access_token,
               "scope": "tweet.read tweet.write users.read media.write offline.access",
               "refresh_token": i.refresh_token}),
    )
}

async fn media_host(State(x): S, Path(name): Path<String>) -> Response {
    match x.inner.lock().unwrap().images.get(&name) {
        Some((ct, bytes)) => {
            let mut r = (StatusCode::OK, bytes.clone()).into_response();
            if let Ok(v) = HeaderValue::from_str(ct) {
                r.headers_mut().insert("content-type", v);
            }
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
