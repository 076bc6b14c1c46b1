//! Announcements, their per-channel renderings, delivery summaries and the delivery log.

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Db, Result, StoreError};
use crate::status::DeliveryStatus;

/// An announcement as accepted, ready to insert with its deliveries.
#[derive(Clone, Debug)]
pub struct NewAnnouncement {
    pub id: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub priority: String,
    pub lane: i32,
    pub lang: String,
    pub exercise: bool,
    pub status: String,
    pub request: String,
    pub created_by: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub request_id: Option<String>,
    pub scheduled_at: Option<i64>,
    pub created_at: i64,
    /// A disaster announcement's alert row (what it is, what it follows).
    pub alert: Option<super::alerts::NewAlert>,
}

/// One channel's plan: the rendering stored at accept time and its first deliveries.
#[derive(Clone, Debug)]
pub struct NewChannelPlan {
    pub channel: String,
    pub rendering: String,
    /// `fixed` or `email_subscribers`.
    pub audience: String,
    /// How many units were rendered: one `send` delivery each, or one `expand` delivery
    /// each for `email_subscribers`.
    pub units: usize,
}

/// The statements that write an accepted announcement, in the order their values are bound
/// (`bind_writes!` and the `bind_…!` macros below): one statement each, or (`one`) all of
/// them as one statement.
fn acceptance_sql(
    db: &Db,
    a: &NewAnnouncement,
    plans: usize,
    units: usize,
    ends_followed: bool,
    leased: bool,
    one: bool,
) -> Vec<String> {
    let mut p = super::Params::new(db);
    let mut parts = Vec::new();
    // Each statement numbers its placeholders from 1; one statement, all of them in turn.
    let mut push = |text: String, p: &mut super::Params| {
        parts.push(text);
        if !one {
            *p = super::Params::new(db);
        }
    };
    push(
            format!(
                "INSERT INTO announcements (id, title, body, link, priority, lane, lang, exercise, status, \
                     request, created_by, idempotency_key, request_hash, request_id, scheduled_at, created_at, updated_at) \
                 VALUES ({})",
                p.list(17)
            ),
            &mut p,
        );
    if a.alert.is_some() {
        push(
                format!(
                    "INSERT INTO alerts (announcement_id, live, kind, follows, cap_sender, cap_identifier, \
                         cap_sent, cap_status, expires_at, created_at) VALUES ({})",
                    p.list(10)
                ),
                &mut p,
            );
        if ends_followed {
            push(super::alerts::end_followed(&mut p), &mut p);
        }
    }
    if plans > 0 {
        push(
                format!(
                    "INSERT INTO announcement_channels (announcement_id, channel, rendering, audience) VALUES {}",
                    p.rows(plans, 4)
                ),
                &mut p,
            );
    }
    if units > 0 {
        let values = (0..units)
                .map(|_| {
                    let [id, channel, kind, unit, lane, status, attempts, run_after, key, owner, until, first, created, updated] =
                        std::array::from_fn(|_| p.next());
                    format!("({id}, {channel}, {kind}, {unit}, 0, {lane}, {status}, {attempts}, {run_after}, {key}, \
                         {owner}, {until}, {first}, {created}, {updated})")
                })
                .collect::<Vec<_>>()
                .join(", ");
        let returning = if leased {
            " RETURNING id, channel, unit_index, idempotency_key, status"
        } else {
            ""
        };
        push(
                format!(
                    "INSERT INTO deliveries (announcement_id, channel, kind, unit_index, subscriber_id, lane, \
                         status, attempts, run_after, idempotency_key, lease_owner, lease_until, first_attempt_at, \
                         created_at, updated_at) VALUES {values}{returning}"
                ),
                &mut p,
            );
    }
    if !one {
        return parts;
    }
    let last = parts.len() - 1;
    let with = parts
        .iter()
        .enumerate()
        .map(|(i, text)| format!("w{i} AS ({text})"))
        .collect::<Vec<_>>()
        .join(", ");
    if leased && units > 0 {
        vec![format!(
            "WITH {with} SELECT id, channel, unit_index, idempotency_key, status FROM w{last}"
        )]
    } else {
        vec![format!("WITH {with} SELECT 1")]
    }
}

