//! The durable delivery queue: rows in `deliveries`, claimed with a lease, finished with a
//! fenced update, reclaimed when a lease expires.
//!
//! Invariants:
//! - A delivery is `in_flight` only while some worker holds its lease (`lease_owner`,
//!   `lease_until`). Every completion is fenced on `lease_owner`: a worker whose lease was
//!   reclaimed cannot overwrite the new owner's result.
//! - Claims take the highest lane first (`disaster` 2 > `urgent` 1 > `normal` 0), and a
//!   disaster-only claim (`min_lane = 2`) never returns other work: that is how reserved
//!   disaster workers stay free for disaster work.
//! - A claim is one statement (`UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING`): on
//!   SQLite that statement is its own write transaction; on PostgreSQL the inner select
//!   takes `FOR UPDATE SKIP LOCKED`, so concurrent instances never claim the same row.
//! - Nothing here holds more than one claim batch in memory: the email fan-out to a
//!   million subscribers is expanded into rows `expand_batch` at a time by an `expand`
//!   delivery that moves its cursor in the same transaction as the rows it inserts.

use crate::store::{self, now_ms, with_pool, write_tx, Db, Result};
use sqlx::Row;

/// Delivery statuses, as stored.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const IN_FLIGHT: &str = "in_flight";
    pub const SENT: &str = "sent";
    pub const RETRYING: &str = "retrying";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
}

pub const KIND_SEND: &str = "send";
pub const KIND_EXPAND: &str = "expand";

/// A delivery a worker holds the lease on.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    pub announcement_id: String,
    pub channel: String,
    pub kind: String,
    pub unit_index: i32,
    pub subscriber_id: i64,
    pub lane: i32,
    /// Counted attempts including this one.
    pub attempts: i32,
    pub idempotency_key: String,
    /// The previous attempt may have been applied: reconcile before sending again.
    pub uncertain: bool,
    pub expand_cursor: i64,
}

/// Claims up to `limit` due deliveries of `channel` in lane `min_lane` or higher.
pub async fn claim(
    db: &Db,
    channel: &str,
    min_lane: i32,
    limit: i64,
    owner: &str,
    lease_ms: i64,
) -> Result<Vec<Claimed>> {
    let now = now_ms();
    let lock = if db.is_postgres() {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE deliveries SET status = 'in_flight', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT id FROM deliveries \
             WHERE channel = $4 AND status IN ('pending', 'retrying') AND run_after <= $3 AND lane >= $5 \
             ORDER BY lane DESC, run_after, id LIMIT $6{lock}) \
         RETURNING id, announcement_id, channel, kind, unit_index, subscriber_id, lane, attempts, \
             idempotency_key, uncertain, expand_cursor"
    );
    let rows = with_pool!(db, p => {
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(channel)
            .bind(min_lane)
            .bind(limit)
            .fetch_all(p)
            .await?;
        rows.iter().map(|r| Ok(Claimed {
            id: r.try_get("id")?,
            announcement_id: r.try_get("announcement_id")?,
            channel: r.try_get("channel")?,
            kind: r.try_get("kind")?,
            unit_index: r.try_get("unit_index")?,
            subscriber_id: r.try_get("subscriber_id")?,
            lane: r.try_get("lane")?,
            attempts: r.try_get("attempts")?,
            idempotency_key: r.try_get("idempotency_key")?,
            uncertain: r.try_get("uncertain")?,
            expand_cursor: r.try_get("expand_cursor")?,
        })).collect::<Result<Vec<_>>>()?
    });
    let mut rows = rows;
    // RETURNING gives no order guarantee; workers should start the highest lane first.
    rows.sort_by(|a, b| b.lane.cmp(&a.lane).then(a.id.cmp(&b.id)));
    if !rows.is_empty() {
        let ids: Vec<&str> = rows.iter().map(|r| r.announcement_id.as_str()).collect();
        mark_sending(db, &ids).await?;
    }
    Ok(rows)
}

