//! Channel routes: state of every channel, resume after an auth pause, the LINE webhook.

use crate::status::ChannelState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use noroshi_channel_core::{AdapterStatus, ExposeSecret};
use serde::Serialize;

use super::auth::{Caller, Role};
use super::problem::{ApiResult, Problem};
use super::SharedState;
use crate::store;
use crate::time::rfc3339_jst;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub name: String,
    pub enabled: bool,
    /// ok | degraded | paused (an auth failure shows here as paused)
    #[schema(schema_with = super::schema::channel_state)]
    pub state: String,
    pub reason: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
    /// The daemon's own pacing of this channel (null when the channel is not enabled).
    #[schema(value_type = Option<Object>)]
    pub rate_limit: serde_json::Value,
    /// What the adapter has seen of the platform: budgets left, quota, warnings (null
    /// when it has seen nothing yet).
    #[schema(value_type = Option<Object>)]
    pub platform: serde_json::Value,
    /// A live alert is active and this channel is in `[disaster] pause_channels`: only
    /// live disaster work is sent; normal, urgent, scheduled posts and drills wait.
    pub disaster_mode: bool,
    /// Deliveries waiting or in flight, per lane.
    #[schema(value_type = Object)]
    pub queue: serde_json::Value,
}

/// The state a channel is shown in (here and in `/metrics`): the stored one, or `degraded`
/// while an otherwise working channel's adapter warns (`warning`: its first warning) or its
/// last reach collection failed.
pub fn shown_state(
    stored: Option<&store::channels::ChannelRow>,
    warning: Option<&str>,
    reach_error: Option<&str>,
) -> (String, Option<String>) {
    let state = stored.map_or(ChannelState::Ok.as_str(), |s| s.state.as_str());
    let reason = stored.and_then(|s| s.reason.clone());
    if state != ChannelState::Ok.as_str() {
        return (state.to_string(), reason);
    }
    let degraded = ChannelState::Degraded.as_str().to_string();
    match (warning, reach_error) {
        (Some(w), _) => (degraded, Some(w.to_string())),
        (None, Some(e)) => (degraded, Some(format!("reach collection failed: {e}"))),
        (None, None) => (state.to_string(), reason),
    }
}

/// Every channel: enabled, state, last error, rate-limit budget.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/channels", operation_id = "listChannels", tag = "channels", responses((status = 200, body = Vec<ChannelView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ChannelView>>> {
    caller.require(Role::Viewer)?;
    let states = store::channels::all(&state.db).await?;
    let depth = crate::queue::depth(&state.db).await?;
    let reach_runs = store::reach::latest_runs(&state.db).await?;
    let mut out = Vec::new();
    for name in &state.known_channels {
        let runtime = state.dispatcher.channel(name);
        let st = states.iter().find(|s| &s.channel == name);
        let lanes = |lane: i32| {
            depth
                .iter()
                .filter(|(c, l, _)| c == name && *l == lane)
                .map(|(_, _, n)| *n)
                .sum::<i64>()
        };
        let (rate_limit, platform, in_flight) = match runtime {
            Some(rt) => {
                let status: AdapterStatus = rt.channel.status();
                (
                    serde_json::json!({
                        "rate_per_second": rt.rate_per_second,
                        "burst": rt.gate.settings().burst,
                        "disaster_reserve": rt.disaster_reserve,
                        "disaster_burst": rt.gate.settings().disaster_burst,
                        "concurrency": rt.concurrency,
                        "reserved_disaster_workers": rt.reserved_workers,
                        // Instances sharing the rate; this one paces at rate / instances.
                        "instances": rt.gate.instances(),
                        // The platform rate-limited the account: nothing is sent until then.
                        "held_until": rt.gate.held_until(store::now_ms()).map(rfc3339_jst),
                    }),
                    serde_json::to_value(&status).unwrap_or_default(),
                    rt.in_flight(),
                )
            }
            None => (serde_json::Value::Null, serde_json::Value::Null, 0),
        };
        let mut platform = platform;
        if name == "line" && runtime.is_some() {
            // Friends as LINE's webhook has reported them (follow minus unfollow events).
            platform["webhook_followers"] = store::channels::line_follower_count(&state.db)
                .await?
                .into();
        }
        // The reach collector's last run: a failure shows here, the queue carries on.
        let run = reach_runs.iter().find(|(c, ..)| c == name);
        if let Some((_, at, samples, error)) = run {
            platform["reach"] = serde_json::json!({
                "last_collected_at": rfc3339_jst(*at),
                "samples": samples,
                "error": error,
            });
        }
        let reach_error = run.and_then(|(_, _, _, e)| e.as_deref());
        let (state_name, reason) = shown_state(st, platform["warnings"][0].as_str(), reach_error);
        out.push(ChannelView {
            name: name.clone(),
            enabled: runtime.is_some(),
            state: state_name,
            reason: super::redact::for_caller(&caller, reason),
            last_error: super::redact::for_caller(&caller, st.and_then(|s| s.last_error.clone())),
            last_error_at: st.and_then(|s| s.last_error_at).map(rfc3339_jst),
            last_success_at: st.and_then(|s| s.last_success_at).map(rfc3339_jst),
            rate_limit,
            platform,
            disaster_mode: runtime.is_some_and(|rt| rt.in_disaster_mode()),
            queue: serde_json::json!({
                "disaster": lanes(2), "urgent": lanes(1), "normal": lanes(0), "in_flight_here": in_flight,
            }),
        });
    }
    // CAP feeds: not channels, but what the desk relies on; a failing one shows here.
    for f in state.cap_feeds.states() {
        out.push(ChannelView {
            name: format!("cap-feed:{}", f.url),
            enabled: true,
            state: if f.last_error.is_some() {
                ChannelState::Degraded.as_str().into()
            } else {
                ChannelState::Ok.as_str().into()
            },
            reason: f.last_error.clone(),
            last_error: f.last_error.clone(),
            last_error_at: f.last_error_at.map(rfc3339_jst),
            last_success_at: f.last_success_at.map(rfc3339_jst),
            rate_limit: serde_json::Value::Null,
            platform: serde_json::json!({
                "ingested": f.ingested,
                "last_poll_at": f.last_poll_at.map(rfc3339_jst),
            }),
            disaster_mode: false,
            queue: serde_json::json!({}),
        });
    }
    Ok(Json(out))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ResumeResult {
    pub name: String,
    /// Always `ok`.
    #[schema(example = "ok")]
    pub state: &'static str,
}