macro_rules! bind_announcement {
    ($q:expr, $a:expr) => {{
        let a = $a;
        $q.bind(&a.id)
            .bind(&a.title)
            .bind(&a.body)
            .bind(&a.link)
            .bind(&a.priority)
            .bind(a.lane)
            .bind(&a.lang)
            .bind(a.exercise)
            .bind(&a.status)
            .bind(&a.request)
            .bind(&a.created_by)
            .bind(&a.idempotency_key)
            .bind(&a.request_hash)
            .bind(&a.request_id)
            .bind(a.scheduled_at)
            .bind(a.created_at)
            .bind(a.created_at)
    }};
}

macro_rules! bind_alert {
    ($q:expr, $a:expr, $alert:expr) => {{
        let (a, alert) = ($a, $alert);
        let cap = alert.cap.as_ref();
        $q.bind(&a.id)
            .bind(alert.live)
            .bind(alert.kind.as_str())
            .bind(&alert.follows)
            .bind(cap.map(|c| &c.sender))
            .bind(cap.map(|c| &c.identifier))
            .bind(cap.map(|c| &c.sent))
            .bind(&alert.cap_status)
            .bind(alert.expires_at)
            .bind(a.created_at)
    }};
}

/// An update, all-clear or correction released now ends the alert it follows.
macro_rules! bind_end_followed {
    ($q:expr, $a:expr, $alert:expr) => {{
        let (a, alert) = ($a, $alert);
        $q.bind(a.created_at).bind(&a.id).bind(&alert.follows)
    }};
}

macro_rules! bind_plans {
    ($q:expr, $a:expr, $plans:expr) => {{
        let a = $a;
        let mut q = $q;
        for plan in $plans {
            q = q
                .bind(&a.id)
                .bind(&plan.channel)
                .bind(&plan.rendering)
                .bind(&plan.audience);
        }
        q
    }};
}

macro_rules! bind_units {
    ($q:expr, $a:expr, $units:expr, $lease:expr) => {{
        let a = $a;
        let lease: Option<&AcceptLease> = $lease;
        let run_after = a.scheduled_at.unwrap_or(a.created_at);
        let mut q = $q;
        for (plan, unit) in $units {
            let kind = if plan.audience == "email_subscribers" {
                "expand"
            } else {
                "send"
            };
            // Leased at acceptance: in flight with this instance, its first attempt counted
            // (as a claim would have set it).
            let lease = lease.filter(|l| kind == "send" && l.channels.contains(&plan.channel));
            q = q
                .bind(&a.id)
                .bind(&plan.channel)
                .bind(kind)
                .bind(*unit)
                .bind(a.lane)
                .bind(if lease.is_some() {
                    "in_flight"
                } else {
                    "pending"
                })
                .bind(i32::from(lease.is_some()))
                .bind(run_after)
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(lease.map(|l| l.owner))
                .bind(lease.map(|l| l.until))
                .bind(lease.map(|_| a.created_at))
                .bind(a.created_at)
                .bind(a.created_at);
        }
        q
    }};
}

/// Every part's values, in the order of [`acceptance_sql`].
macro_rules! bind_writes {
    ($q:expr, $a:expr, $plans:expr, $units:expr, $ends_followed:expr, $lease:expr) => {{
        let a = $a;
        let mut q = bind_announcement!($q, a);
        if let Some(alert) = &a.alert {
            q = bind_alert!(q, a, alert);
            if $ends_followed {
                q = bind_end_followed!(q, a, alert);
            }
        }
        if !$plans.is_empty() {
            q = bind_plans!(q, a, $plans);
        }
        if !$units.is_empty() {
            q = bind_units!(q, a, $units, $lease);
        }
        q
    }};
}

