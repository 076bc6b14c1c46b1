//! A LINE Messaging API server on loopback that behaves like LINE (CHANNELS.md §1.9): Bearer
//! check, validation with LINE's error bodies, the retry-key store, per-endpoint rate
//! windows, a monthly quota, insight counters, bot info and narrowcast progress.
//!
//! ```ignore
//! let fake = noroshi_line::fake::start(FakeOptions::default()).await;
//! // point `[channels.line] api_base` at fake.base_url(), token FakeOptions::default().access_token
//! fake.exhaust_quota();
//! fake.refuse_sends(Some(TooMany::Concurrency)); // each of LINE's four 429s on demand
//! assert_eq!(fake.accepted().len(), 0);
//! ```
//!
//! Every answer carries `x-line-request-id`. Recording and scripted responses come from
//! [`noroshi_channel_core::fake`] (`fake.server.state`, `POST /__fake/script`).

pub mod openapi;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use noroshi_channel_core::fake::{FakeServer, RecordedRequest, ScriptedResponse};
use serde_json::{json, Value};

use self::openapi::{is_uuid, OpenApi};
use crate::error::{
    ADDITIONAL_MESSAGE_LIMIT, CONCURRENT_LIMIT, MONTHLY_LIMIT, RATE_LIMIT_EXCEEDED,
    RETRY_KEY_ACCEPTED,
};

/// 401 for a wrong or revoked token (CHANNELS.md §1.6).
pub const INVALID_TOKEN: &str = "Authentication failed due to the following reason: invalid token. Confirm that the access token in the authorization header is valid.";
/// 401 without a Bearer header.
pub const MISSING_TOKEN: &str =
    "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'";
/// 400 for a malformed `X-Line-Retry-Key`.
pub const INVALID_RETRY_KEY: &str = "The value for the 'X-Line-Retry-Key' header is invalid";

const MESSAGE_TYPES: &[&str] = &[
    "text", "textV2", "image", "video", "audio", "location", "sticker", "template", "imagemap",
    "flex", "coupon",
];
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How the fake starts.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The one channel access token it accepts.
    pub access_token: String,
    /// Broadcast requests per hour (LINE: 60).
    pub broadcast_per_hour: usize,
    /// Narrowcast requests per hour (LINE: 60).
    pub narrowcast_per_hour: usize,
    /// Insight requests per hour, shared by every insight endpoint (LINE: 60).
    pub insight_per_hour: usize,
    /// Requests per second to every other endpoint (LINE: 2,000).
    pub others_per_second: usize,
    /// The month's target limit (`{"type":"limited","value":…}`); `None` = `{"type":"none"}`.
    pub monthly_limit: Option<i64>,
    /// Cumulative friends, reachable by demographics, and blocks (insight/followers).
    pub followers: i64,
    pub targeted_reaches: i64,
    pub blocks: i64,
    /// Validate every send body against this OpenAPI document's request schemas too (e.g.
    /// `shared/conformance/line-openapi/messaging-api.yml`).
    pub openapi: Option<PathBuf>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            access_token: "fake-line-channel-access-token".into(),
            broadcast_per_hour: 60,
            narrowcast_per_hour: 60,
            insight_per_hour: 60,
            others_per_second: 2000,
            monthly_limit: Some(5000),
            followers: 1200,
            targeted_reaches: 900,
            blocks: 100,
            openapi: None,
        }
    }
}

/// LINE's four documented causes of `429 Too Many Requests` (CHANNELS.md §9), each answered
/// with its own `message`. A 429 is processed for nobody: no message is sent, no retry key
/// is stored, nothing is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TooMany {
    /// The endpoint's rate limit ([`RATE_LIMIT_EXCEEDED`]).
    RateLimit,
    /// The limit on concurrent operations ([`CONCURRENT_LIMIT`]).
    Concurrency,
    /// The free monthly message count is used up ([`MONTHLY_LIMIT`]).
    FreeMessages,
    /// The target limit for additional messages is reached ([`ADDITIONAL_MESSAGE_LIMIT`]).
    AdditionalMessages,
}