/// `queued`/`scheduled` announcements become `sending` when their first delivery is claimed.
async fn mark_sending(db: &Db, ids: &[&str]) -> Result<()> {
    let mut unique: Vec<&str> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let now = now_ms();
    for id in unique {
        with_pool!(db, p => sqlx::query(
            "UPDATE announcements SET status = 'sending', updated_at = $2 \
             WHERE id = $1 AND status IN ('queued', 'scheduled')")
            .bind(id).bind(now).execute(p).await?.rows_affected());
    }
    Ok(())
}

/// What became of one attempt.
#[derive(Clone, Debug)]
pub enum Outcome {
    Sent {
        remote_id: Option<String>,
        note: Option<String>,
        /// `already_sent`, `reconciled` or `sent`, for the delivery log.
        how: &'static str,
    },
    /// Try again at `run_after` (ms). `refund` gives the attempt back (rate limits,
    /// pauses), `uncertain` asks the next attempt to reconcile first.
    Retry {
        run_after: i64,
        class: &'static str,
        error: String,
        status_code: Option<i32>,
        refund: bool,
        uncertain: bool,
    },
    Failed {
        class: &'static str,
        error: String,
        status_code: Option<i32>,
    },
    /// Not attempted at all (the subscriber left before the copy was sent).
    Cancelled { reason: String },
}

/// Records the attempt in the delivery log and moves the delivery to its next state, in one
/// transaction, fenced on the lease. Returns false when the lease had been lost (another
/// worker owns the delivery now); nothing is written then.
pub async fn finish(
    db: &Db,
    d: &Claimed,
    owner: &str,
    started_at: i64,
    outcome: &Outcome,
) -> Result<bool> {
    let now = now_ms();
    let (attempt_outcome, error, status_code, remote_id): (
        &str,
        Option<&str>,
        Option<i32>,
        Option<&str>,
    ) = match outcome {
        Outcome::Sent { remote_id, how, .. } => (how, None, None, remote_id.as_deref()),
        Outcome::Retry {
            class,
            error,
            status_code,
            ..
        } => (class, Some(error.as_str()), *status_code, None),
        Outcome::Failed {
            class,
            error,
            status_code,
        } => (class, Some(error.as_str()), *status_code, None),
        Outcome::Cancelled { reason } => ("cancelled", Some(reason.as_str()), None, None),
    };
    let updated = write_tx!(db, tx => {
        let update = match outcome {
            Outcome::Sent { remote_id, .. } => sqlx::query(
                "UPDATE deliveries SET status = 'sent', remote_id = $3, sent_at = $4, last_error = NULL, \
                     uncertain = FALSE, lease_owner = NULL, lease_until = NULL, updated_at = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'")
                .bind(d.id).bind(owner).bind(remote_id.clone()).bind(now)
                .execute(&mut *tx).await?,
            Outcome::Retry { run_after, error, refund, uncertain, .. } => sqlx::query(
                "UPDATE deliveries SET status = 'retrying', run_after = $3, last_error = $4, \
                     attempts = attempts - $5, uncertain = $6, lease_owner = NULL, lease_until = NULL, updated_at = $7 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'")
                .bind(d.id).bind(owner).bind(*run_after).bind(error)
                .bind(if *refund { 1i32 } else { 0i32 }).bind(*uncertain).bind(now)
                .execute(&mut *tx).await?,
            Outcome::Failed { error, .. } => sqlx::query(
                "UPDATE deliveries SET status = 'failed', last_error = $3, lease_owner = NULL, \
                     lease_until = NULL, updated_at = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'")
                .bind(d.id).bind(owner).bind(error).bind(now)
                .execute(&mut *tx).await?,
            Outcome::Cancelled { reason } => sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', last_error = $3, lease_owner = NULL, \
                     lease_until = NULL, updated_at = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'")
                .bind(d.id).bind(owner).bind(reason).bind(now)
                .execute(&mut *tx).await?,
        };
        if update.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO delivery_attempts (delivery_id, announcement_id, channel, attempt, outcome, \
                     status_code, error, remote_id, worker, started_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
                .bind(d.id).bind(&d.announcement_id).bind(&d.channel).bind(d.attempts)
                .bind(attempt_outcome).bind(status_code).bind(error).bind(remote_id)
                .bind(owner).bind(started_at).bind(now)
                .execute(&mut *tx).await?;
            true
        } else {
            false
        }
    });
    if updated && !matches!(outcome, Outcome::Retry { .. }) {
        refresh_announcement_status(db, &d.announcement_id).await?;
    }
    Ok(updated)
}