/// Writes the announcement, its channel plans and all its first deliveries in one
/// transaction. A unique violation on (created_by, idempotency_key) comes back as
/// `StoreError::Sql` with `is_unique_violation()`.
pub async fn insert(db: &Db, a: &NewAnnouncement, plans: &[NewChannelPlan]) -> Result<()> {
    write(db, a, plans, None, None).await.map(|_| ())
}

/// A live alert's copies leased at acceptance to the accepting instance's workers, for the
/// channels in `channels` (their `send` copies; an email fan-out is expanded as usual): the
/// claim is part of the acceptance's transaction, so the first send waits for no claim
/// statement of its own. Every invariant of a claimed delivery holds from the commit on
/// (in flight, leased until `until`, its first attempt counted); if the process dies before
/// the outcome is recorded, the lease expires and the copy is reclaimed as any other.
pub struct AcceptLease<'a> {
    pub owner: &'a str,
    pub until: i64,
    pub channels: &'a [String],
}

/// A copy leased at acceptance (see [`AcceptLease`]).
#[derive(Clone, Debug)]
pub struct LeasedCopy {
    pub id: i64,
    pub channel: String,
    pub unit_index: i32,
    pub idempotency_key: String,
}

/// [`insert`], with the copies `lease` names leased to it in the same transaction; returns
/// them.
pub async fn insert_leased(
    db: &Db,
    a: &NewAnnouncement,
    plans: &[NewChannelPlan],
    lease: &AcceptLease<'_>,
) -> Result<Vec<LeasedCopy>> {
    write(db, a, plans, None, Some(lease))
        .await
        .map(Option::unwrap_or_default)
}

/// [`insert`], for a schedule's firing: the firing's claim on its schedule runs first in the
/// same transaction, and when it fails (the schedule was edited, paused or deleted, or
/// another instance fired it) nothing is written and `false` comes back.
pub async fn insert_firing(
    db: &Db,
    a: &NewAnnouncement,
    plans: &[NewChannelPlan],
    firing: Option<&super::schedules::Firing>,
) -> Result<bool> {
    write(db, a, plans, firing, None).await.map(|w| w.is_some())
}

/// The copies leased at acceptance, from the deliveries' `RETURNING` rows (either dialect).
macro_rules! leased_copies {
    ($rows:expr) => {{
        let mut copies = Vec::new();
        for r in $rows {
            if r.try_get::<String, _>("status")? == "in_flight" {
                copies.push(LeasedCopy {
                    id: r.try_get("id")?,
                    channel: r.try_get("channel")?,
                    unit_index: r.try_get("unit_index")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                });
            }
        }
        copies
    }};
}