impl TooMany {
    /// The body's `message` LINE sends for this cause.
    pub fn message(self) -> &'static str {
        match self {
            TooMany::RateLimit => RATE_LIMIT_EXCEEDED,
            TooMany::Concurrency => CONCURRENT_LIMIT,
            TooMany::FreeMessages => MONTHLY_LIMIT,
            TooMany::AdditionalMessages => ADDITIONAL_MESSAGE_LIMIT,
        }
    }
}

/// A send LINE accepted (2xx), in order.
#[derive(Clone, Debug)]
pub struct AcceptedSend {
    /// `broadcast`, `multicast`, `narrowcast` or `push`.
    pub endpoint: String,
    /// The `x-line-request-id` of the accepting response.
    pub request_id: String,
    pub retry_key: Option<String>,
    pub body: Value,
    /// Messages counted against the quota (recipients of this request).
    pub recipients: i64,
    pub at: DateTime<Utc>,
}

struct AcceptedKey {
    request_id: String,
    sent_messages: Option<Value>,
    at: DateTime<Utc>,
}

struct Narrowcast {
    phase: String,
    target: i64,
    accepted_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    failure: Option<(i64, String)>,
}

struct Inner {
    access_token: String,
    clock_offset: TimeDelta,
    keys: HashMap<String, AcceptedKey>,
    windows: HashMap<&'static str, VecDeque<DateTime<Utc>>>,
    monthly_limit: Option<i64>,
    usage: i64,
    followers: i64,
    targeted_reaches: i64,
    blocks: i64,
    accepted: Vec<AcceptedSend>,
    narrowcasts: HashMap<String, Narrowcast>,
    impressions: HashMap<String, (i64, i64)>,
    deliveries: HashMap<String, HashMap<String, i64>>,
    next_message_id: u64,
    /// Every send is answered with this 429 while set.
    too_many: Option<TooMany>,
}

struct Shared {
    options: FakeOptions,
    openapi: Option<OpenApi>,
    inner: Mutex<Inner>,
}

/// A running fake LINE.
pub struct FakeLine {
    /// The loopback server with its request record and response script.
    pub server: FakeServer,
    shared: Arc<Shared>,
}

/// Starts a fake LINE on 127.0.0.1 (an ephemeral port).
///
/// Panics if the port cannot be bound or `options.openapi` cannot be read: both are test
/// setup errors.
pub async fn start(options: FakeOptions) -> FakeLine {
    let openapi = options.openapi.as_ref().map(|p| {
        OpenApi::load(p)
            .unwrap_or_else(|e| panic!("fake LINE: cannot load the OpenAPI document: {e}"))
    });
    let inner = Inner {
        access_token: options.access_token.clone(),
        clock_offset: TimeDelta::zero(),
        keys: HashMap::new(),
        windows: HashMap::new(),
        monthly_limit: options.monthly_limit,
        usage: 0,
        followers: options.followers,
        targeted_reaches: options.targeted_reaches,
        blocks: options.blocks,
        accepted: Vec::new(),
        narrowcasts: HashMap::new(),
        impressions: HashMap::new(),
        deliveries: HashMap::new(),
        next_message_id: 461_230_966_842_064_897,
        too_many: None,
    };
    let shared = Arc::new(Shared {
        options,
        openapi,
        inner: Mutex::new(inner),
    });
    let router = Router::new().fallback(handle).with_state(shared.clone());
    let server = FakeServer::start(router)
        .await
        .expect("fake LINE binds a loopback port");
    FakeLine { server, shared }
}

