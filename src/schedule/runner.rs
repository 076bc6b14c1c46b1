//! The firing loop: every instance looks for due schedules each second (and at once when a
//! schedule changes); a firing is stored only through its compare-and-set on the schedule
//! (`store::announcements::insert_firing`), so each schedule fires once per firing time
//! whatever the instances, crashes and edits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{HolidayPolicy, Holidays, Timing};
use crate::api::SharedState;
use crate::store::schedules::{self, Firing, ScheduleRow};

/// How late a firing may be and still count as on time (a busy second, a slow tick); an
/// older one was missed while the daemon was down and follows the schedule's `catch_up`.
const LATE_MS: i64 = 60_000;

/// Wakes the loop when a schedule is created or edited.
#[derive(Clone, Default)]
pub struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

pub fn timing(row: &ScheduleRow) -> Result<Timing, String> {
    Ok(Timing {
        cron: super::Cron::parse(&row.cron)?,
        tz: row
            .timezone
            .parse()
            .map_err(|_| format!("`{}` is not a time zone", row.timezone))?,
        holidays: HolidayPolicy::parse(&row.holidays).unwrap_or(HolidayPolicy::Ignore),
        starts_at: row
            .starts_at
            .and_then(|t| Utc.timestamp_millis_opt(t).single()),
        ends_at: row
            .ends_at
            .and_then(|t| Utc.timestamp_millis_opt(t).single()),
    })
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub async fn run(state: SharedState, calendar: Arc<Holidays>, wake: Wake) {
    loop {
        if let Err(e) = tick(&state, &calendar).await {
            tracing::warn!(error = %e, "Could not run the schedules");
        }
        tokio::select! {
            _ = wake.0.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Fires every due schedule once.
pub async fn tick(state: &SharedState, calendar: &Holidays) -> Result<(), String> {
    let now = crate::clock::now();
    let due = schedules::due(&state.db, ms(now), 100)
        .await
        .map_err(|e| e.to_string())?;
    for row in due {
        if let Err(e) = fire(state, calendar, &row, now).await {
            tracing::warn!(schedule = %row.id, error = %e, "A schedule's firing failed; it is tried again");
        }
    }
    Ok(())
}

async fn fire(
    state: &SharedState,
    calendar: &Holidays,
    row: &ScheduleRow,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let Some(fire_at) = row.next_fire_at else {
        return Ok(());
    };
    let timing = timing(row)?;
    let next = timing.next_after(
        now.max(Utc.timestamp_millis_opt(fire_at).single().unwrap_or(now)),
        calendar,
    );
    let firing = Firing {
        schedule_id: row.id.clone(),
        version: row.version,
        fire_at,
        next: next.map(ms),
    };
    // Missed while the daemon was down: once (the latest missed time, as now) or skip.
    if ms(now) - fire_at > LATE_MS && row.catch_up == "skip" {
        schedules::skip(
            &state.db,
            &firing,
            "missed while Noroshi was not running; skipped (catch_up = skip)",
        )
        .await
        .map_err(|e| e.to_string())?;
        crate::metrics::schedule_fired(crate::metrics::Firing::Skipped);
        return Ok(());
    }
    let fire_time = Utc.timestamp_millis_opt(fire_at).single().unwrap_or(now);
    let mut submission: crate::accept::Submission =
        serde_json::from_str(&row.announcement).map_err(|e| e.to_string())?;
    if submission.template.is_some() {
        for (k, v) in super::date_params(fire_time, timing.tz) {
            let declared = submission
                .template
                .as_deref()
                .and_then(|t| state.templates.get(t))
                .is_some_and(|t| t.params.contains_key(k));
            if declared {
                submission.params.entry(k.to_string()).or_insert(v.into());
            }
        }
    }
    let caller = crate::api::auth::Caller {
        name: format!("schedule:{}", row.id),
        role: crate::api::auth::Role::Disaster,
        via: crate::api::auth::Via::BearerToken,
        client: None,
    };
    match crate::api::announcements::accept_scheduled(state, &caller, &submission, &firing).await {
        Ok(Some(id)) => {
            tracing::info!(schedule = %row.id, announcement = %id, "Schedule fired");
            crate::metrics::schedule_fired(crate::metrics::Firing::Posted);
            state.dispatcher.wake_all();
        }
        Ok(None) => {} // edited, paused, deleted or fired elsewhere since it was read
        Err(refusal) => {
            // The stored submission no longer passes (a channel disabled, a template gone):
            // recorded on the firing, shown, and the schedule moves on.
            let note = format!("not posted: {refusal}");
            tracing::warn!(schedule = %row.id, note = %note, "Schedule firing refused");
            schedules::skip(&state.db, &firing, &note)
                .await
                .map_err(|e| e.to_string())?;
            crate::metrics::schedule_fired(crate::metrics::Firing::Refused);
        }
    }
    Ok(())
}