/// The acceptance's writes: `None` when a firing's claim on its schedule failed (nothing
/// written), else the copies leased at acceptance (none without `lease`).
async fn write(
    db: &Db,
    a: &NewAnnouncement,
    plans: &[NewChannelPlan],
    firing: Option<&super::schedules::Firing>,
    lease: Option<&AcceptLease<'_>>,
) -> Result<Option<Vec<LeasedCopy>>> {
    let units: Vec<(&NewChannelPlan, i32)> = plans
        .iter()
        .flat_map(|plan| (0..plan.units).map(move |unit| (plan, unit as i32)))
        .collect();
    let ends_followed = a
        .alert
        .as_ref()
        .is_some_and(|alert| alert.follows.is_some() && a.status != "awaiting_confirmation");
    let leased = lease.is_some();
    if db.is_postgres() && firing.is_none() {
        // On PostgreSQL every statement is a round trip to a server that a backlog keeps
        // busy, and a disaster alert's `202` waits for all of them: the whole acceptance is
        // one statement there (its parts as data-modifying `WITH` queries, which commit or
        // fail together; the foreign keys are checked at its end).
        let sql = acceptance_sql(db, a, plans.len(), units.len(), ends_followed, leased, true);
        let copies = write_pool!(db, p => {
            let q = sqlx::query(&sql[0]);
            let q = bind_writes!(q, a, plans, &units, ends_followed, lease);
            let rows = q.fetch_all(p).await?;
            if leased && !units.is_empty() {
                leased_copies!(&rows)
            } else {
                Vec::new()
            }
        });
        return Ok(Some(copies));
    }
    let sql = acceptance_sql(
        db,
        a,
        plans.len(),
        units.len(),
        ends_followed,
        leased,
        false,
    );
    let out = write_tx!(db, tx => {
        if let Some(f) = firing {
            let n = sqlx::query(super::schedules::CLAIM)
                .bind(f.next).bind(&f.schedule_id).bind(f.version).bind(f.fire_at)
                .execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                // Nothing written: the transaction commits empty.
                return Ok(None);
            }
            sqlx::query(super::schedules::RECORD)
                .bind(&f.schedule_id).bind(f.fire_at).bind(&a.id).bind(None::<String>).bind(a.created_at)
                .execute(&mut *tx).await?;
        }
        let mut sql = sql.iter();
        let mut next = || sqlx::query(sql.next().expect("one statement per part"));
        bind_announcement!(next(), a).execute(&mut *tx).await?;
        if let Some(alert) = &a.alert {
            bind_alert!(next(), a, alert).execute(&mut *tx).await?;
            if ends_followed {
                bind_end_followed!(next(), a, alert).execute(&mut *tx).await?;
            }
        }
        // The channel plans in one statement and the first deliveries in another, however
        // many channels and units.
        if !plans.is_empty() {
            bind_plans!(next(), a, plans).execute(&mut *tx).await?;
        }
        let mut copies = Vec::new();
        if !units.is_empty() {
            let rows = bind_units!(next(), a, &units, lease).fetch_all(&mut *tx).await?;
            if leased {
                copies = leased_copies!(&rows);
            }
        }
        Some(copies)
    });
    Ok(out)
}

/// An announcement row.
#[derive(Clone, Debug, Serialize)]
pub struct AnnouncementRow {
    pub id: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub priority: String,
    pub lang: String,
    pub exercise: bool,
    pub status: String,
    pub request: String,
    pub created_by: String,
    pub request_hash: String,
    pub request_id: Option<String>,
    pub scheduled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const ANNOUNCEMENT_COLUMNS: &str =
    "id, title, body, link, priority, lang, exercise, status, request, \
    created_by, request_hash, request_id, scheduled_at, created_at, updated_at";

/// Decodes an announcement row on either dialect.
macro_rules! announcement_from {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, StoreError>(AnnouncementRow {
            id: r.try_get("id")?,
            title: r.try_get("title")?,
            body: r.try_get("body")?,
            link: r.try_get("link")?,
            priority: r.try_get("priority")?,
            lang: r.try_get("lang")?,
            exercise: r.try_get("exercise")?,
            status: r.try_get("status")?,
            request: r.try_get("request")?,
            created_by: r.try_get("created_by")?,
            request_hash: r.try_get("request_hash")?,
            request_id: r.try_get("request_id")?,
            scheduled_at: r.try_get("scheduled_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }};
}

pub async fn get(db: &Db, id: &str) -> Result<Option<AnnouncementRow>> {
    let sql = format!("SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements WHERE id = $1");
    with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(id).fetch_optional(p).await?;
        row.as_ref().map(|r| announcement_from!(r)).transpose()
    })
}

pub async fn get_by_idempotency_key(
    db: &Db,
    created_by: &str,
    key: &str,
) -> Result<Option<AnnouncementRow>> {
    let sql = format!(
        "SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements WHERE created_by = $1 AND idempotency_key = $2"
    );
    with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(created_by).bind(key).fetch_optional(p).await?;
        row.as_ref().map(|r| announcement_from!(r)).transpose()
    })
}