impl FakeLine {
    /// `http://127.0.0.1:PORT`, for `[channels.line] api_base`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    /// Every request received, in order (including ones answered by a script).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.state.requests()
    }
    /// Requests whose path ends with `suffix` (`/message/broadcast`).
    pub fn requests_to(&self, suffix: &str) -> Vec<RecordedRequest> {
        self.server.state.requests_to(suffix)
    }
    /// Queues a scripted response (see [`ScriptedResponse`]).
    pub fn script(&self, response: ScriptedResponse) {
        self.server.state.script(response)
    }
    /// Sends LINE accepted (2xx), in order.
    pub fn accepted(&self) -> Vec<AcceptedSend> {
        self.lock().accepted.clone()
    }
    /// Accepted sends to one endpoint (`broadcast`).
    pub fn accepted_to(&self, endpoint: &str) -> Vec<AcceptedSend> {
        self.accepted()
            .into_iter()
            .filter(|a| a.endpoint == endpoint)
            .collect()
    }
    /// Replaces the accepted token (a revoked token is a changed one).
    pub fn set_access_token(&self, token: &str) {
        self.lock().access_token = token.to_string();
    }
    /// The month's target limit; `None` for `{"type":"none"}`.
    pub fn set_monthly_limit(&self, limit: Option<i64>) {
        self.lock().monthly_limit = limit;
    }
    /// Messages counted this month (`totalUsage`).
    pub fn set_usage(&self, usage: i64) {
        self.lock().usage = usage;
    }
    pub fn usage(&self) -> i64 {
        self.lock().usage
    }
    /// Uses up the month's quota: the next send gets `429 You have reached your monthly limit.`
    pub fn exhaust_quota(&self) {
        let mut inner = self.lock();
        let limit = *inner.monthly_limit.get_or_insert(5000);
        inner.usage = limit;
    }
    /// While `Some`, every send (broadcast, multicast, narrowcast, push) with a valid body
    /// and a fresh retry key is answered `429` with that cause's message; `None` lifts it.
    pub fn refuse_sends(&self, cause: Option<TooMany>) {
        self.lock().too_many = cause;
    }
    /// Sets the insight/followers counters.
    pub fn set_followers(&self, followers: i64, targeted_reaches: i64, blocks: i64) {
        let mut inner = self.lock();
        inner.followers = followers;
        inner.targeted_reaches = targeted_reaches;
        inner.blocks = blocks;
    }
    /// A new friend (`followers` never decreases).
    pub fn follow(&self) {
        self.lock().followers += 1;
    }
    /// A friend blocks the account.
    pub fn block(&self) {
        self.lock().blocks += 1;
    }
    /// Unique impressions and clicks of an accepted broadcast/narrowcast
    /// (insight/message/event; LINE shows `null` below 20).
    pub fn set_impressions(&self, request_id: &str, unique_impression: i64, unique_click: i64) {
        self.lock()
            .impressions
            .insert(request_id.to_string(), (unique_impression, unique_click));
    }
    /// Forces a narrowcast's phase (`waiting`, `sending`, `succeeded`).
    pub fn set_narrowcast_phase(&self, request_id: &str, phase: &str) {
        if let Some(n) = self.lock().narrowcasts.get_mut(request_id) {
            n.phase = phase.to_string();
        }
    }
    /// Makes a narrowcast fail with LINE's `errorCode` and `failedDescription`.
    pub fn fail_narrowcast(&self, request_id: &str, error_code: i64, description: &str) {
        let now = self.now();
        if let Some(n) = self.lock().narrowcasts.get_mut(request_id) {
            n.phase = "failed".into();
            n.completed_at = Some(now);
            n.failure = Some((error_code, description.to_string()));
        }
    }
    /// A number in insight/message/delivery for `date` (`yyyyMMdd`), e.g. `apiBroadcast`.
    pub fn set_delivery_count(&self, date: &str, field: &str, n: i64) {
        self.lock()
            .deliveries
            .entry(date.to_string())
            .or_default()
            .insert(field.to_string(), n);
    }
    /// Moves the fake's clock (retry keys expire after 24 h, rate windows slide).
    pub fn advance(&self, by: std::time::Duration) {
        self.lock().clock_offset += TimeDelta::from_std(by).unwrap_or(TimeDelta::zero());
    }
    /// The fake's time.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.lock().clock_offset
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }
}

