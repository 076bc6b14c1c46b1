//! Announcement routes: submit, preview, get, list, cancel, retry, the delivery log.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use noroshi_channel_core::Priority;
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Role};
use super::problem::{parse_json, ApiResult, Problem};
use super::SharedState;
use crate::accept::{self, AcceptContext, Submission};
use crate::store::announcements::{
    self as store, AttemptFilter, AttemptRow, ChannelSummary, ListFilter,
};
use crate::time::rfc3339_jst;

/// `202 Accepted`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    /// queued | scheduled
    pub status: String,
    pub deliveries: Vec<DeliveryBrief>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryBrief {
    pub channel: String,
    #[schema(schema_with = super::schema::delivery_status)]
    pub status: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AnnouncementView {
    pub id: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    #[schema(schema_with = super::schema::priority)]
    pub priority: String,
    pub lang: String,
    pub exercise: bool,
    /// (awaiting_approval | awaiting_confirmation →) scheduled → queued → sending → sent | partially_failed | failed; or cancelled
    #[schema(schema_with = super::schema::announcement_status)]
    pub status: String,
    pub tags: Vec<String>,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub scheduled_at: Option<String>,
    pub deliveries: Vec<ChannelSummary>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AnnouncementPage {
    pub items: Vec<AnnouncementView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| {
                    Problem::bad_request("Idempotency-Key: must be visible ASCII")
                        .field("Idempotency-Key")
                })?
                .trim();
            if key.is_empty() || key.len() > 255 {
                return Err(
                    Problem::bad_request("Idempotency-Key: must be 1 to 255 characters")
                        .field("Idempotency-Key"),
                );
            }
            Ok(Some(key.to_string()))
        }
    }
}

pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(crate) fn context<'a>(state: &'a SharedState, role: Role) -> AcceptContext<'a> {
    AcceptContext {
        channels: &state.channels,
        known: &state.known_channels,
        website_base_url: state.website_base_url.as_deref(),
        exercise_marker: &state.exercise_marker,
        can_send_disaster: role >= Role::Disaster,
        allow_private_fetch: state.allow_private_fetch,
        templates: &state.templates,
        cap_message: None,
        replaces: None,
    }
}

fn accepted_from(
    id: String,
    status: String,
    summaries: &[ChannelSummary],
    channels: &[String],
) -> Accepted {
    let deliveries = channels
        .iter()
        .map(|c| DeliveryBrief {
            channel: c.clone(),
            status: summaries
                .iter()
                .find(|s| &s.channel == c)
                .map(|s| s.status.clone())
                .unwrap_or_else(|| "pending".into()),
        })
        .collect();
    Accepted {
        id,
        status,
        deliveries,
    }
}

/// Accept an announcement: validated and rendered for each channel, then stored with all
/// its deliveries in one transaction before the answer.
///
/// Role: staff; `priority: disaster` needs disaster or admin.
#[utoipa::path(post, path = "/api/v1/announcements", operation_id = "submitAnnouncement", tag = "announcements", request_body = Submission,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body = the same announcement; same key + another body = 409")),
    responses(
        (status = 202, description = "Accepted", body = Accepted),
        (status = 409, description = "Idempotency-Key reused with another body", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 422, description = "Invalid, or a channel cannot carry it", body = Problem)),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Staff)?;
    let key = idempotency_key(&headers)?;
    let submission: Submission = parse_json(&body)?;
    // With `[console] approval = "staff"`, a staff token's post waits for approval too.
    let desk = DeskContext {
        approval: state.approval_staff && caller.role == Role::Staff,
        ..DeskContext::default()
    };
    let accepted = accept_and_store(
        &state,
        &caller,
        &submission,
        key,
        request_id(&headers),
        desk,
    )
    .await?;
    Ok(accepted_response(accepted))
}

/// `202 Accepted` with the announcement's address.
pub(crate) fn accepted_response(accepted: Accepted) -> Response {
    let location = format!("/api/v1/announcements/{}", accepted.id);
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location)],
        Json(accepted),
    )
        .into_response()
}