/// Filters for the announcement list.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub channel: Option<String>,
    pub priority: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Keyset cursor: (created_at, id) of the last row of the previous page.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// Newest first, keyset-paged.
pub async fn list(db: &Db, f: &ListFilter) -> Result<Vec<AnnouncementRow>> {
    let mut sql = format!("SELECT {ANNOUNCEMENT_COLUMNS} FROM announcements a WHERE 1 = 1");
    let mut p = super::Params::new(db);
    let mut next = || p.next();
    if f.status.is_some() {
        sql += &format!(" AND status = {}", next());
    }
    if f.priority.is_some() {
        sql += &format!(" AND priority = {}", next());
    }
    if f.channel.is_some() {
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM announcement_channels c WHERE c.announcement_id = a.id AND c.channel = {})",
            next()
        );
    }
    if f.since.is_some() {
        sql += &format!(" AND created_at >= {}", next());
    }
    if f.until.is_some() {
        sql += &format!(" AND created_at < {}", next());
    }
    if f.before.is_some() {
        let (a, b, c) = (next(), next(), next());
        sql += &format!(" AND (created_at < {a} OR (created_at = {b} AND id < {c}))");
    }
    sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT {}", next());
    with_pool!(db, p => {
        let mut q = sqlx::query(&sql);
        if let Some(v) = &f.status { q = q.bind(v); }
        if let Some(v) = &f.priority { q = q.bind(v); }
        if let Some(v) = &f.channel { q = q.bind(v); }
        if let Some(v) = f.since { q = q.bind(v); }
        if let Some(v) = f.until { q = q.bind(v); }
        if let Some((t, id)) = &f.before { q = q.bind(*t).bind(*t).bind(id); }
        q = q.bind(f.limit);
        let rows = q.fetch_all(p).await?;
        rows.iter().map(|r| announcement_from!(r)).collect()
    })
}

/// The channels an announcement was planned for and their stored renderings.
pub async fn channel_plans(db: &Db, id: &str) -> Result<Vec<(String, String)>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, rendering FROM announcement_channels WHERE announcement_id = $1 ORDER BY channel")
            .bind(id).fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get("channel")?, r.try_get("rendering")?))).collect()
    })
}

pub async fn rendering(db: &Db, id: &str, channel: &str) -> Result<Option<String>> {
    Ok(with_pool!(db, p => sqlx::query_scalar(
        "SELECT rendering FROM announcement_channels WHERE announcement_id = $1 AND channel = $2")
        .bind(id).bind(channel).fetch_optional(p).await?))
}

/// Per-channel rollup of an announcement's deliveries, as `GET /announcements/{id}` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelSummary {
    pub channel: String,
    /// `sent` when every delivery is sent, `failed` when any failed for good, else the
    /// least advanced state among them.
    #[schema(schema_with = crate::api::schema::delivery_status)]
    pub status: String,
    pub total: i64,
    pub sent: i64,
    pub failed: i64,
    pub attempts: i64,
    pub remote_ids: Vec<String>,
    pub last_error: Option<String>,
    /// RFC 3339, Asia/Tokyo, when the last delivery of this channel was sent.
    pub sent_at: Option<String>,
}