/// A webhook body with one `follow` event, as LINE sends it.
pub fn follow_event_body(destination: &str, user_id: &str, timestamp_ms: i64) -> String {
    json!({
        "destination": destination,
        "events": [{
            "type": "follow",
            "timestamp": timestamp_ms,
            "source": {"type": "user", "userId": user_id},
            "replyToken": "bb173f4d9cf64aed9d408ab4e36339ad",
            "mode": "active",
            "webhookEventId": format!("01FAKE{timestamp_ms:020}"),
            "deliveryContext": {"isRedelivery": false},
            "follow": {"isUnblocked": false}
        }]
    })
    .to_string()
}

/// Posts `body` to a webhook URL signed with `channel_secret`, as LINE would
/// (`x-line-signature`), for tests of the daemon's inbound route.
pub async fn send_webhook(
    client: &reqwest::Client,
    url: &str,
    channel_secret: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header(
            crate::webhook::SIGNATURE_HEADER,
            crate::webhook::sign(channel_secret, body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
}

fn line_json(status: StatusCode, request_id: &str, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-line-request-id", v);
    }
    response
}

fn error(status: StatusCode, request_id: &str, message: &str) -> Response {
    line_json(status, request_id, json!({"message": message}))
}

fn detail(property: impl Into<String>, message: impl Into<String>) -> Value {
    json!({"message": message.into(), "property": property.into()})
}

fn jst_date(t: DateTime<Utc>) -> String {
    t.with_timezone(&noroshi_channel_core::jst())
        .format("%Y%m%d")
        .to_string()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The rate window an endpoint belongs to, its limit and its length.
fn window_of(options: &FakeOptions, path: &str) -> (&'static str, usize, TimeDelta) {
    match path {
        "/v2/bot/message/broadcast" => {
            ("broadcast", options.broadcast_per_hour, TimeDelta::hours(1))
        }
        "/v2/bot/message/narrowcast" => (
            "narrowcast",
            options.narrowcast_per_hour,
            TimeDelta::hours(1),
        ),
        p if p.starts_with("/v2/bot/insight/") => {
            ("insight", options.insight_per_hour, TimeDelta::hours(1))
        }
        _ => ("others", options.others_per_second, TimeDelta::seconds(1)),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let rid = request_id.as_str();
    let path = uri.path().to_string();
    let mut inner = shared.inner.lock().unwrap();
    let now = Utc::now() + inner.clock_offset;

    match headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        None => return error(StatusCode::UNAUTHORIZED, rid, MISSING_TOKEN),
        Some(token) if token != inner.access_token => {
            return error(StatusCode::UNAUTHORIZED, rid, INVALID_TOKEN)
        }
        Some(_) => {}
    }

    let send = path
        .strip_prefix("/v2/bot/message/")
        .filter(|e| matches!(*e, "broadcast" | "multicast" | "narrowcast" | "push"))
        .map(str::to_string);
    let validate_only = path
        .strip_prefix("/v2/bot/message/validate/")
        .filter(|e| {
            matches!(
                *e,
                "broadcast" | "multicast" | "narrowcast" | "push" | "reply"
            )
        })
        .map(str::to_string);
    let known_get = matches!(
        path.as_str(),
        "/v2/bot/message/quota"
            | "/v2/bot/message/quota/consumption"
            | "/v2/bot/message/progress/narrowcast"
            | "/v2/bot/insight/followers"
            | "/v2/bot/insight/message/delivery"
            | "/v2/bot/insight/message/event"
            | "/v2/bot/info"
    );
    let is_post = send.is_some() || validate_only.is_some();
    if (is_post && method != Method::POST) || (known_get && method != Method::GET) {
        return error(StatusCode::METHOD_NOT_ALLOWED, rid, "Method Not Allowed");
    }
    if !is_post && !known_get {
        return error(StatusCode::NOT_FOUND, rid, "Not found");
    }

    // Retries under a retry key count against the limit too, so the window comes first.
    let (window, limit, length) = window_of(&shared.options, &path);
    let slots = inner.windows.entry(window).or_default();
    while slots.front().is_some_and(|t| *t + length <= now) {
        slots.pop_front();
    }
    if slots.len() >= limit {
        return error(StatusCode::TOO_MANY_REQUESTS, rid, RATE_LIMIT_EXCEEDED);
    }
    slots.push_back(now);

    if let Some(kind) = validate_only {
        return match check_body(&shared, &headers, &body, &kind) {
            Err(r) => r(rid),
            Ok(_) => line_json(StatusCode::OK, rid, json!({})),
        };
    }
    let Some(endpoint) = send else {
        return read_endpoint(&mut inner, &path, &uri, now, rid);
    };

    let retry_key = match headers.get("x-line-retry-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if is_uuid(k) => Some(k.to_ascii_lowercase()),
        Some(_) => return error(StatusCode::BAD_REQUEST, rid, INVALID_RETRY_KEY),
    };
    if let Some(key) = &retry_key {
        inner.keys.retain(|_, k| k.at + TimeDelta::hours(24) > now);
        if let Some(accepted) = inner.keys.get(key) {
            let mut body = json!({"message": RETRY_KEY_ACCEPTED});
            if let Some(sent) = &accepted.sent_messages {
                body["sentMessages"] = sent.clone();
            }
            let mut response = line_json(StatusCode::CONFLICT, rid, body);
            if let Ok(v) = HeaderValue::from_str(&accepted.request_id) {
                response
                    .headers_mut()
                    .insert("x-line-accepted-request-id", v);
            }
            return response;
        }
    }

    let value = match check_body(&shared, &headers, &body, &endpoint) {
        Err(r) => return r(rid),
        Ok(v) => v,
    };

    let reachable = (inner.followers - inner.blocks).max(0);
    let recipients = match endpoint.as_str() {
        "broadcast" => reachable,
        "multicast" => value["to"].as_array().map_or(0, |a| a.len() as i64),
        "push" => 1,
        _ => value
            .pointer("/limit/max")
            .and_then(Value::as_i64)
            .map_or(reachable, |m| m.min(reachable)),
    };
    if let Some(cause) = inner.too_many {
        return error(StatusCode::TOO_MANY_REQUESTS, rid, cause.message());
    }
    if let Some(limit) = inner.monthly_limit {
        if inner.usage + recipients > limit {
            return error(StatusCode::TOO_MANY_REQUESTS, rid, MONTHLY_LIMIT);
        }
    }
    inner.usage += recipients;
    let messages = value["messages"].as_array().map_or(0, Vec::len);
    let today = jst_date(now);
    let stats = inner.deliveries.entry(today).or_default();
    let fields: &[&str] = match endpoint.as_str() {
        "broadcast" => &["broadcast", "apiBroadcast"],
        "narrowcast" => &["targeting", "apiNarrowcast"],
        "multicast" => &["apiMulticast"],
        _ => &["apiPush"],
    };
    for f in fields {
        *stats.entry(f.to_string()).or_default() += recipients;
    }
    let sent_messages = (endpoint == "push").then(|| {
        let ids: Vec<Value> = (0..messages)
            .map(|_| {
                inner.next_message_id += 1;
                json!({"id": inner.next_message_id.to_string(), "quoteToken": format!("q{}", inner.next_message_id)})
            })
            .collect();
        Value::Array(ids)
    });
    if let Some(key) = &retry_key {
        inner.keys.insert(
            key.clone(),
            AcceptedKey {
                request_id: request_id.clone(),
                sent_messages: sent_messages.clone(),
                at: now,
            },
        );
    }
    if endpoint == "narrowcast" {
        inner.narrowcasts.insert(
            request_id.clone(),
            Narrowcast {
                phase: "waiting".into(),
                target: recipients,
                accepted_at: now,
                completed_at: None,
                failure: None,
            },
        );
    }
    inner.accepted.push(AcceptedSend {
        endpoint: endpoint.clone(),
        request_id: request_id.clone(),
        retry_key,
        body: value,
        recipients,
        at: now,
    });
    match endpoint.as_str() {
        "narrowcast" => line_json(StatusCode::ACCEPTED, rid, json!({})),
        "push" => line_json(
            StatusCode::OK,
            rid,
            json!({"sentMessages": sent_messages.unwrap_or_default()}),
        ),
        _ => line_json(StatusCode::OK, rid, json!({})),
    }
}

type Reject = Box<dyn FnOnce(&str) -> Response>;

/// Content type, size, JSON, LINE's prose limits and (when loaded) the OpenAPI schema.
fn check_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
    endpoint: &str,
) -> Result<Value, Reject> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(Box::new(move |rid| {
            error(
                StatusCode::BAD_REQUEST,
                rid,
                &format!("The content type, {content_type}, is not supported"),
            )
        }));
    }
    if body.len() > BODY_LIMIT {
        return Err(Box::new(|rid| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                rid,
                "Request Entity Too Large",
            )
        }));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| -> Reject {
        let message = format!(
            "The request body could not be parsed as JSON (line: {}, column: {})",
            e.line(),
            e.column()
        );
        Box::new(move |rid| error(StatusCode::BAD_REQUEST, rid, &message))
    })?;
    let mut details = prose_rules(endpoint, &value);
    if let Some(api) = &shared.openapi {
        let schema = match endpoint {
            "broadcast" => "BroadcastRequest",
            "multicast" => "MulticastRequest",
            "narrowcast" => "NarrowcastRequest",
            "push" => "PushMessageRequest",
            _ => "ReplyMessageRequest",
        };
        for e in api.validate(schema, &value) {
            let d = detail(e.property, e.message);
            if !details.contains(&d) {
                details.push(d);
            }
        }
    }
    if details.is_empty() {
        return Ok(value);
    }
    Err(Box::new(move |rid| {
        line_json(
            StatusCode::BAD_REQUEST,
            rid,
            json!({
                "message": format!("The request body has {} error(s)", details.len()),
                "details": details
            }),
        )
    }))
}

