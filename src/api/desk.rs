//! The disaster desk's routes: second-person confirmation, the all-clear or correction, the
//! active alerts (and CAP intake, `POST /api/v1/cap`).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use super::announcements::{
    accept_and_store, accepted_response, idempotency_key, request_id, view_of, AnnouncementView,
    DeskContext,
};
use super::auth::{Caller, Role};
use super::problem::{parse_json, ApiResult, Problem};
use super::SharedState;
use crate::desk::FollowUp;
use crate::store::alerts::{self, AlertRow, Confirmed};
use crate::store::announcements as store;

/// Confirm a live disaster announcement that waits for a second person
/// (`[disaster] confirm = "second_person"`): it is released to every channel at once. Its
/// author cannot confirm it.
///
/// Role: disaster.
#[utoipa::path(post, path = "/api/v1/announcements/{id}/confirm", operation_id = "confirmAnnouncement", tag = "disaster",
    params(("id" = String, Path, description = "The announcement's id")),
    responses(
        (status = 200, description = "Released: queued (or scheduled) for every channel", body = AnnouncementView),
        (status = 403, description = "The caller wrote it (a second person must confirm), or lacks the disaster role", body = Problem),
        (status = 404, description = "No such announcement", body = Problem),
        (status = 409, description = "It is not waiting for confirmation", body = Problem)),
    security(("bearer" = [])))]
pub async fn confirm(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AnnouncementView>> {
    caller.require(Role::Disaster)?;
    match alerts::confirm(&state.db, &id, &caller.name).await? {
        Confirmed::NotFound => return Err(Problem::not_found("announcement")),
        Confirmed::NotWaiting(status) => {
            return Err(Problem::conflict(format!(
                "this announcement is not waiting for confirmation (it is {status})"
            )))
        }
        Confirmed::OwnAnnouncement => {
            return Err(Problem::forbidden(format!(
                "token `{}` wrote this announcement; a second person with the disaster or admin role must confirm it",
                caller.name
            )))
        }
        Confirmed::Released(_) => {
            tracing::warn!(announcement = %id, by = %caller.name, "Disaster announcement confirmed and released");
        }
    }
    state.dispatcher.sync_disaster_mode().await;
    for (channel, _) in store::channel_plans(&state.db, &id).await? {
        state
            .dispatcher
            .wake(&channel, noroshi_channel_core::Priority::Disaster);
    }
    view_of(&state, &caller, &id).await
}

/// Held while an all-clear or correction is checked and stored (see [`all_clear`]).
static FOLLOW_UPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Send the all-clear (解除) of a disaster alert, or a correction (訂正), to the same
/// channels through the same fast lane; the alert ends (a correction takes its place).
/// A drill's all-clear is a drill too.
///
/// Role: disaster.
#[utoipa::path(post, path = "/api/v1/announcements/{id}/all-clear", operation_id = "sendAllClear", tag = "disaster",
    params(("id" = String, Path, description = "The alert's announcement id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body = the same follow-up")),
    request_body(content = Option<FollowUp>, description = "Optional: `{}` or no body sends the all-clear in the default words"),
    responses(
        (status = 202, description = "The follow-up was accepted", body = super::announcements::Accepted),
        (status = 404, description = "No such announcement", body = Problem),
        (status = 409, description = "Not a disaster alert, or it has already ended", body = Problem),
        (status = 422, description = "Invalid follow-up (a correction without its text)", body = Problem)),
    security(("bearer" = [])))]
