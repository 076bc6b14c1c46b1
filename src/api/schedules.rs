//! `/api/v1/schedules`: recurring posts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Role};
use super::problem::{parse_json, ApiResult, Problem};
use super::SharedState;
use crate::accept::{self, Refusal, Submission};
use crate::schedule::{runner, Cron, HolidayPolicy, Timing};
use crate::store::schedules::{self as store, FiringRow, ScheduleRow};

/// A schedule to create: when, in which time zone, what to post.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "ごみ収集日のお知らせ（月曜）",
    "cron": "0 7 * * 1",
    "timezone": "Asia/Tokyo",
    "holidays": "next_day",
    "announcement": {"title": "明日は燃やせるごみの日です", "body": "朝8時30分までに集積所へ出してください。", "channels": ["line", "website"]}
}))]
pub struct NewSchedule {
    /// What staff call it (default: the announcement's title or template).
    #[serde(default)]
    pub name: Option<String>,
    /// Five fields: minute hour day-of-month month day-of-week (0 or 7 = Sunday).
    #[schema(example = "0 7 * * 1")]
    pub cron: String,
    /// IANA time zone; default Asia/Tokyo.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The submission each firing posts (no `scheduled_at`); a template may use `date`
    /// (12月1日（月）), `date_long`, `era_year` (令和8年) and `date_iso`, filled per firing.
    pub announcement: Submission,
    /// RFC 3339; no firing before.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339; no firing after.
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub paused: bool,
    /// Firings missed while Noroshi was not running: `once` (default: the latest, once) or
    /// `skip`.
    #[serde(default)]
    #[schema(example = "once")]
    pub catch_up: Option<String>,
    /// On a Japanese public holiday: `ignore` (default), `skip`, or `next_day` (the next day
    /// that is not a holiday, at the same time).
    #[serde(default)]
    #[schema(example = "next_day")]
    pub holidays: Option<String>,
}

/// An edit: each field given replaces the schedule's.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEdit {
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub announcement: Option<Submission>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub paused: Option<bool>,
    pub catch_up: Option<String>,
    pub holidays: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[schema(value_type = Object)]
    pub announcement: serde_json::Value,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub paused: bool,
    pub catch_up: String,
    pub holidays: String,
    /// Moves on every edit.
    pub version: i64,
    /// The next five firings, in the schedule's time zone (none while paused).
    pub next_firings: Vec<String>,
    /// The latest firings and what each became.
    pub recent_firings: Vec<FiringRow>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

fn rfc3339_in(ms: i64, tz: chrono_tz::Tz) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

async fn view(state: &SharedState, row: ScheduleRow) -> ApiResult<ScheduleView> {
    let tz: chrono_tz::Tz = row.timezone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
    let next_firings = match (row.paused, runner::timing(&row)) {
        (false, Ok(t)) => t
            .upcoming(crate::clock::now(), 5, &state.holidays)
            .into_iter()
            .map(|d| {
                d.with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            })
            .collect(),
        _ => Vec::new(),
    };
    let recent_firings = store::firings(&state.db, &row.id, 10).await?;
    Ok(ScheduleView {
        next_firings,
        recent_firings,
        announcement: serde_json::from_str(&row.announcement).unwrap_or_default(),
        starts_at: row.starts_at.map(|t| rfc3339_in(t, tz)),
        ends_at: row.ends_at.map(|t| rfc3339_in(t, tz)),
        created_at: rfc3339_in(row.created_at, tz),
        updated_at: rfc3339_in(row.updated_at, tz),
        id: row.id,
        name: row.name,
        cron: row.cron,
        timezone: row.timezone,
        paused: row.paused,
        catch_up: row.catch_up,
        holidays: row.holidays,
        version: row.version,
        created_by: row.created_by,
    })
}

fn time_of(field: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    v.as_ref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|_| Problem::invalid(field, "must be RFC 3339 with an offset"))
        })
        .transpose()
}