pub async fn summarize(db: &Db, id: &str) -> Result<Vec<ChannelSummary>> {
    struct Group {
        channel: String,
        kind: String,
        status: String,
        n: i64,
        attempts: i64,
        sent_at: Option<i64>,
    }
    let groups = with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, kind, status, COUNT(*) AS n, COALESCE(SUM(attempts), 0) AS attempts, \
                 MAX(sent_at) AS sent_at \
             FROM deliveries WHERE announcement_id = $1 GROUP BY channel, kind, status")
            .bind(id).fetch_all(p).await?;
        rows.iter().map(|r| Ok(Group {
            channel: r.try_get("channel")?,
            kind: r.try_get("kind")?,
            status: r.try_get("status")?,
            n: r.try_get("n")?,
            attempts: r.try_get("attempts")?,
            sent_at: r.try_get("sent_at")?,
        })).collect::<Result<Vec<_>>>()?
    });
    let extras = with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, remote_id, last_error, status FROM deliveries \
             WHERE announcement_id = $1 AND subscriber_id = 0 AND kind = 'send' ORDER BY id")
            .bind(id).fetch_all(p).await?;
        rows.iter().map(|r| Ok((
            r.try_get::<String, _>("channel")?,
            r.try_get::<Option<String>, _>("remote_id")?,
            r.try_get::<Option<String>, _>("last_error")?,
            r.try_get::<String, _>("status")?,
        ))).collect::<Result<Vec<_>>>()?
    });
    let last_errors = with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, last_error FROM deliveries WHERE announcement_id = $1 \
             AND last_error IS NOT NULL AND status IN ('failed', 'retrying') ORDER BY updated_at DESC LIMIT 50")
            .bind(id).fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("channel")?, r.try_get::<String, _>("last_error")?)))
            .collect::<Result<Vec<_>>>()?
    });
    let mut channels: Vec<String> = groups.iter().map(|g| g.channel.clone()).collect();
    channels.sort();
    channels.dedup();
    let mut out = Vec::new();
    for channel in channels {
        let mine: Vec<&Group> = groups.iter().filter(|g| g.channel == channel).collect();
        let sends: Vec<&&Group> = mine.iter().filter(|g| g.kind == "send").collect();
        let total: i64 = sends.iter().map(|g| g.n).sum();
        let count = |s: &str| {
            sends
                .iter()
                .filter(|g| g.status == s)
                .map(|g| g.n)
                .sum::<i64>()
        };
        let (sent, failed) = (count("sent"), count("failed"));
        // An unfinished expansion means more copies are still to be planned.
        let expanding = mine
            .iter()
            .any(|g| g.kind == "expand" && g.status != "sent");
        let parse = |g: &&Group| g.status.parse::<DeliveryStatus>().ok();
        let status = if expanding {
            crate::status::channel_status(
                mine.iter()
                    .filter(|g| g.kind == "expand")
                    .chain(sends.iter().copied())
                    .filter_map(parse),
            )
        } else {
            crate::status::channel_status(sends.iter().copied().filter_map(parse))
        }
        .as_str()
        .to_string();
        let remote_ids = extras
            .iter()
            .filter(|(c, r, _, _)| c == &channel && r.is_some())
            .filter_map(|(_, r, _, _)| r.clone())
            .collect();
        let last_error = last_errors
            .iter()
            .find(|(c, _)| c == &channel)
            .map(|(_, e)| e.clone());
        let sent_at = if sent > 0 {
            sends
                .iter()
                .filter(|g| g.status == "sent")
                .filter_map(|g| g.sent_at)
                .max()
        } else {
            None
        };
        out.push(ChannelSummary {
            channel,
            status,
            total,
            sent,
            failed,
            attempts: sends.iter().map(|g| g.attempts).sum(),
            remote_ids,
            last_error,
            sent_at: sent_at.map(crate::time::rfc3339_jst),
        });
    }
    Ok(out)
}

/// Cancels every delivery not yet started. Returns the number cancelled, or None when the
/// announcement does not exist. In-flight attempts finish (they are already on the wire).
/// What a cancel did.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancelled {
    NotFound,
    /// It was cancelled before: nothing to do.
    Already,
    /// Everything was sent, failed or is on the wire: nothing left to cancel.
    NothingLeft,
    /// This many deliveries will not go out.
    Stopped(u64),
}