/// Resume a paused channel after its credentials were fixed (admin).
///
/// When the channel's last reach collection failed, it is collected again right away, in
/// the background, so the old credentials' failure does not keep the channel shown
/// `degraded` until the next scheduled collection.
///
/// Role: admin.
#[utoipa::path(post, path = "/api/v1/channels/{name}/resume", operation_id = "resumeChannel", tag = "channels", params(("name" = String, Path, description = "line, x, facebook, email, website, or a webhook channel's name", example = "line")),
    responses((status = 200, description = "Resumed", body = ResumeResult), (status = 404, description = "No such enabled channel", body = Problem)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<SharedState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ResumeResult>> {
    caller.require(Role::Admin)?;
    if state.dispatcher.channel(&name).is_none() {
        return Err(Problem::not_found("enabled channel"));
    }
    store::channels::set_state(&state.db, &name, ChannelState::Ok, None).await?;
    state.dispatcher.set_paused(&name, false);
    tracing::info!(channel = %name, by = %caller.name, "Channel resumed");
    // A reach collection that failed with the old credentials is tried again at once.
    let (collecting, channel) = (state.clone(), name.clone());
    tokio::spawn(async move { crate::reach::recollect_if_failed(&collecting, &channel).await });
    Ok(Json(ResumeResult {
        name,
        state: ChannelState::Ok.as_str(),
    }))
}

/// LINE's webhook: verified by `X-Line-Signature` over the raw body; follow and unfollow
/// events are recorded. Called by LINE's servers, not by people; limited per address
/// (`server.webhook_per_minute`).
#[utoipa::path(post, path = "/webhooks/line", operation_id = "receiveLineWebhook", tag = "public",
    params(("X-Line-Signature" = String, Header, description = "Base64 HMAC-SHA256 of the raw body with the channel secret")),
    request_body(content = Object, content_type = "application/json", description = "LINE's webhook body: `{destination, events: [...]}`"),
    responses(
        (status = 200, description = "Received"),
        (status = 400, description = "Not a LINE webhook body", body = Problem),
        (status = 401, description = "Missing or wrong signature", body = Problem),
        (status = 404, description = "The LINE channel secret is not configured", body = Problem),
        (status = 429, description = "Too many from this address; see Retry-After", body = Problem)))]
pub async fn line_webhook(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let Some(secret) = &state.line_channel_secret else {
        return Err(Problem::not_found(
            "LINE webhook (channels.line.channel_secret is not configured)",
        ));
    };
    let signature = headers
        .get("x-line-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized().field("X-Line-Signature"))?;
    if !noroshi_line::verify_signature(secret.expose_secret(), &body, signature) {
        tracing::warn!("Refused a LINE webhook call with a bad signature");
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "X-Line-Signature does not match the body",
        )
        .field("X-Line-Signature"));
    }
    let events = noroshi_line::parse_events(&body)
        .map_err(|e| Problem::bad_request(format!("not a LINE webhook body: {e}")))?;
    for event in events {
        let following = match event.kind {
            noroshi_line::WebhookEventKind::Follow { .. } => true,
            noroshi_line::WebhookEventKind::Unfollow => false,
            _ => continue,
        };
        if let Some(user) = &event.user_id {
            store::channels::set_line_follower(&state.db, user, following).await?;
        }
    }
    Ok(StatusCode::OK)
}

/// Whether the database takes writes: ok | full | unavailable, with the reason and since
/// when. While not ok, writes answer `503` (`storage-full`, `storage-unavailable`) and
/// `/readyz` is not ready; reads keep working.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/storage", operation_id = "getStorageState", tag = "operations", responses((status = 200, body = crate::store::health::StorageState)),
    security(("bearer" = [])))]
pub async fn storage(caller: Caller) -> ApiResult<Json<crate::store::health::StorageState>> {
    caller.require(Role::Viewer)?;
    Ok(Json(crate::store::health::state()))
}