/// Puts a claimed delivery back untouched (its channel was paused meanwhile, or the
/// daemon is shutting down): no attempt is recorded or counted.
pub async fn release(db: &Db, d: &Claimed, owner: &str, run_after: i64) -> Result<()> {
    with_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = CASE WHEN attempts <= 1 THEN 'pending' ELSE 'retrying' END, \
             attempts = attempts - 1, run_after = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'")
        .bind(d.id).bind(owner).bind(run_after).bind(now_ms()).execute(p).await?.rows_affected());
    Ok(())
}

/// Multiplies an email unit by the next batch of active subscribers (after the cursor),
/// in one transaction with the cursor move. Returns how many deliveries were inserted;
/// when fewer than `batch`, the expansion is complete and the expand row is `sent`.
pub async fn expand_batch(db: &Db, d: &Claimed, owner: &str, batch: i64) -> Result<Option<u64>> {
    let now = now_ms();
    let done = write_tx!(db, tx => {
        // Still ours? (A reclaimed lease means another worker continues from the cursor.)
        let cursor: Option<i64> = sqlx::query_scalar(
            "SELECT expand_cursor FROM deliveries WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight'")
            .bind(d.id).bind(owner).fetch_optional(&mut *tx).await?;
        match cursor {
            None => None,
            Some(cursor) => {
                let last: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(id) FROM (SELECT id FROM subscribers WHERE status = 'active' AND id > $1 \
                     ORDER BY id LIMIT $2) AS batch")
                    .bind(cursor).bind(batch).fetch_one(&mut *tx).await?;
                let inserted = match last {
                    None => 0,
                    Some(last) => sqlx::query(
                        "INSERT INTO deliveries (announcement_id, channel, kind, unit_index, subscriber_id, lane, \
                             status, attempts, run_after, idempotency_key, created_at, updated_at) \
                         SELECT $1, $2, 'send', $3, s.id, $4, 'pending', 0, $5, \
                             $1 || ':' || $2 || ':' || CAST($3 AS TEXT) || ':' || CAST(s.id AS TEXT), $5, $5 \
                         FROM subscribers s WHERE s.status = 'active' AND s.id > $6 AND s.id <= $7 \
                         ON CONFLICT DO NOTHING")
                        .bind(&d.announcement_id).bind(&d.channel).bind(d.unit_index).bind(d.lane)
                        .bind(now).bind(cursor).bind(last)
                        .execute(&mut *tx).await?.rows_affected(),
                };
                let finished = last.is_none() || {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM subscribers WHERE status = 'active' AND id > $1 AND id <= $2")
                        .bind(cursor).bind(last.unwrap_or(cursor)).fetch_one(&mut *tx).await?;
                    n < batch
                };
                if finished {
                    sqlx::query(
                        "UPDATE deliveries SET status = 'sent', expand_cursor = $2, sent_at = $3, \
                             lease_owner = NULL, lease_until = NULL, updated_at = $3 WHERE id = $1")
                        .bind(d.id).bind(last.unwrap_or(cursor)).bind(now).execute(&mut *tx).await?;
                } else {
                    // Hand the row back at once, keeping its lane: the next batch goes to
                    // whichever worker claims it, interleaved fairly with other work.
                    sqlx::query(
                        "UPDATE deliveries SET status = 'pending', expand_cursor = $2, attempts = 0, \
                             lease_owner = NULL, lease_until = NULL, updated_at = $3 WHERE id = $1")
                        .bind(d.id).bind(last.unwrap_or(cursor)).bind(now).execute(&mut *tx).await?;
                }
                Some((inserted, finished))
            }
        }
    });
    match done {
        None => Ok(None),
        Some((inserted, finished)) => {
            if finished {
                refresh_announcement_status(db, &d.announcement_id).await?;
            }
            Ok(Some(inserted))
        }
    }
}