/// Cancels every delivery not yet started, and marks the announcement `cancelled` when
/// that stopped anything. In-flight attempts finish (they are already on the wire).
pub async fn cancel(db: &Db, id: &str) -> Result<Cancelled> {
    let now = now_ms();
    let out = write_tx!(db, tx => {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM announcements WHERE id = $1")
            .bind(id).fetch_optional(&mut *tx).await?;
        match status.as_deref() {
            None => Cancelled::NotFound,
            Some("cancelled") => Cancelled::Already,
            Some(_) => {
                let n = sqlx::query(
                    "UPDATE deliveries SET status = 'cancelled', last_error = 'cancelled by staff', updated_at = $2, \
                         lease_owner = NULL, lease_until = NULL \
                     WHERE announcement_id = $1 AND (status IN ('pending', 'retrying') \
                         OR (kind = 'expand' AND status = 'in_flight'))")
                    .bind(id).bind(now).execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    Cancelled::NothingLeft
                } else {
                    sqlx::query("UPDATE announcements SET status = 'cancelled', updated_at = $2 WHERE id = $1")
                        .bind(id).bind(now).execute(&mut *tx).await?;
                    Cancelled::Stopped(n)
                }
            }
        }
    });
    Ok(out)
}

/// One attempt in the delivery log.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: i64,
    pub announcement_id: String,
    pub channel: String,
    pub attempt: i32,
    /// sent | already_sent | reconciled | transient | uncertain | rate_limited | quota | auth | permanent | retry_key_expired | internal | cancelled
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// What the platform said besides the id (a soft bounce, the message ids).
    pub note: Option<String>,
    pub remote_id: Option<String>,
    pub worker: String,
    pub started_at: String,
    pub finished_at: String,
    pub exercise: bool,
}

#[derive(Clone, Debug, Default)]
pub struct AttemptFilter {
    pub announcement_id: Option<String>,
    pub channel: Option<String>,
    pub outcome: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub async fn attempts(db: &Db, f: &AttemptFilter) -> Result<Vec<AttemptRow>> {
    let mut sql = String::from(
        "SELECT t.id, t.delivery_id, t.announcement_id, t.channel, t.attempt, t.outcome, t.status_code, \
             t.error, t.note, t.remote_id, t.worker, t.started_at, t.finished_at, a.exercise \
         FROM delivery_attempts t JOIN announcements a ON a.id = t.announcement_id WHERE 1 = 1",
    );
    let mut p = super::Params::new(db);
    let mut next = || p.next();
    if f.announcement_id.is_some() {
        sql += &format!(" AND t.announcement_id = {}", next());
    }
    if f.channel.is_some() {
        sql += &format!(" AND t.channel = {}", next());
    }
    if f.outcome.is_some() {
        sql += &format!(" AND t.outcome = {}", next());
    }
    if f.before_id.is_some() {
        sql += &format!(" AND t.id < {}", next());
    }
    sql += &format!(" ORDER BY t.id DESC LIMIT {}", next());
    with_pool!(db, p => {
        let mut q = sqlx::query(&sql);
        if let Some(v) = &f.announcement_id { q = q.bind(v); }
        if let Some(v) = &f.channel { q = q.bind(v); }
        if let Some(v) = &f.outcome { q = q.bind(v); }
        if let Some(v) = f.before_id { q = q.bind(v); }
        q = q.bind(f.limit);
        let rows = q.fetch_all(p).await?;
        rows.iter().map(|r| Ok(AttemptRow {
            id: r.try_get("id")?,
            delivery_id: r.try_get("delivery_id")?,
            announcement_id: r.try_get("announcement_id")?,
            channel: r.try_get("channel")?,
            attempt: r.try_get("attempt")?,
            outcome: r.try_get("outcome")?,
            status_code: r.try_get("status_code")?,
            error: r.try_get("error")?,
            note: r.try_get("note")?,
            remote_id: r.try_get("remote_id")?,
            worker: r.try_get("worker")?,
            started_at: crate::time::rfc3339_jst(r.try_get("started_at")?),
            finished_at: crate::time::rfc3339_jst(r.try_get("finished_at")?),
            exercise: r.try_get("exercise")?,
        })).collect::<Result<Vec<_>>>()
    })
}

/// Resets failed deliveries of an announcement for another round (admin retry).
pub async fn retry_failed(db: &Db, id: &str, channel: Option<&str>) -> Result<u64> {
    let now = now_ms();
    let n = write_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = 'retrying', attempts = 0, run_after = $2, updated_at = $2 \
         WHERE announcement_id = $1 AND status = 'failed' AND ($3 IS NULL OR channel = $3) \
           AND NOT EXISTS (SELECT 1 FROM announcements a WHERE a.id = $1 AND a.status = 'cancelled')")
        .bind(id).bind(now).bind(channel).execute(p).await?.rows_affected());
    if n > 0 {
        write_pool!(db, p => sqlx::query(
            "UPDATE announcements SET status = 'sending', updated_at = $2 WHERE id = $1")
            .bind(id).bind(now).execute(p).await?.rows_affected());
    }
    Ok(n)
}