/// Checks a schedule as it would be stored, and computes its next firing.
fn checked(
    state: &SharedState,
    caller: &Caller,
    row: &mut ScheduleRow,
    submission: &Submission,
) -> ApiResult<()> {
    let cron = Cron::parse(&row.cron).map_err(|e| Problem::invalid("cron", e))?;
    let tz: chrono_tz::Tz = row.timezone.parse().map_err(|_| {
        Problem::invalid(
            "timezone",
            format!(
                "`{}` is not an IANA time zone such as Asia/Tokyo",
                row.timezone
            ),
        )
    })?;
    if !matches!(row.catch_up.as_str(), "once" | "skip") {
        return Err(Problem::invalid("catch_up", "must be once or skip"));
    }
    let holidays = HolidayPolicy::parse(&row.holidays)
        .ok_or_else(|| Problem::invalid("holidays", "must be ignore, skip or next_day"))?;
    if let (Some(s), Some(e)) = (row.starts_at, row.ends_at) {
        if e <= s {
            return Err(Problem::invalid("ends_at", "must be after starts_at"));
        }
    }
    if submission.scheduled_at.is_some() {
        return Err(Problem::invalid(
            "announcement.scheduled_at",
            "a schedule sets the time; leave it out",
        ));
    }
    let timing = Timing {
        cron,
        tz,
        holidays,
        starts_at: row
            .starts_at
            .and_then(|t| Utc.timestamp_millis_opt(t).single()),
        ends_at: row
            .ends_at
            .and_then(|t| Utc.timestamp_millis_opt(t).single()),
    };
    let now = crate::clock::now();
    let next = timing.next_after(now, &state.holidays);
    // The announcement must pass as it would at its first firing (its date placeholders
    // filled for that day).
    let mut trial = submission.clone();
    if let Some(t) = trial
        .template
        .as_deref()
        .and_then(|t| state.templates.get(t))
    {
        for (k, v) in crate::schedule::date_params(next.unwrap_or(now), tz) {
            if t.params.contains_key(k) {
                trial.params.entry(k.to_string()).or_insert(v.into());
            }
        }
    }
    let ctx = super::announcements::context(state, caller.role);
    accept::plan(
        &trial,
        &ctx,
        "schedule-check".into(),
        &caller.name,
        None,
        None,
        now,
    )
    .map_err(|r| {
        let mut p = Problem::from(match r {
            Refusal::Invalid { field, detail } => Refusal::Invalid {
                field: format!("announcement.{field}"),
                detail,
            },
            Refusal::NotAllowed { field, detail } => Refusal::NotAllowed {
                field: format!("announcement.{field}"),
                detail,
            },
            other => other,
        });
        if let Some(f) = p.field.as_mut() {
            if !f.starts_with("announcement.") {
                *f = format!("announcement.{f}");
            }
        }
        p
    })?;
    row.next_fire_at = next.map(|t| t.timestamp_millis());
    row.announcement = serde_json::to_string(submission).unwrap_or_default();
    Ok(())
}

/// Create a recurring post. The answer shows the next five firings.
///
/// Role: staff (a disaster-priority announcement needs disaster or admin).
#[utoipa::path(post, path = "/api/v1/schedules", operation_id = "createSchedule", tag = "schedules",
    request_body = NewSchedule,
    responses((status = 201, description = "Created", body = ScheduleView),
        (status = 422, description = "Invalid: `field` names it (cron, timezone, announcement.title, …)", body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    caller.require(Role::Staff)?;
    let s: NewSchedule = parse_json(&body)?;
    let now = crate::store::now_ms();
    let name = s
        .name
        .clone()
        .or_else(|| s.announcement.template.clone())
        .unwrap_or_else(|| s.announcement.title.clone());
    let mut row = ScheduleRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.chars().take(200).collect(),
        cron: s.cron.trim().to_string(),
        timezone: s.timezone.clone().unwrap_or_else(|| "Asia/Tokyo".into()),
        announcement: String::new(),
        starts_at: time_of("starts_at", &s.starts_at)?,
        ends_at: time_of("ends_at", &s.ends_at)?,
        paused: s.paused,
        catch_up: s.catch_up.clone().unwrap_or_else(|| "once".into()),
        holidays: s.holidays.clone().unwrap_or_else(|| "ignore".into()),
        next_fire_at: None,
        version: 1,
        created_by: caller.name.clone(),
        created_at: now,
        updated_at: now,
    };
    checked(&state, &caller, &mut row, &s.announcement)?;
    store::insert(&state.db, &row).await?;
    state.schedule_wake.now();
    Ok((StatusCode::CREATED, Json(view(&state, row).await?)))
}