/// What the disaster desk adds to a submission: what kind of alert it is, what it follows,
/// its CAP identity and expiry, and whether its source skips second-person confirmation.
#[derive(Default)]
pub(crate) struct DeskContext {
    pub kind: Option<crate::store::alerts::AlertKind>,
    pub follows: Option<String>,
    pub cap: Option<crate::store::alerts::CapIdentity>,
    pub cap_status: Option<String>,
    pub expires_at: Option<i64>,
    /// A trusted CAP sender: no second-person confirmation.
    pub trusted: bool,
    /// The CAP message the channels that publish CAP (the website) publish.
    pub cap_message: Option<noroshi_channel_core::CapMessage>,
    /// Not the desk's: a staff post that waits for a second person's approval
    /// (`[console] approval = "staff"`).
    pub approval: bool,
}

/// A schedule's firing: the submission accepted and stored through the firing's claim on
/// its schedule. `Ok(None)`: the schedule changed (or fired elsewhere) since it was read,
/// and nothing was stored. `Err`: the submission no longer passes, and why.
pub(crate) async fn accept_scheduled(
    state: &SharedState,
    caller: &Caller,
    submission: &Submission,
    firing: &crate::store::schedules::Firing,
) -> Result<Option<String>, String> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut plan = accept::plan(
        submission,
        &context(state, caller.role),
        id.clone(),
        &caller.name,
        Some(firing.fire_at.to_string()),
        None,
        crate::clock::now(),
    )
    .map_err(|r| Problem::from(r).detail)?;
    if plan.priority == noroshi_channel_core::Priority::Disaster && !submission.exercise {
        // A scheduled disaster post is an alert like any other, released at once.
        plan.announcement.status = "queued".into();
    }
    let stored: Vec<_> = plan.channels.iter().map(|c| c.to_store()).collect();
    match store::insert_firing(&state.db, &plan.announcement, &stored, Some(firing)).await {
        Ok(true) => Ok(Some(id)),
        Ok(false) => Ok(None),
        Err(e) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl DeskContext {
    /// An update or a correction edits the page of the alert it follows, where a channel
    /// can edit (the website); elsewhere it is a new post.
    fn replaces(&self) -> Option<&str> {
        use crate::store::alerts::AlertKind;
        match self.kind {
            Some(AlertKind::Update | AlertKind::Correction) => self.follows.as_deref(),
            _ => None,
        }
    }
}

/// Accepts a submission and stores it with all its deliveries (and, for a disaster
/// announcement, its alert row) in one transaction. Used by the API, the all-clear and CAP
/// intake alike. A known Idempotency-Key answers with the announcement it made.
pub(crate) async fn accept_and_store(
    state: &SharedState,
    caller: &Caller,
    submission: &Submission,
    key: Option<String>,
    request_id: Option<String>,
    desk: DeskContext,
) -> ApiResult<Accepted> {
    let hash = accept::request_hash(submission);
    if let Some(key) = &key {
        if let Some(existing) = store::get_by_idempotency_key(&state.db, &caller.name, key).await? {
            return replay(state, existing, &hash).await;
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    let now = crate::clock::now();
    let mut plan = {
        let mut ctx = context(state, caller.role);
        ctx.cap_message = desk.cap_message.as_ref();
        ctx.replaces = desk.replaces();
        accept::plan(
            submission,
            &ctx,
            id.clone(),
            &caller.name,
            key.clone(),
            request_id.clone(),
            now,
        )?
    };
    let mut desk = desk;
    if plan.priority == noroshi_channel_core::Priority::Disaster && desk.cap_message.is_none() {
        // Every disaster announcement goes on the website's CAP feed: one submitted through
        // the API gets a CAP message written for it (rendered again with it; the words are
        // those just accepted).
        let follows = match &desk.follows {
            Some(f) => crate::store::alerts::get(&state.db, f)
                .await?
                .and_then(|a| a.cap),
            None => None,
        };
        let (identity, message) = crate::desk::cap::write(
            &state.cap_author,
            &crate::desk::cap::Written {
                announcement_id: &id,
                title: &plan.announcement.title,
                body: &plan.announcement.body,
                lang: &plan.announcement.lang,
                link: plan.announcement.link.as_deref(),
                variants: &plan.variants,
                exercise: plan.announcement.exercise,
                kind: desk.kind.unwrap_or(crate::store::alerts::AlertKind::Alert),
                follows,
                sent: now,
            },
        );
        desk.cap = Some(identity);
        desk.cap_status = Some(
            if plan.announcement.exercise {
                "Exercise"
            } else {
                "Actual"
            }
            .into(),
        );
        desk.cap_message = Some(message);
        let mut ctx = context(state, caller.role);
        ctx.cap_message = desk.cap_message.as_ref();
        ctx.replaces = desk.replaces();
        plan = accept::plan(
            submission,
            &ctx,
            id.clone(),
            &caller.name,
            key.clone(),
            request_id,
            now,
        )?;
    }
    let live_alert =
        plan.priority == noroshi_channel_core::Priority::Disaster && !submission.exercise;
    if let Some(alert) = plan.announcement.alert.as_mut() {
        alert.kind = desk.kind.unwrap_or(alert.kind);
        alert.follows = desk.follows;
        alert.cap = desk.cap;
        alert.cap_status = desk.cap_status;
        alert.expires_at = desk.expires_at;
        // A live alert waits for a second person when the desk asks for it.
        if live_alert && state.confirm_second_person && !desk.trusted {
            plan.announcement.status = crate::status::AnnouncementStatus::AwaitingConfirmation
                .as_str()
                .to_string();
        }
    }
    if desk.approval && !live_alert {
        plan.announcement.status = crate::status::AnnouncementStatus::AwaitingApproval
            .as_str()
            .to_string();
    }
    let stored: Vec<_> = plan.channels.iter().map(|c| c.to_store()).collect();
    // A live alert sent now goes to this instance's free workers straight from its
    // acceptance: its copies are leased in the same transaction (see `workers_for_alert`).
    let workers: Vec<_> = if live_alert
        && plan.announcement.status == crate::status::AnnouncementStatus::Queued.as_str()
        && plan.announcement.scheduled_at.is_none()
    {
        stored
            .iter()
            .filter(|c| c.audience != "email_subscribers")
            .filter_map(|c| state.dispatcher.workers_for_alert(&c.channel, c.units))
            .collect()
    } else {
        Vec::new()
    };
    let handed: Vec<String> = workers.iter().map(|w| w.channel().to_string()).collect();
    let inserted = if !workers.is_empty() {
        accept_leased(state, &plan.announcement, &stored, workers).await
    } else if live_alert {
        // A live alert's acceptance takes the next write turn, ahead of any backlog's writes.
        crate::store::urgent(store::insert(&state.db, &plan.announcement, &stored)).await
    } else {
        store::insert(&state.db, &plan.announcement, &stored).await
    };
    if let Err(e) = inserted {
        if e.is_unique_violation() {
            // Two requests with one key raced; the other one won. Answer as a replay.
            if let Some(key) = &key {
                if let Some(existing) =
                    store::get_by_idempotency_key(&state.db, &caller.name, key).await?
                {
                    return replay(state, existing, &hash).await;
                }
            }
        }
        return Err(e.into());
    }
    let status = plan.announcement.status.clone();
    tracing::info!(announcement = %id, by = %caller.name, priority = plan.priority.as_str(),
        channels = stored.len(), exercise = submission.exercise, status = %status, "Announcement accepted");
    if status != "awaiting_confirmation" && status != "awaiting_approval" {
        if live_alert {
            let a = &plan.announcement;
            if handed.is_empty() {
                // Otherwise `accept_leased` has done it, before the first send.
                remember_alert(&state.dispatcher, a, &stored);
            }
            // Disaster mode holds the paused channels' other work before this alert's
            // first delivery is claimed. An alert that is itself in force turns it on
            // without reading the alerts back; an all-clear may turn it off, so that one
            // reads them.
            if in_force(a) {
                state.dispatcher.set_disaster_mode(true);
            } else {
                state.dispatcher.sync_disaster_mode().await;
            }
        }
        if plan.announcement.scheduled_at.is_none() {
            // A channel whose copies were leased at acceptance has nothing queued to claim.
            for c in plan
                .channels
                .iter()
                .filter(|c| !handed.contains(&c.channel))
            {
                state.dispatcher.wake(&c.channel, plan.priority);
            }
        }
    }
    let names: Vec<String> = plan.channels.iter().map(|c| c.channel.clone()).collect();
    Ok(accepted_from(id, status, &[], &names))
}

/// Writes a live alert with its copies leased to `workers`, then starts them: in a task of
/// its own, with the next write turn. Once the acceptance is committed its copies start
/// even if the request goes away meanwhile (a client hanging up drops the request's
/// future), instead of waiting for their leases to run out.
async fn accept_leased(
    state: &SharedState,
    a: &store::NewAnnouncement,
    stored: &[store::NewChannelPlan],
    workers: Vec<crate::dispatch::AlertWorkers>,
) -> crate::store::Result<()> {
    let (db, dispatcher) = (state.db.clone(), state.dispatcher.clone());
    let (a, stored) = (a.clone(), stored.to_vec());
    let task = tokio::spawn(crate::store::urgent(async move {
        let handed: Vec<String> = workers.iter().map(|w| w.channel().to_string()).collect();
        let (owner, until) = dispatcher.lease_from_now();
        let lease = store::AcceptLease {
            owner,
            until,
            channels: &handed,
        };
        let leased = match store::insert_leased(&db, &a, &stored, &lease).await {
            Ok(leased) => leased,
            Err(e) => {
                if !e.is_unique_violation() {
                    // The commit may have happened with its answer lost (a connection
                    // dropped after COMMIT): queue those copies for a claim at once rather
                    // than leave them leased and unstarted until their leases run out.
                    drop(workers);
                    if let Ok(n @ 1..) = crate::queue::release_accepted(&db, &a.id, owner).await {
                        tracing::warn!(announcement = %a.id, copies = n,
                            "A live alert's acceptance failed after its commit; its copies are queued");
                        for channel in &handed {
                            dispatcher.wake(channel, noroshi_channel_core::Priority::Disaster);
                        }
                    }
                }
                return Err(e);
            }
        };
        // Here rather than in the request: the attempts read nothing back, and disaster mode
        // holds the paused channels' other work before the first send.
        remember_alert(&dispatcher, &a, &stored);
        if in_force(&a) {
            dispatcher.set_disaster_mode(true);
        }
        dispatcher.start_leased(&a.id, a.lane, a.created_at, leased, workers);
        Ok(())
    }));
    task.await
        .map_err(|e| crate::store::StoreError::Other(format!("the acceptance stopped: {e}")))?
}

/// Leaves a live alert just accepted in the dispatcher's caches (`Dispatcher::remember_alert`).
fn remember_alert(
    dispatcher: &crate::dispatch::Dispatcher,
    a: &store::NewAnnouncement,
    stored: &[store::NewChannelPlan],
) {
    let renderings: Vec<(&str, &str)> = stored
        .iter()
        .map(|c| (c.channel.as_str(), c.rendering.as_str()))
        .collect();
    dispatcher.remember_alert(
        &a.id,
        a.exercise,
        a.request_id.clone(),
        a.scheduled_at.unwrap_or(0).max(a.created_at),
        &renderings,
    );
}

/// Whether an alert just accepted is in force (not an all-clear, not expired): it turns
/// disaster mode on without reading the alerts back.
fn in_force(a: &store::NewAnnouncement) -> bool {
    a.alert.as_ref().is_some_and(|al| {
        al.kind != crate::store::alerts::AlertKind::AllClear
            && al.expires_at.is_none_or(|t| t > crate::clock::now_ms())
    })
}

async fn replay(
    state: &SharedState,
    existing: store::AnnouncementRow,
    hash: &str,
) -> ApiResult<Accepted> {
    if existing.request_hash != hash {
        return Err(Problem::conflict(
            "Idempotency-Key was already used with a different body; use a new key for a new announcement",
        )
        .field("Idempotency-Key"));
    }
    replay_of(state, &existing.id, existing.status.clone()).await
}

/// The `202` body of an announcement accepted earlier.
pub(crate) async fn replay_of(
    state: &SharedState,
    id: &str,
    status: String,
) -> ApiResult<Accepted> {
    let summaries = store::summarize(&state.db, id).await?;
    let channels: Vec<String> = store::channel_plans(&state.db, id)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    Ok(accepted_from(id.to_string(), status, &summaries, &channels))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PreviewResponse {
    pub channels: Vec<ChannelPreview>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChannelPreview {
    pub channel: String,
    /// false when this channel refuses the announcement.
    pub ok: bool,
    /// The text exactly as the platform will show it.
    pub text: String,
    /// The exact payload(s) the adapter will send.
    #[schema(value_type = Vec<Object>)]
    pub payloads: Vec<serde_json::Value>,
    /// Length by the channel's own rule.
    pub length: usize,
    pub limit: Option<usize>,
    pub length_rule: String,
    pub warnings: Vec<String>,
    /// The refusal, when `ok` is false: `{rule, message}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

impl From<accept::ChannelPlan> for ChannelPreview {
    fn from(c: accept::ChannelPlan) -> Self {
        ChannelPreview {
            channel: c.channel,
            ok: true,
            text: c.preview.text,
            payloads: c.units,
            length: c.preview.length,
            limit: c.preview.limit,
            length_rule: c.preview.length_rule,
            warnings: c.preview.warnings,
            error: None,
        }
    }
}

/// What each selected channel would send. Stores nothing.
///
/// Role: staff.
#[utoipa::path(post, path = "/api/v1/preview", operation_id = "previewAnnouncement", tag = "announcements", request_body = Submission,
    responses((status = 200, description = "Per-channel previews", body = PreviewResponse),
        (status = 422, description = "Invalid submission", body = Problem)),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<PreviewResponse>> {
    caller.require(Role::Staff)?;
    let submission: Submission = parse_json(&body)?;
    let id = uuid::Uuid::now_v7().to_string();
    let ctx = context(&state, caller.role);
    match accept::plan(
        &submission,
        &ctx,
        id.clone(),
        &caller.name,
        None,
        None,
        crate::clock::now(),
    ) {
        Ok(plan) => Ok(Json(PreviewResponse {
            channels: plan
                .channels
                .into_iter()
                .map(ChannelPreview::from)
                .collect(),
        })),
        // A channel refused: show every channel, the refusing ones with their reason, so the
        // author sees what to shorten where.
        Err(accept::Refusal::Channels(refusals)) => {
            let mut out = Vec::new();
            for err in &refusals {
                out.push(ChannelPreview {
                    channel: err.channel.clone().unwrap_or_default(),
                    ok: false,
                    text: String::new(),
                    payloads: Vec::new(),
                    length: 0,
                    limit: None,
                    length_rule: String::new(),
                    warnings: Vec::new(),
                    error: Some(serde_json::json!({ "rule": err.rule, "message": err.detail })),
                });
            }
            // Render the others one by one for their previews.
            let refused: Vec<String> = refusals.iter().filter_map(|e| e.channel.clone()).collect();
            let selected: Vec<String> = submission.channels.clone().unwrap_or_else(|| {
                state
                    .channels
                    .iter()
                    .map(|c| c.name().to_string())
                    .collect()
            });
            for name in selected.iter().filter(|n| !refused.contains(n)) {
                let mut single = submission.clone();
                single.channels = Some(vec![name.clone()]);
                single.overrides.retain(|k, _| k == name);
                if let Ok(plan) = accept::plan(
                    &single,
                    &ctx,
                    id.clone(),
                    &caller.name,
                    None,
                    None,
                    crate::clock::now(),
                ) {
                    out.extend(plan.channels.into_iter().map(ChannelPreview::from));
                }
            }
            out.sort_by(|a, b| a.channel.cmp(&b.channel));
            Ok(Json(PreviewResponse { channels: out }))
        }
        Err(refusal) => Err(refusal.into()),
    }
}

async fn view(
    state: &SharedState,
    caller: &Caller,
    row: store::AnnouncementRow,
) -> ApiResult<AnnouncementView> {
    let mut deliveries = store::summarize(&state.db, &row.id).await?;
    for d in &mut deliveries {
        d.last_error = super::redact::for_caller(caller, d.last_error.take());
    }
    let request: serde_json::Value = serde_json::from_str(&row.request).unwrap_or_default();
    let tags = request
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    Ok(AnnouncementView {
        id: row.id,
        title: row.title,
        body: row.body,
        link: row.link,
        priority: row.priority,
        lang: row.lang,
        exercise: row.exercise,
        status: row.status,
        tags,
        created_by: row.created_by,
        created_at: rfc3339_jst(row.created_at),
        scheduled_at: row.scheduled_at.map(rfc3339_jst),
        deliveries,
    })
}

async fn row_of(state: &SharedState, id: &str) -> ApiResult<store::AnnouncementRow> {
    store::get(&state.db, id)
        .await?
        .ok_or_else(|| Problem::not_found("announcement"))
}

pub(crate) async fn view_of(
    state: &SharedState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Json<AnnouncementView>> {
    let row = row_of(state, id).await?;
    Ok(Json(view(state, caller, row).await?))
}

/// The announcement and every channel's delivery state.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/announcements/{id}", operation_id = "getAnnouncement", tag = "announcements", params(("id" = String, Path, description = "The announcement's id (from the 202 answer)")),
    responses((status = 200, body = AnnouncementView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AnnouncementView>> {
    caller.require(Role::Viewer)?;
    view_of(&state, &caller, &id).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only announcements in this state.
    #[param(schema_with = super::schema::announcement_status)]
    pub status: Option<String>,
    /// Only announcements with a delivery on this channel.
    #[param(example = "line")]
    pub channel: Option<String>,
    /// Only this priority.
    #[param(schema_with = super::schema::priority)]
    pub priority: Option<String>,
    /// Created at or after (RFC 3339 with an offset).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-04-01T00:00:00+09:00")]
    pub since: Option<String>,
    /// Created before (RFC 3339 with an offset).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
}

fn parse_time(field: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    v.as_ref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|_| Problem::invalid(field, "must be RFC 3339 with an offset"))
        })
        .transpose()
}

fn limit_of(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(Problem::invalid("limit", "must be between 1 and 200")),
    }
}

const STATUSES: &[&str] = &[
    "awaiting_approval",
    "awaiting_confirmation",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "partially_failed",
    "failed",
    "cancelled",
];

/// Newest first, filtered, cursor-paged.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/announcements", operation_id = "listAnnouncements", tag = "announcements", params(ListQuery),
    responses((status = 200, body = AnnouncementPage), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AnnouncementPage>> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Problem::invalid(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    if let Some(p) = &q.priority {
        if noroshi_channel_core::Priority::parse(p).is_none() {
            return Err(Problem::invalid(
                "priority",
                "must be normal, urgent or disaster",
            ));
        }
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => {
            let (t, id) = c
                .split_once('_')
                .ok_or_else(|| Problem::invalid("cursor", "is not a cursor from this API"))?;
            Some((
                t.parse::<i64>()
                    .map_err(|_| Problem::invalid("cursor", "is not a cursor from this API"))?,
                id.to_string(),
            ))
        }
    };
    let limit = limit_of(q.limit)?;
    let filter = ListFilter {
        status: q.status.clone(),
        channel: q.channel.clone(),
        priority: q.priority.clone(),
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        before,
        limit,
    };
    let rows = store::list(&state.db, &filter).await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|r| format!("{}_{}", r.created_at, r.id))
    } else {
        None
    };
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(view(&state, &caller, row).await?);
    }
    Ok(Json(AnnouncementPage { items, next_cursor }))
}

/// Cancel what has not been sent yet (staff; a disaster announcement needs the disaster or
/// admin role).
///
/// Role: staff; a disaster announcement needs disaster or admin.
#[utoipa::path(post, path = "/api/v1/announcements/{id}/cancel", operation_id = "cancelAnnouncement", tag = "announcements", params(("id" = String, Path, description = "The announcement's id (from the 202 answer)")),
    responses((status = 200, description = "Cancelled (again: the same answer)", body = AnnouncementView), (status = 403, description = "A disaster announcement, and the token is not disaster or admin", body = Problem), (status = 404, description = "No such announcement", body = Problem), (status = 409, description = "Nothing left to cancel: every delivery is sent, failed or on the wire", body = Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AnnouncementView>> {
    caller.require(Role::Staff)?;
    // A disaster alert is the disaster desk's: staff cannot stop one (A.8).
    let row = row_of(&state, &id).await?;
    if Priority::parse(&row.priority) == Some(Priority::Disaster) && caller.role < Role::Disaster {
        return Err(Problem::forbidden(format!(
            "cancelling a disaster announcement needs the disaster or admin role; token `{}` has {}",
            caller.name,
            caller.role.as_str()
        )));
    }
    match store::cancel(&state.db, &id).await? {
        store::Cancelled::NotFound => return Err(Problem::not_found("announcement")),
        store::Cancelled::NothingLeft => {
            return Err(Problem::conflict(
                "nothing left to cancel: every delivery is sent, failed or already on the wire",
            ))
        }
        store::Cancelled::Already => {}
        store::Cancelled::Stopped(n) => {
            tracing::info!(announcement = %id, by = %caller.name, cancelled = n, "Announcement cancelled")
        }
    }
    view_of(&state, &caller, &id).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RetryQuery {
    /// Only this channel's failed deliveries.
    pub channel: Option<String>,
}

/// Give failed deliveries another full round of attempts (admin).
///
/// Role: admin.
#[utoipa::path(post, path = "/api/v1/announcements/{id}/retry", operation_id = "retryAnnouncement", tag = "announcements", params(("id" = String, Path, description = "The announcement's id"), RetryQuery),
    responses((status = 200, body = AnnouncementView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<RetryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AnnouncementView>> {
    let Query(q) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    caller.require(Role::Admin)?;
    let row = row_of(&state, &id).await?;
    let n = store::retry_failed(&state.db, &id, q.channel.as_deref()).await?;
    tracing::info!(announcement = %id, by = %caller.name, deliveries = n, "Failed deliveries queued again");
    let priority = noroshi_channel_core::Priority::parse(&row.priority).unwrap_or_default();
    for c in &state.channels {
        state.dispatcher.wake(c.name(), priority);
    }
    view_of(&state, &caller, &id).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this announcement's attempts.
    pub announcement_id: Option<String>,
    /// Only this channel's attempts.
    pub channel: Option<String>,
    /// Only attempts with this outcome.
    #[param(schema_with = super::schema::outcome)]
    pub outcome: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptPage {
    pub items: Vec<AttemptRow>,
    pub next_cursor: Option<i64>,
}

/// The delivery log: every attempt, newest first.
///
/// Role: viewer (email addresses are shown to admins only).
#[utoipa::path(get, path = "/api/v1/deliveries", operation_id = "listDeliveries", tag = "deliveries", params(DeliveriesQuery),
    responses((status = 200, description = "The log (JSON), or CSV with Accept: text/csv (columns id,announcement_id,channel,attempt,outcome,status_code,error,note,remote_id,started_at,finished_at,exercise; the next page's cursor in X-Next-Cursor)",
        content((AttemptPage = "application/json"), (String = "text/csv")))), security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    let csv = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    // The CSV export takes bigger pages (a month of a city's log fits in one).
    let limit = match (csv, q.limit) {
        (true, None) => 10_000,
        (true, Some(n)) if (1..=10_000).contains(&n) => n,
        (true, Some(_)) => {
            return Err(Problem::invalid(
                "limit",
                "must be between 1 and 10000 for CSV",
            ))
        }
        (false, l) => limit_of(l)?,
    };
    let items = store::attempts(
        &state.db,
        &AttemptFilter {
            announcement_id: q.announcement_id,
            channel: q.channel,
            outcome: q.outcome,
            before_id: q.cursor,
            limit,
        },
    )
    .await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|i| i.id)
    } else {
        None
    };
    // Recipient addresses quoted by platforms are for admins only.
    let items: Vec<AttemptRow> = items
        .into_iter()
        .map(|mut i| {
            i.error = super::redact::for_caller(&caller, i.error);
            i.note = super::redact::for_caller(&caller, i.note);
            i
        })
        .collect();
    if !csv {
        return Ok(Json(AttemptPage { items, next_cursor }).into_response());
    }
    let mut out = String::from(DELIVERIES_CSV_COLUMNS);
    out.push('\n');
    for i in items {
        let fields = [
            i.id.to_string(),
            i.announcement_id,
            i.channel,
            i.attempt.to_string(),
            i.outcome,
            i.status_code.map(|c| c.to_string()).unwrap_or_default(),
            i.error.unwrap_or_default(),
            i.note.unwrap_or_default(),
            i.remote_id.unwrap_or_default(),
            i.started_at,
            i.finished_at,
            i.exercise.to_string(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| crate::reach::csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    let mut response = (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"deliveries.csv\"".to_string(),
            ),
        ],
        out,
    )
        .into_response();
    if let Some(c) = next_cursor {
        // The next page of the export: the same filters with this cursor.
        if let Ok(v) = axum::http::HeaderValue::from_str(&c.to_string()) {
            response.headers_mut().insert("x-next-cursor", v);
        }
    }
    Ok(response)
}

/// The columns of the delivery log's CSV export, in order.
pub const DELIVERIES_CSV_COLUMNS: &str = "id,announcement_id,channel,attempt,outcome,status_code,error,note,remote_id,started_at,finished_at,exercise";