/// What a review (the console's approval step) did.
#[derive(Debug)]
pub enum Reviewed {
    NotFound,
    NotWaiting(String),
    /// The reviewer wrote it: a second person must review it.
    OwnAnnouncement,
    /// Approved (`scheduled` or `queued`) or returned (`cancelled`).
    Released(String),
}

/// Approves (`returned_with` = None) or returns with a comment a post that waits for
/// approval, in one transaction: a returned post's deliveries are cancelled and nothing of
/// it goes out.
pub async fn review(db: &Db, id: &str, by: &str, returned_with: Option<&str>) -> Result<Reviewed> {
    let now = now_ms();
    let out = write_tx!(db, tx => {
        let row = sqlx::query("SELECT status, created_by, scheduled_at FROM announcements WHERE id = $1")
            .bind(id).fetch_optional(&mut *tx).await?;
        match row {
            None => Reviewed::NotFound,
            Some(r) => {
                let status: String = r.try_get("status")?;
                let author: String = r.try_get("created_by")?;
                let scheduled_at: Option<i64> = r.try_get("scheduled_at")?;
                if status != "awaiting_approval" {
                    Reviewed::NotWaiting(status)
                } else if author == by {
                    Reviewed::OwnAnnouncement
                } else {
                    let next = match returned_with {
                        Some(_) => "cancelled",
                        None if scheduled_at.is_some_and(|t| t > now) => "scheduled",
                        None => "queued",
                    };
                    if returned_with.is_some() {
                        sqlx::query(
                            "UPDATE deliveries SET status = 'cancelled', last_error = 'returned by the approver', updated_at = $2 \
                             WHERE announcement_id = $1 AND status IN ('pending', 'retrying')")
                            .bind(id).bind(now).execute(&mut *tx).await?;
                    }
                    sqlx::query(
                        "UPDATE announcements SET status = $1, reviewed_by = $2, reviewed_at = $3, review_note = $4, updated_at = $3 \
                         WHERE id = $5")
                        .bind(next).bind(by).bind(now).bind(returned_with).bind(id)
                        .execute(&mut *tx).await?;
                    Reviewed::Released(next.to_string())
                }
            }
        }
    });
    Ok(out)
}

/// Who reviewed an announcement, and the comment it was returned with.
#[derive(Clone, Debug)]
pub struct Review {
    pub by: Option<String>,
    pub note: Option<String>,
}

pub async fn review_of(db: &Db, id: &str) -> Result<Option<Review>> {
    let row: Option<(Option<String>, Option<String>)> = with_pool!(db, p => {
        sqlx::query_as("SELECT reviewed_by, review_note FROM announcements WHERE id = $1")
            .bind(id).fetch_optional(p).await?
    });
    Ok(row.map(|(by, note)| Review { by, note }))
}