/// The limits LINE documents in prose (the OpenAPI file omits most of them).
fn prose_rules(endpoint: &str, v: &Value) -> Vec<Value> {
    let mut details = Vec::new();
    let Some(obj) = v.as_object() else {
        return vec![detail("", "Must be an object")];
    };
    match obj.get("messages").and_then(Value::as_array) {
        None => details.push(detail("messages", "Must be specified")),
        Some(messages) => {
            if messages.is_empty() || messages.len() > crate::render::MAX_MESSAGES {
                details.push(detail("messages", "Size must be between 1 and 5"));
            }
            for (i, m) in messages.iter().enumerate() {
                message_rules(&format!("messages[{i}]"), m, &mut details);
            }
        }
    }
    match endpoint {
        "multicast" => match obj.get("to").and_then(Value::as_array) {
            None => details.push(detail("to", "Must be specified")),
            Some(to) => {
                if to.is_empty() || to.len() > crate::render::MULTICAST_CHUNK {
                    details.push(detail("to", "Size must be between 1 and 500"));
                }
                for (i, id) in to.iter().enumerate() {
                    if !id
                        .as_str()
                        .is_some_and(|id| crate::config::is_line_id(id, &['U']))
                    {
                        details.push(detail(format!("to[{i}]"), "Invalid user ID"));
                    }
                }
            }
        },
        "push"
            if !obj
                .get("to")
                .and_then(Value::as_str)
                .is_some_and(|id| crate::config::is_line_id(id, &['U', 'C', 'R'])) =>
        {
            details.push(detail("to", "Invalid destination"));
        }
        "narrowcast" => {
            if let Some(max) = obj.get("limit").and_then(|l| l.get("max")) {
                if max.as_i64().is_none_or(|m| m < 1) {
                    details.push(detail("limit.max", "Must be at least 1"));
                }
            }
        }
        _ => {}
    }
    details
}

