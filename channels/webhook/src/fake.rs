//! A fake webhook receiver on loopback: checks the signature and timestamp with a known
//! secret (401 on mismatch), honours `Idempotency-Key`, records what it accepted, and can
//! be scripted through the shared fake toolkit.
//!
//! ```ignore
//! let hook = noroshi_webhook::fake::start(Some("s3cret")).await;
//! config.url = hook.url();
//! config.signing_secret = Some("s3cret".into());
//! // … deliver …
//! assert_eq!(hook.received()[0].json()["title"], "…");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use noroshi_channel_core::fake::{FakeServer, FakeState, RecordedRequest, ScriptedResponse};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::sign::{signature, timestamped};

/// A request the receiver accepted (signature valid, not a replay of a known key).
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The id the receiver gave it.
    pub id: String,
}

impl Received {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the receiver names what it accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reply {
    /// `201` with `{"id":"msg-N"}` and a `Location`.
    #[default]
    JsonId,
    /// `201`, empty body, only a `Location`.
    LocationOnly,
    /// `204`, nothing.
    NoContent,
}

struct Inner {
    secret: Option<String>,
    signature_header: String,
    timestamp_header: String,
    max_age_secs: i64,
    required: Vec<(String, String)>,
    reply: Reply,
    seen: HashMap<String, String>,
    received: Vec<Received>,
    next: u64,
}

/// A running fake receiver.
pub struct FakeReceiver {
    /// The loopback server with its request record and script queue.
    pub server: FakeServer,
    inner: Arc<Mutex<Inner>>,
}

/// Starts a receiver; with `secret`, unsigned or wrongly signed requests get `401`.
pub async fn start(secret: Option<&str>) -> FakeReceiver {
    let inner = Arc::new(Mutex::new(Inner {
        secret: secret.map(str::to_string),
        signature_header: "X-Noroshi-Signature".to_string(),
        timestamp_header: "X-Noroshi-Timestamp".to_string(),
        max_age_secs: 300,
        required: Vec::new(),
        reply: Reply::default(),
        seen: HashMap::new(),
        received: Vec::new(),
        next: 1,
    }));
    let router = Router::new().fallback(receive).with_state(inner.clone());
    let server = FakeServer::start(router)
        .await
        .expect("bind the fake webhook receiver on loopback");
    FakeReceiver { server, inner }
}

impl FakeReceiver {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    /// `http://127.0.0.1:PORT/hook`, for `url`.
    pub fn url(&self) -> String {
        format!("{}/hook", self.server.base_url())
    }
    /// The shared request record and script queue.
    pub fn state(&self) -> &FakeState {
        &self.server.state
    }
    /// Every request that arrived, accepted or not.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.state.requests()
    }
    /// Answers the next request with `response` instead of the receiver logic.
    pub fn script(&self, response: ScriptedResponse) {
        self.server.state.script(response)
    }
    /// What the receiver accepted, once per idempotency key.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }
    /// Refuse (`401`) requests without this header value (an API key, a bearer token).
    pub fn require_header(&self, name: &str, value: &str) {
        self.inner
            .lock()
            .unwrap()
            .required
            .push((name.to_string(), value.to_string()));
    }
    /// The header names the adapter was configured with.
    pub fn set_signature_headers(&self, signature: &str, timestamp: &str) {
        let mut g = self.inner.lock().unwrap();
        g.signature_header = signature.to_string();
        g.timestamp_header = timestamp.to_string();
    }
    /// Refuse timestamps further than this from now (default 300 s).
    pub fn set_max_age_secs(&self, secs: i64) {
        self.inner.lock().unwrap().max_age_secs = secs;
    }
    pub fn set_reply(&self, reply: Reply) {
        self.inner.lock().unwrap().reply = reply;
    }
}

fn unauthorized(reason: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "error": reason }))).into_response()
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = inner.lock().unwrap();
    for (name, value) in &g.required {
        if !header(&headers, name).is_some_and(|v| same(v, value)) {
            return unauthorized("missing or wrong credentials");
        }
    }
    if method == Method::HEAD || method == Method::GET {
        return StatusCode::OK.into_response();
    }
    if !matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if let Some(secret) = &g.secret {
        let expected = signature(secret.as_bytes(), &body);
        if !header(&headers, &g.signature_header).is_some_and(|v| same(v, &expected)) {
            return unauthorized("invalid signature");
        }
        let Some(ts) = header(&headers, &g.timestamp_header).and_then(|t| t.parse::<i64>().ok())
        else {
            return unauthorized("missing timestamp");
        };
        let expected = signature(secret.as_bytes(), &timestamped(ts, &body));
        let ts_sig = format!("{}-Signature", g.timestamp_header);
        if !header(&headers, &ts_sig).is_some_and(|v| same(v, &expected)) {
            return unauthorized("invalid timestamp signature");
        }
        if (chrono::Utc::now().timestamp() - ts).abs() > g.max_age_secs {
            return unauthorized("stale timestamp");
        }
    }
    let key = header(&headers, "idempotency-key").map(str::to_string);
    let location_of = |id: &str| format!("{}/{id}", uri.path());
    if let Some(id) = key.as_ref().and_then(|k| g.seen.get(k)).cloned() {
        // A known key: the same answer, nothing new accepted.
        return (StatusCode::OK, Json(json!({ "id": id, "duplicate": true }))).into_response();
    }
    let id = format!("msg-{}", g.next);
    g.next += 1;
    if let Some(k) = &key {
        g.seen.insert(k.clone(), id.clone());
    }
    g.received.push(Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        idempotency_key: key,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        id: id.clone(),
    });
    let location = HeaderValue::from_str(&location_of(&id)).expect("ascii path");
    match g.reply {
        Reply::JsonId => {
            let mut r = (StatusCode::CREATED, Json(json!({ "id": id }))).into_response();
            r.headers_mut().insert("location", location);
            r
        }
        Reply::LocationOnly => {
            let mut r = StatusCode::CREATED.into_response();
            r.headers_mut().insert("location", location);
            r
        }
        Reply::NoContent => StatusCode::NO_CONTENT.into_response(),
    }
}