pub async fn all_clear(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Disaster)?;
    let key = idempotency_key(&headers)?;
    let follow: FollowUp = if body.iter().all(u8::is_ascii_whitespace) {
        FollowUp::default()
    } else {
        parse_json(&body)?
    };
    let original = store::get(&state.db, &id)
        .await?
        .ok_or_else(|| Problem::not_found("announcement"))?;
    let alert = alerts::get(&state.db, &id).await?.ok_or_else(|| {
        Problem::conflict("this announcement is not a disaster alert; there is nothing to clear")
    })?;
    if alert.kind == "all_clear" {
        return Err(Problem::conflict(
            "this announcement is itself an all-clear",
        ));
    }
    // Follow-ups of one alert are checked and stored one at a time: in this process, and
    // on PostgreSQL across the instances sharing it, so two all-clears sent at the same
    // moment cannot both pass the checks below.
    let _one_at_a_time = FOLLOW_UPS.lock().await;
    let shared_lock = alerts::lock_follow_ups(&state.db, &id).await?;
    // A key this caller used before is a replay only of a follow-up of this very alert:
    // two alerts' all-clears can be the same request (it does not name the alert).
    let mut replay = false;
    if let Some(k) = &key {
        if let Some(earlier) = store::get_by_idempotency_key(&state.db, &caller.name, k).await? {
            let follows = alerts::get(&state.db, &earlier.id)
                .await?
                .and_then(|a| a.follows);
            if follows.as_deref() != Some(id.as_str()) {
                return Err(Problem::conflict(
                    "Idempotency-Key was already used for another request; use a new key for this all-clear",
                )
                .field("Idempotency-Key"));
            }
            replay = true;
        }
    }
    // Otherwise an alert has one follow-up: none once it has ended, and none while one waits
    // for its second person (confirming both would send 【解除】 twice).
    if !replay {
        if let Some(why) = alerts::why_no_follow_up(&state.db, &id).await? {
            return Err(Problem::conflict(format!(
                "this alert {why}; an alert is cleared once (cancel a waiting follow-up to send another)"
            )));
        }
    }
    let channels = store::channel_plans(&state.db, &id)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| state.channels.iter().any(|e| e.name() == c))
        .collect();
    let (submission, kind) = crate::desk::follow_up(&original, channels, &follow)?;
    let accepted = accept_and_store(
        &state,
        &caller,
        &submission,
        key,
        request_id(&headers),
        DeskContext {
            kind: Some(kind),
            follows: Some(id),
            ..DeskContext::default()
        },
    )
    .await;
    if let Some(tx) = shared_lock {
        // It wrote nothing; ending it releases the lock. (An early return drops it: the
        // same, once the connection goes back to the pool.)
        let _ = tx.rollback().await;
    }
    Ok(accepted_response(accepted?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActiveAlerts {
    /// true while any live alert is active: the channels in `pause_channels` send only live
    /// disaster work.
    pub disaster_mode: bool,
    pub pause_channels: Vec<String>,
    pub alerts: Vec<AlertRow>,
}

/// The live disaster alerts in force (not awaiting confirmation, not ended, not expired),
/// newest first, and whether disaster mode is on. Drills never appear here.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/alerts/active", operation_id = "listActiveAlerts", tag = "disaster",
    responses((status = 200, description = "Active alerts and disaster mode", body = ActiveAlerts)),
    security(("bearer" = [])))]
pub async fn active(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<ActiveAlerts>> {
    caller.require(Role::Viewer)?;
    let alerts = alerts::active(&state.db, crate::clock::now_ms()).await?;
    Ok(Json(ActiveAlerts {
        disaster_mode: !alerts.is_empty(),
        pause_channels: state.pause_channels.clone(),
        alerts,
    }))
}

/// A CAP message that was stored and shown but not sent (System, Draft, Ack, Error), or
/// one seen before that was not sent.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CapStored {
    /// Always false: nothing was sent.
    pub sent: bool,
    pub status: String,
    pub msg_type: String,
    /// Why it was not sent.
    pub detail: String,
}

/// The media types a CAP document may come as.
fn is_cap_content_type(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        ct.as_str(),
        "application/cap+xml" | "application/xml" | "text/xml"
    )
}

/// Accept one OASIS CAP 1.2 `alert` (XML) as a disaster announcement: validated against
/// the CAP 1.2 schema (no DTD, no entities), mapped to the announcement (`headline` →
/// title; `description`, `instruction`, areas and expiry → body; `web` → link; each `info`
/// language → a variant, `ja` the primary). `Actual` is live, `Exercise` and `Test` are
/// drills, `System` and `Draft` (and `Ack`, `Error`) are stored and shown, never sent.
/// `Update` follows the alert it references and takes its place; `Cancel` sends its
/// all-clear. The same message twice (sender, identifier, sent) is the same announcement.
/// Alerts from `[cap] trusted_senders` skip second-person confirmation.
///
/// Role: disaster.
#[utoipa::path(post, path = "/api/v1/cap", operation_id = "ingestCapAlert", tag = "disaster",
    request_body(content = String, content_type = "application/cap+xml", description = "One CAP 1.2 alert (application/xml and text/xml are accepted too)"),
    responses(
        (status = 202, description = "Accepted as a disaster announcement (or the one it became before)", body = super::announcements::Accepted),
        (status = 200, description = "Stored and shown, never sent (System, Draft, Ack, Error)", body = CapStored),
        (status = 415, description = "Not an XML content type", body = Problem),
        (status = 422, description = "Not a valid CAP 1.2 alert; `field` names the element (a DOCTYPE, an entity, an encoding it cannot read, a missing or misplaced element)", body = Problem)),
    security(("bearer" = [])))]
pub async fn ingest_cap(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Disaster)?;
    if !is_cap_content_type(&headers) {
        return Err(Problem::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/cap+xml (or application/xml, text/xml)",
        )
        .field("Content-Type"));
    }
    let source = format!("api:{}", caller.name);
    crate::desk::cap::receive(&state, &caller, &body, &source, request_id(&headers)).await
}

/// Received CAP messages, newest first: what each became, or why it was not sent.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/cap", operation_id = "listCapMessages", tag = "disaster",
    params(("limit" = Option<i64>, Query, description = "Page size", minimum = 1, maximum = 500)),
    responses((status = 200, description = "Received CAP messages", body = Vec<alerts::CapMessage>)),
    security(("bearer" = [])))]
pub async fn list_cap(
    State(state): State<SharedState>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Vec<alerts::CapMessage>>> {
    caller.require(Role::Viewer)?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| Problem::invalid("limit", "must be between 1 and 500"))?,
    };
    Ok(Json(alerts::cap_messages(&state.db, limit).await?))
}