fn message_rules(path: &str, m: &Value, details: &mut Vec<Value>) {
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
    if !MESSAGE_TYPES.contains(&kind) {
        details.push(detail(
            format!("{path}.type"),
            format!(
                "Must be one of the following values: [{}]",
                MESSAGE_TYPES.join(", ")
            ),
        ));
        return;
    }
    let utf16 = |key: &str| {
        m.get(key)
            .and_then(Value::as_str)
            .map(crate::render::utf16_len)
    };
    match kind {
        "text" => match utf16("text") {
            None | Some(0) => details.push(detail(format!("{path}.text"), "May not be empty")),
            Some(n) if n > crate::render::MAX_TEXT_UTF16 => details.push(detail(
                format!("{path}.text"),
                "Length must be between 0 and 5000",
            )),
            _ => {}
        },
        "flex" => {
            match utf16("altText") {
                None | Some(0) => {
                    details.push(detail(format!("{path}.altText"), "May not be empty"))
                }
                Some(n) if n > crate::render::MAX_ALT_TEXT => details.push(detail(
                    format!("{path}.altText"),
                    "Length must be between 0 and 1500",
                )),
                _ => {}
            }
            let contents = m.get("contents");
            let size = contents.map_or(0, |c| c.to_string().len());
            match contents.and_then(|c| c.get("type")).and_then(Value::as_str) {
                Some("bubble") if size > crate::render::MAX_BUBBLE_BYTES => details.push(detail(
                    format!("{path}.contents"),
                    "Size of a bubble must be at most 30KB",
                )),
                Some("carousel") => {
                    let n = contents
                        .and_then(|c| c.get("contents"))
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    if n == 0 || n > 12 || size > 50 * 1024 {
                        details.push(detail(
                            format!("{path}.contents"),
                            "A carousel holds 1 to 12 bubbles and at most 50KB",
                        ));
                    }
                }
                Some("bubble") => {}
                _ => details.push(detail(
                    format!("{path}.contents.type"),
                    "Must be one of the following values: [bubble, carousel]",
                )),
            }
        }
        "image" => {
            for key in ["originalContentUrl", "previewImageUrl"] {
                let url = m.get(key).and_then(Value::as_str).unwrap_or("");
                if !url.starts_with("https://") || url.len() > crate::render::MAX_IMAGE_URL {
                    details.push(detail(
                        format!("{path}.{key}"),
                        "Must be an HTTPS URL of at most 2000 characters",
                    ));
                }
            }
        }
        _ => {}
    }
}

