//! A toolkit for the fake platforms the adapter crates ship for tests (CHANNELS.md §0.2):
//! a loopback server, a record of every request, and scripted responses.
//!
//! Every fake wraps its platform router with [`FakeServer::start`]. Tests then read
//! `GET /__fake/requests` (or [`FakeState::requests`]) and push scripted responses with
//! `POST /__fake/script` (or [`FakeState::script`]); a scripted response replaces the
//! platform's own answer for the next request that reaches a platform path.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// One request as the fake received it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Bytes,
    /// The body as UTF-8 (lossy), for JSON assertions.
    pub body_text: String,
    /// When the fake received it (for latency and pacing measurements).
    #[serde(skip)]
    pub at: std::time::Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A response a test wants the fake to give instead of the platform's own.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ScriptedResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
    /// Wait this long before answering (after the request was read): a timeout test.
    #[serde(default)]
    pub delay_ms: u64,
    /// Only for requests whose path ends with this (default: any platform path).
    #[serde(default)]
    pub path_suffix: Option<String>,
    /// Let the request reach the platform logic (so it takes effect), then answer with
    /// this response anyway: "applied, but the client never heard".
    #[serde(default)]
    pub after_applying: bool,
}

/// The shared record of a fake.
#[derive(Default)]
pub struct FakeState {
    requests: Mutex<Vec<RecordedRequest>>,
    script: Mutex<VecDeque<ScriptedResponse>>,
}

impl FakeState {
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
    /// Requests whose path ends with `suffix`.
    pub fn requests_to(&self, suffix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }
    pub fn script(&self, response: ScriptedResponse) {
        self.script.lock().unwrap().push_back(response);
    }
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
        self.script.lock().unwrap().clear();
    }
    fn take_script(&self, path: &str) -> Option<ScriptedResponse> {
        let mut script = self.script.lock().unwrap();
        let pos = script.iter().position(|s| match &s.path_suffix {
            Some(suffix) => path.ends_with(suffix.as_str()),
            None => true,
        })?;
        script.remove(pos)
    }
}

/// A running fake on 127.0.0.1.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Serves `platform` on an ephemeral loopback port, recording and scripting around it.
    pub async fn start(platform: Router) -> std::io::Result<FakeServer> {
        Self::start_on("127.0.0.1:0", platform).await
    }

    /// Like [`FakeServer::start`] on a given loopback address (a restart test keeps its port).
    pub async fn start_on(bind: &str, platform: Router) -> std::io::Result<FakeServer> {
        let state = Arc::new(FakeState::default());
        let admin = Router::new()
            .route("/__fake/requests", get(list_requests))
            .route("/__fake/script", post(push_script))
            .route("/__fake/reset", post(reset))
            .with_state(state.clone());
        let app = platform
            .layer(middleware::from_fn_with_state(
                state.clone(),
                record_and_script,
            ))
            .merge(admin);
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeServer { addr, state, task })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash), for an adapter's `*_base` key.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn list_requests(State(state): State<Arc<FakeState>>) -> Json<Vec<RecordedRequest>> {
    Json(state.requests())
}

async fn push_script(
    State(state): State<Arc<FakeState>>,
    Json(responses): Json<Vec<ScriptedResponse>>,
) -> StatusCode {
    for r in responses {
        state.script(r);
    }
    StatusCode::NO_CONTENT
}

async fn reset(State(state): State<Arc<FakeState>>) -> StatusCode {
    state.clear();
    StatusCode::NO_CONTENT
}

async fn record_and_script(
    State(state): State<Arc<FakeState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let recorded = RecordedRequest {
        at: std::time::Instant::now(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_text: String::from_utf8_lossy(&body).into_owned(),
        body: body.clone(),
    };
    let path = recorded.path.clone();
    state.requests.lock().unwrap().push(recorded);
    let request = Request::from_parts(parts, Body::from(body));
    match state.take_script(&path) {
        None => next.run(request).await,
        Some(scripted) => {
            if scripted.after_applying {
                let _ = next.run(request).await;
            }
            if scripted.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(scripted.delay_ms)).await;
            }
            scripted_response(scripted)
        }
    }
}

fn scripted_response(s: ScriptedResponse) -> Response {
    let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, s.body).into_response();
    for (k, v) in s.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}