/// Renews the leases a worker holds, so a long attempt is not mistaken for a crash.
pub async fn extend_leases(db: &Db, owner: &str, lease_ms: i64) -> Result<u64> {
    let now = now_ms();
    Ok(with_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET lease_until = $2 WHERE lease_owner = $1 AND status = 'in_flight'")
        .bind(owner).bind(now + lease_ms).execute(p).await?.rows_affected()))
}

/// Returns deliveries whose lease expired (their worker crashed or hung) to the queue.
/// A `send` that was in flight may have reached the platform: it is marked uncertain so
/// the next attempt reconciles first where the platform allows.
pub async fn reclaim_expired(db: &Db) -> Result<u64> {
    let now = now_ms();
    Ok(with_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = 'retrying', run_after = $1, \
             uncertain = CASE WHEN kind = 'send' THEN TRUE ELSE uncertain END, \
             lease_owner = NULL, lease_until = NULL, updated_at = $1 \
         WHERE status = 'in_flight' AND lease_until < $1")
        .bind(now).execute(p).await?.rows_affected()))
}

/// At start on SQLite, where one process owns the file, nothing else can hold a lease:
/// every `in_flight` row belongs to a previous run that died.
pub async fn reclaim_all(db: &Db) -> Result<u64> {
    let now = now_ms();
    Ok(with_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = 'retrying', run_after = $1, \
             uncertain = CASE WHEN kind = 'send' THEN TRUE ELSE uncertain END, \
             lease_owner = NULL, lease_until = NULL, updated_at = $1 \
         WHERE status = 'in_flight'")
        .bind(now).execute(p).await?.rows_affected()))
}

/// Recomputes an announcement's status from its deliveries once none is left to do:
/// `sent` (all sent), `failed` (none sent), `partially_failed` (some failed), or
/// `cancelled`. While work remains it stays as it is (`queued`, `scheduled`, `sending`).
pub async fn refresh_announcement_status(db: &Db, announcement_id: &str) -> Result<()> {
    let open: Option<i64> = with_pool!(db, p => sqlx::query_scalar(
        "SELECT id FROM deliveries WHERE announcement_id = $1 \
         AND status IN ('pending', 'in_flight', 'retrying') LIMIT 1")
        .bind(announcement_id).fetch_optional(p).await?);
    if open.is_some() {
        return Ok(());
    }
    let rows = with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM deliveries WHERE announcement_id = $1 AND kind = 'send' \
             GROUP BY status")
            .bind(announcement_id).fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect::<Result<Vec<_>>>()?
    });
    let count = |s: &str| {
        rows.iter()
            .filter(|(st, _)| st == s)
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    let (sent, failed, cancelled) = (
        count(status::SENT),
        count(status::FAILED),
        count(status::CANCELLED),
    );
    let new_status = if failed == 0 && sent > 0 {
        "sent"
    } else if failed > 0 && sent > 0 {
        "partially_failed"
    } else if failed > 0 {
        "failed"
    } else if cancelled > 0 {
        "cancelled"
    } else {
        // No send rows at all (an email fan-out with no subscribers): nothing failed.
        "sent"
    };
    with_pool!(db, p => sqlx::query(
        "UPDATE announcements SET status = $2, updated_at = $3 WHERE id = $1 AND status <> 'cancelled'")
        .bind(announcement_id).bind(new_status).bind(now_ms()).execute(p).await?.rows_affected());
    Ok(())
}

/// Pending deliveries per channel and lane, for the channel view.
pub async fn depth(db: &Db) -> Result<Vec<(String, i32, i64)>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, lane, COUNT(*) AS n FROM deliveries \
             WHERE status IN ('pending', 'retrying', 'in_flight') GROUP BY channel, lane")
            .fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get("channel")?, r.try_get("lane")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>>>()
    })
}

#[allow(unused)]
fn _assert_store_used(_: store::Pool) {}