/// The GET endpoints: quota, progress, insight, bot info.
fn read_endpoint(
    inner: &mut Inner,
    path: &str,
    uri: &Uri,
    now: DateTime<Utc>,
    rid: &str,
) -> Response {
    let ok = |body: Value| line_json(StatusCode::OK, rid, body);
    match path {
        "/v2/bot/message/quota" => ok(match inner.monthly_limit {
            Some(v) => json!({"type": "limited", "value": v}),
            None => json!({"type": "none"}),
        }),
        "/v2/bot/message/quota/consumption" => ok(json!({"totalUsage": inner.usage})),
        "/v2/bot/info" => ok(json!({
            "userId": "U4af4980629c0e9e2e2f0e7a7a2b5c3d1",
            "basicId": "@216ruxyz",
            "displayName": "須坂市 (fake)",
            "chatMode": "bot",
            "markAsReadMode": "auto"
        })),
        "/v2/bot/message/progress/narrowcast" => {
            let Some(id) = query_param(uri, "requestId") else {
                return line_json(
                    StatusCode::BAD_REQUEST,
                    rid,
                    json!({"message": "The request body has 1 error(s)", "details": [detail("requestId", "Must be specified")]}),
                );
            };
            let Some(n) = inner.narrowcasts.get_mut(&id) else {
                return error(StatusCode::NOT_FOUND, rid, "Not found");
            };
            let answer_phase = n.phase.clone();
            // Each poll moves a narrowcast on one phase, like a send that takes a while.
            match n.phase.as_str() {
                "waiting" => n.phase = "sending".into(),
                "sending" => {
                    n.phase = "succeeded".into();
                    n.completed_at = Some(now);
                }
                _ => {}
            }
            let mut body = json!({
                "phase": answer_phase,
                "acceptedTime": n.accepted_at.to_rfc3339(),
                "targetCount": n.target,
            });
            match answer_phase.as_str() {
                "succeeded" => {
                    body["successCount"] = json!(n.target);
                    body["failureCount"] = json!(0);
                    body["completedTime"] = json!(n.completed_at.unwrap_or(now).to_rfc3339());
                }
                "failed" => {
                    let (code, description) =
                        n.failure.clone().unwrap_or((1, "internal error".into()));
                    body["errorCode"] = json!(code);
                    body["failedDescription"] = json!(description);
                    body["completedTime"] = json!(n.completed_at.unwrap_or(now).to_rfc3339());
                }
                _ => {}
            }
            ok(body)
        }
        "/v2/bot/insight/followers" | "/v2/bot/insight/message/delivery" => {
            let today = jst_date(now);
            let date =
                query_param(uri, "date").unwrap_or_else(|| jst_date(now - TimeDelta::days(1)));
            if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
                return line_json(
                    StatusCode::BAD_REQUEST,
                    rid,
                    json!({"message": "The request body has 1 error(s)", "details": [detail("date", "Must match ^[0-9]{8}$")]}),
                );
            }
            if date >= today {
                return ok(json!({"status": "unready"}));
            }
            if date.as_str() < "20190101" {
                return ok(json!({"status": "out_of_service"}));
            }
            if path.ends_with("followers") {
                return ok(json!({
                    "status": "ready",
                    "followers": inner.followers,
                    "targetedReaches": inner.targeted_reaches,
                    "blocks": inner.blocks
                }));
            }
            let mut body = json!({"status": "ready"});
            let counts = inner.deliveries.get(&date);
            for f in [
                "broadcast",
                "targeting",
                "autoResponse",
                "welcomeResponse",
                "chat",
                "apiBroadcast",
                "apiPush",
                "apiMulticast",
                "apiNarrowcast",
                "apiReply",
            ] {
                body[f] = json!(counts.and_then(|c| c.get(f)).copied().unwrap_or(0));
            }
            ok(body)
        }
        "/v2/bot/insight/message/event" => {
            let Some(id) = query_param(uri, "requestId") else {
                return line_json(
                    StatusCode::BAD_REQUEST,
                    rid,
                    json!({"message": "The request body has 1 error(s)", "details": [detail("requestId", "Must be specified")]}),
                );
            };
            let Some(sent) = inner.accepted.iter().find(|a| {
                a.request_id == id && matches!(a.endpoint.as_str(), "broadcast" | "narrowcast")
            }) else {
                return error(StatusCode::NOT_FOUND, rid, "Not found");
            };
            let finished = sent.endpoint == "broadcast"
                || inner
                    .narrowcasts
                    .get(&id)
                    .is_some_and(|n| n.phase == "succeeded");
            let (impressions, clicks) = inner.impressions.get(&id).copied().unwrap_or((0, 0));
            // LINE hides interaction counts resting on fewer than 20 users.
            let shown = |n: i64| if n >= 20 { json!(n) } else { Value::Null };
            ok(json!({
                "overview": {
                    "requestId": id,
                    "timestamp": sent.at.timestamp(),
                    "delivered": if finished { json!(sent.recipients) } else { Value::Null },
                    "uniqueImpression": shown(impressions),
                    "uniqueClick": shown(clicks),
                    "uniqueMediaPlayed": Value::Null,
                    "uniqueMediaPlayed100Percent": Value::Null
                },
                "messages": [{"seq": 1, "impression": shown(impressions), "mediaPlayed": Value::Null}],
                "clicks": []
            }))
        }
        _ => error(StatusCode::NOT_FOUND, rid, "Not found"),
    }
}