/// Every schedule, newest first, with its next firings.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/schedules", operation_id = "listSchedules", tag = "schedules",
    responses((status = 200, description = "Schedules", body = Vec<ScheduleView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    caller.require(Role::Viewer)?;
    let mut out = Vec::new();
    for row in store::list(&state.db).await? {
        out.push(view(&state, row).await?);
    }
    Ok(Json(out))
}

/// One schedule, its next five firings and its latest firings.
///
/// Role: viewer.
#[utoipa::path(get, path = "/api/v1/schedules/{id}", operation_id = "getSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses((status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No such schedule", body = Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(Role::Viewer)?;
    let row = store::get(&state.db, &id)
        .await?
        .ok_or_else(|| Problem::not_found("schedule"))?;
    Ok(Json(view(&state, row).await?))
}

async fn edit_with(
    state: &SharedState,
    caller: &Caller,
    id: &str,
    e: ScheduleEdit,
) -> ApiResult<ScheduleView> {
    let row = store::get(&state.db, id)
        .await?
        .ok_or_else(|| Problem::not_found("schedule"))?;
    let version = row.version;
    let mut new = row.clone();
    if let Some(v) = e.name {
        new.name = v;
    }
    if let Some(v) = e.cron {
        new.cron = v.trim().to_string();
    }
    if let Some(v) = e.timezone {
        new.timezone = v;
    }
    if e.starts_at.is_some() {
        new.starts_at = time_of("starts_at", &e.starts_at)?;
    }
    if e.ends_at.is_some() {
        new.ends_at = time_of("ends_at", &e.ends_at)?;
    }
    if let Some(v) = e.paused {
        new.paused = v;
    }
    if let Some(v) = e.catch_up {
        new.catch_up = v;
    }
    if let Some(v) = e.holidays {
        new.holidays = v;
    }
    let submission = match e.announcement {
        Some(s) => s,
        None => serde_json::from_str(&row.announcement).map_err(Problem::internal)?,
    };
    checked(state, caller, &mut new, &submission)?;
    // Once this answers, a firing rendered from the old version can no longer commit.
    if !store::update(&state.db, &new, version).await? {
        return Err(Problem::conflict(
            "the schedule changed while this edit was made; read it again and retry",
        ));
    }
    state.schedule_wake.now();
    let row = store::get(&state.db, id)
        .await?
        .ok_or_else(|| Problem::not_found("schedule"))?;
    view(state, row).await
}

/// Edit a schedule: each field given replaces the schedule's. Once this answers, the old
/// content never goes out, however close its firing was.
///
/// Role: staff.
#[utoipa::path(patch, path = "/api/v1/schedules/{id}", operation_id = "editSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    request_body = ScheduleEdit,
    responses((status = 200, description = "Edited", body = ScheduleView),
        (status = 404, description = "No such schedule", body = Problem),
        (status = 409, description = "Edited by someone else meanwhile", body = Problem),
        (status = 422, description = "Invalid", body = Problem)),
    security(("bearer" = [])))]
pub async fn edit(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(Role::Staff)?;
    let e: ScheduleEdit = parse_json(&body)?;
    Ok(Json(edit_with(&state, &caller, &id, e).await?))
}

/// Pause a schedule: no firing until it is resumed.
///
/// Role: staff.
#[utoipa::path(post, path = "/api/v1/schedules/{id}/pause", operation_id = "pauseSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses((status = 200, description = "Paused", body = ScheduleView), (status = 404, description = "No such schedule", body = Problem)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(Role::Staff)?;
    let e = ScheduleEdit {
        paused: Some(true),
        ..ScheduleEdit::default()
    };
    Ok(Json(edit_with(&state, &caller, &id, e).await?))
}

/// Resume a paused schedule from now (firings missed while paused are not made up).
///
/// Role: staff.
#[utoipa::path(post, path = "/api/v1/schedules/{id}/resume", operation_id = "resumeSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses((status = 200, description = "Resumed", body = ScheduleView), (status = 404, description = "No such schedule", body = Problem)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.require(Role::Staff)?;
    let e = ScheduleEdit {
        paused: Some(false),
        ..ScheduleEdit::default()
    };
    Ok(Json(edit_with(&state, &caller, &id, e).await?))
}

/// Delete a schedule. Once this answers it never fires again; its past firings stay in the
/// record.
///
/// Role: staff.
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", operation_id = "deleteSchedule", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such schedule", body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Staff)?;
    if store::delete(&state.db, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("schedule"))
    }
}
