//! The durable delivery queue: rows in `deliveries`, claimed with a lease, finished with a
//! fenced update, reclaimed when a lease expires.
//!
//! Invariants:
//! - A delivery is `in_flight` exactly while some worker holds its lease (`lease_owner`,
//!   `lease_until`): every change away from `in_flight` clears both. Every completion is
//!   fenced on `lease_owner`: a worker whose lease was reclaimed cannot overwrite the new
//!   owner's result.
//! - Claims take the highest lane first (`disaster` 2 > `urgent` 1 > `normal` 0), and a
//!   disaster-only claim (`min_lane = 2`) never returns other work: that is how reserved
//!   disaster workers stay free for disaster work.
//! - A claim is one statement (`UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING`): on
//!   SQLite that statement is its own write transaction; on PostgreSQL the inner select
//!   takes `FOR UPDATE SKIP LOCKED`, so concurrent instances never claim the same row.
//! - Nothing here holds more than one claim batch in memory: the email fan-out to a
//!   million subscribers is expanded into rows `expand_batch` at a time by an `expand`
//!   delivery that moves its cursor in the same transaction as the rows it inserts.

use crate::store::{now_ms, with_pool, write_pool, write_tx, Db, Params, Result, StoreError};
use sqlx::Row;

pub const KIND_EXPAND: &str = "expand";

/// Outcomes per recorder transaction, adapted to about one short write turn.
pub static RECORD_TURN: crate::store::TurnSize = crate::store::TurnSize::new(128);
/// Subscribers per expansion turn (at most `queue.expand_batch`).
pub static EXPAND_TURN: crate::store::TurnSize = crate::store::TurnSize::new(10_000);

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
    /// When the first attempt started (ms), this one if it is the first.
    pub first_attempt_at: i64,
    /// For a copy to one subscriber: their address, language and unsubscribe token, read
    /// with the claim (one statement for the whole batch); `None` when the subscriber has
    /// left or been removed since the copy was queued.
    pub recipient: Option<Subscriber>,
}

/// The subscriber a claimed copy goes to.
#[derive(Clone, Debug)]
pub struct Subscriber {
    pub email: String,
    pub lang: String,
    pub token: String,
}

/// Claims up to `limit` due deliveries of `channel` in lane `min_lane` or higher; with
/// `live_only`, no drill's (the reserved disaster workers are kept for live alerts).
#[allow(clippy::too_many_arguments)]
pub async fn claim(
    db: &Db,
    channel: &str,
    min_lane: i32,
    live_only: bool,
    limit: i64,
    owner: &str,
    lease_ms: i64,
) -> Result<Vec<Claimed>> {
    let now = now_ms();
    let c = ClaimArgs {
        owner,
        lease_until: now + lease_ms,
        now,
        channel,
        min_lane,
        limit,
        live_only,
    };
    if !db.is_postgres() {
        return claim_sqlite(db, &c).await;
    }
    let sql = claim_sql(true);
    let mut rows = write_pool!(db, p => {
        let rows = bind_claim!(sqlx::query(sql), c).fetch_all(p).await?;
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
            first_attempt_at: r.try_get::<Option<i64>, _>("first_attempt_at")?.unwrap_or(now),
            recipient: match r.try_get::<Option<String>, _>("email")? {
                Some(email) => Some(Subscriber {
                    email,
                    lang: r.try_get("lang")?,
                    token: r.try_get("token")?,
                }),
                None => None,
            },
        })).collect::<Result<Vec<_>>>()?
    });
    // RETURNING gives no order guarantee; workers should start the highest lane first.
    rows.sort_by(|a, b| b.lane.cmp(&a.lane).then(a.id.cmp(&b.id)));
    Ok(rows)
}

/// The claim's statement, its parameters `$1` … `$7` as [`ClaimArgs`] lists them. On
/// PostgreSQL the whole claim: the due rows leased and returned with their recipients. On
/// SQLite its read: the due rows with their recipients as one JSON array (see
/// [`claim_sqlite`]; `$1` and `$2` are the update's there, and sqlx leaves them unbound).
/// Public for the test that checks its plan once the database has statistics of a backlog.
pub fn claim_sql(postgres: bool) -> &'static str {
    static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| claim_text(true));
    static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| claim_text(false));
    if postgres {
        &POSTGRES
    } else {
        &SQLITE
    }
}

/// The text behind [`claim_sql`], built once per process.
fn claim_text(postgres: bool) -> String {
    if postgres {
        // The recipients come in the same statement (one round trip for the batch). Each
        // recipient is looked up by its key (the LIMIT keeps the subquery a lookup per row):
        // a join or an `IN` list lets the planner scan every active subscriber instead when
        // its statistics are older than the table (seen at 10-26 ms a batch with 20,000
        // subscribers and autovacuum off).
        format!(
            "WITH claimed AS (\
                 UPDATE deliveries SET {LEASE} \
                 WHERE id = ANY(ARRAY(SELECT id FROM deliveries WHERE {DUE} \
                     ORDER BY lane DESC, run_after, id LIMIT $6 FOR UPDATE SKIP LOCKED)) \
                 RETURNING id, announcement_id, channel, kind, unit_index, subscriber_id, lane, attempts, \
                     idempotency_key, uncertain, expand_cursor, first_attempt_at) \
             SELECT c.*, s.email, s.lang, s.token FROM claimed c \
             LEFT JOIN LATERAL (SELECT email, lang, token FROM subscribers \
                 WHERE c.subscriber_id > 0 AND id = c.subscriber_id AND status = 'active' LIMIT 1) s ON TRUE"
        )
    } else {
        format!(
            "SELECT json_group_array(json_array(d.id, d.announcement_id, d.channel, d.kind, d.unit_index, \
                 d.subscriber_id, d.lane, d.attempts + 1, d.idempotency_key, d.uncertain, d.expand_cursor, \
                 COALESCE(d.first_attempt_at, $3), s.email, s.lang, s.token)) \
             FROM (SELECT * FROM deliveries WHERE {DUE} ORDER BY lane DESC, run_after, id LIMIT $6) d \
             LEFT JOIN subscribers s ON d.subscriber_id > 0 AND s.id = d.subscriber_id AND s.status = 'active'"
        )
    }
}

/// A claim's parameters, bound as `$1` … `$7` in this order (see [`DUE`]).
struct ClaimArgs<'a> {
    owner: &'a str,
    lease_until: i64,
    now: i64,
    channel: &'a str,
    min_lane: i32,
    limit: i64,
    live_only: bool,
}

macro_rules! bind_claim {
    ($query:expr, $c:expr) => {
        $query
            .bind($c.owner)
            .bind($c.lease_until)
            .bind($c.now)
            .bind($c.channel)
            .bind($c.min_lane)
            .bind($c.limit)
            .bind($c.live_only)
    };
}
use bind_claim;

/// Which deliveries are due for a claim: `$3` now, `$4` the channel, `$5` the lowest lane,
/// `$7` live alerts only (drills wait).
///
/// Whether the announcement holds its copies back is a scalar subquery per row, looked up
/// by key, not `NOT EXISTS`: PostgreSQL turns `NOT EXISTS` into an anti join, and once
/// `ANALYZE` has seen a backlog of one announcement it estimates that join at one row, so
/// it plans a scan of every queued row and a sort instead of walking `deliveries_due` for
/// the batch (test `a_claim_reads_the_due_index_once_statistics_see_a_backlog`).
const DUE: &str = "channel = $4 AND status IN ('pending', 'retrying') AND run_after <= $3 AND lane >= $5 \
     AND NOT COALESCE((SELECT a.status IN ('cancelled', 'awaiting_confirmation', 'awaiting_approval') \
             OR ($7 AND a.exercise) \
         FROM announcements a WHERE a.id = deliveries.announcement_id), FALSE)";

/// What a claim sets on each row it takes: `$1` the owner, `$2` the lease's end, `$3` now.
const LEASE: &str =
    "status = 'in_flight', lease_owner = $1, lease_until = $2, attempts = attempts + 1, \
     first_attempt_at = COALESCE(first_attempt_at, $3), updated_at = $3";

/// One claimed row as the SQLite claim reads it (see [`claim_sqlite`]).
type ClaimedRow = (
    i64,            // id
    String,         // announcement_id
    String,         // channel
    String,         // kind
    i32,            // unit_index
    i64,            // subscriber_id
    i32,            // lane
    i32,            // attempts, this one included
    String,         // idempotency_key
    i64,            // uncertain (0 or 1)
    i64,            // expand_cursor
    i64,            // first_attempt_at
    Option<String>, // the active subscriber's email,
    Option<String>, // language
    Option<String>, // and unsubscribe token
);

/// The claim on SQLite: in one write transaction, the due rows with their recipients read
/// as one JSON array (one row), then those rows leased by id. sqlx hands every result row
/// from its SQLite thread to the runtime one at a time, and on a busy core each hand-off may
/// cost context switches; an `UPDATE … RETURNING` of 64 rows plus a read of their 64
/// recipients handed over about 130 rows, this claim hands over one. (SQLite has no UPDATE inside
/// WITH, which is how PostgreSQL does it in one statement.) `BEGIN IMMEDIATE` holds the
/// write lock from the read to the update, so the rows read are the rows leased.
async fn claim_sqlite(db: &Db, c: &ClaimArgs<'_>) -> Result<Vec<Claimed>> {
    let read = claim_sql(false);
    let found: Vec<ClaimedRow> = write_tx!(db, tx => {
        let json: String = bind_claim!(sqlx::query_scalar(read), c)
            .fetch_one(&mut *tx)
            .await?;
        let found: Vec<ClaimedRow> = serde_json::from_str(&json)
            .map_err(|e| StoreError::Other(format!("the claim's rows: {e}")))?;
        if !found.is_empty() {
            let ids = serde_json::to_string(&found.iter().map(|r| r.0).collect::<Vec<_>>())
                .expect("a list of integers serialises");
            let lease = format!("UPDATE deliveries SET {LEASE} WHERE id IN (SELECT value FROM json_each($4))");
            let leased = sqlx::query(&lease)
                .bind(c.owner)
                .bind(c.lease_until)
                .bind(c.now)
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if leased != found.len() as u64 {
                return Err(StoreError::Other(format!(
                    "the claim read {} rows and leased {leased}", found.len())));
            }
        }
        found
    });
    let mut rows: Vec<Claimed> = found
        .into_iter()
        .map(|r| Claimed {
            id: r.0,
            announcement_id: r.1,
            channel: r.2,
            kind: r.3,
            unit_index: r.4,
            subscriber_id: r.5,
            lane: r.6,
            attempts: r.7,
            idempotency_key: r.8,
            uncertain: r.9 != 0,
            expand_cursor: r.10,
            first_attempt_at: r.11,
            recipient: match (r.12, r.13, r.14) {
                (Some(email), Some(lang), Some(token)) => Some(Subscriber { email, lang, token }),
                _ => None,
            },
        })
        .collect();
    rows.sort_by(|a, b| b.lane.cmp(&a.lane).then(a.id.cmp(&b.id)));
    Ok(rows)
}

/// Gives back the copies of `announcement_id` leased to `owner` at its acceptance and not
/// yet attempted (see `store::announcements::AcceptLease`): for an acceptance whose commit
/// may have happened though its answer was lost. Nothing changes when it did not commit.
pub async fn release_accepted(db: &Db, announcement_id: &str, owner: &str) -> Result<u64> {
    Ok(write_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = 'pending', attempts = 0, lease_owner = NULL, lease_until = NULL, \
             first_attempt_at = NULL, updated_at = $3 \
         WHERE announcement_id = $1 AND lease_owner = $2 AND status = 'in_flight' AND attempts = 1")
        .bind(announcement_id).bind(owner).bind(now_ms()).execute(p).await?.rows_affected()))
}

/// A `queued` or `scheduled` announcement becomes `sending` when its first delivery is
/// claimed.
pub async fn mark_sending(db: &Db, announcement_id: &str) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "UPDATE announcements SET status = 'sending', updated_at = $2 \
         WHERE id = $1 AND status IN ('queued', 'scheduled')")
        .bind(announcement_id).bind(now_ms()).execute(p).await?.rows_affected());
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

impl Outcome {
    /// What the delivery log keeps of it: (outcome, error, note, status code, remote id).
    #[allow(clippy::type_complexity)]
    pub fn log_fields(&self) -> (&str, Option<&str>, Option<&str>, Option<i32>, Option<&str>) {
        match self {
            Outcome::Sent {
                remote_id,
                how,
                note,
            } => (how, None, note.as_deref(), None, remote_id.as_deref()),
            Outcome::Retry {
                class,
                error,
                status_code,
                ..
            } => (class, Some(error.as_str()), None, *status_code, None),
            Outcome::Failed {
                class,
                error,
                status_code,
            } => (class, Some(error.as_str()), None, *status_code, None),
            Outcome::Cancelled { reason } => ("cancelled", Some(reason.as_str()), None, None, None),
        }
    }

    /// Platform text fit for storage: no NUL (PostgreSQL refuses it in text) and bounded
    /// length, so one odd response can never make an outcome unrecordable.
    pub fn sanitized(self) -> Outcome {
        fn clean(s: String) -> String {
            let s = if s.contains('\0') {
                s.replace('\0', "")
            } else {
                s
            };
            if s.chars().count() > 2000 {
                s.chars().take(2000).collect::<String>() + "…"
            } else {
                s
            }
        }
        match self {
            Outcome::Sent {
                remote_id,
                note,
                how,
            } => Outcome::Sent {
                remote_id: remote_id.map(clean),
                note: note.map(clean),
                how,
            },
            Outcome::Retry {
                run_after,
                class,
                error,
                status_code,
                refund,
                uncertain,
            } => Outcome::Retry {
                run_after,
                class,
                error: clean(error),
                status_code,
                refund,
                uncertain,
            },
            Outcome::Failed {
                class,
                error,
                status_code,
            } => Outcome::Failed {
                class,
                error: clean(error),
                status_code,
            },
            Outcome::Cancelled { reason } => Outcome::Cancelled {
                reason: clean(reason),
            },
        }
    }
}

/// Rows per statement when a batch is recorded (well within SQLite's and PostgreSQL's
/// limits on bound parameters).
const FINISH_ROWS: usize = 256;

/// One finished attempt, for [`finish_batch`].
pub struct Finished {
    pub delivery: Claimed,
    pub started_at: i64,
    pub outcome: Outcome,
}

/// Records a batch of finished attempts: for each, the attempt in the delivery log and the
/// delivery's next state, fenced on its claim (owner and attempt number), all in one
/// transaction — one commit (one fsync on SQLite) for many deliveries. Returns, per item,
/// false when its lease had been lost (another worker owns it now; nothing is written).
///
/// A crash before the commit loses only the record of these attempts, not the deliveries:
/// their leases expire and they are sent again (at least once).
pub async fn finish_batch(db: &Db, owner: &str, items: &[Finished]) -> Result<Vec<bool>> {
    let now = now_ms();
    let all_sent = items
        .iter()
        .all(|i| matches!(i.outcome, Outcome::Sent { .. }));
    if db.is_postgres() && all_sent && items.len() <= FINISH_ROWS {
        let results = finish_sent_postgres(db, owner, items, now).await?;
        roll_up(db, items, &results).await;
        return Ok(results);
    }
    // Rows are locked in id order, the order every other multi-row writer uses.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].delivery.id);
    let results = write_tx!(db, tx => {
        let started = std::time::Instant::now();
        let mut results = vec![false; items.len()];
        // The common case, a copy sent: one fenced UPDATE for all of them, its rows found by
        // key (the fence is owner and attempt; see `finish_sent_postgres`).
        let sent: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| matches!(items[i].outcome, Outcome::Sent { .. }))
            .collect();
        for chunk in sent.chunks(FINISH_ROWS) {
            let fenced = if db.is_postgres() {
                None
            } else {
                // On SQLite the fenced ids first, as one row (a RETURNING row costs a hand-off
                // from sqlx's SQLite thread each; see `claim_sqlite`), then the same fence in
                // the update. The write lock is held from the one to the other.
                let mut p = Params::new(db);
                let values = p.rows(chunk.len(), 2);
                let sql = format!(
                    "SELECT json_group_array(deliveries.id) FROM (VALUES {values}) AS v \
                     JOIN deliveries ON deliveries.id = v.column1 AND deliveries.attempts = v.column2 \
                     WHERE deliveries.lease_owner = {}",
                    p.next()
                );
                let mut q = sqlx::query_scalar::<_, String>(&sql);
                for &i in chunk {
                    q = q.bind(items[i].delivery.id).bind(items[i].delivery.attempts);
                }
                let json = q.bind(owner).fetch_one(&mut *tx).await?;
                let ids: Vec<i64> = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Other(format!("the fenced ids: {e}")))?;
                Some(ids.into_iter().collect::<std::collections::HashSet<i64>>())
            };
            let mut p = Params::new(db);
            let set = format!("sent_at = {}, updated_at = {}", p.next(), p.next());
            let values = p.rows(chunk.len(), 3);
            let sql = format!(
                "UPDATE deliveries SET status = 'sent', remote_id = v.column3, {set}, last_error = NULL, \
                     uncertain = FALSE, lease_owner = NULL, lease_until = NULL \
                 FROM (VALUES {values}) AS v \
                 WHERE deliveries.id = v.column1 AND deliveries.attempts = v.column2 \
                   AND deliveries.lease_owner = {}{}",
                p.next(),
                if fenced.is_some() { "" } else { " RETURNING id" }
            );
            let mut q = sqlx::query(&sql).bind(now).bind(now);
            for &i in chunk {
                let d = &items[i].delivery;
                let remote_id = match &items[i].outcome {
                    Outcome::Sent { remote_id, .. } => remote_id.as_deref(),
                    _ => None,
                };
                q = q.bind(d.id).bind(d.attempts).bind(remote_id);
            }
            let q = q.bind(owner);
            let fenced = match fenced {
                Some(fenced) => {
                    let updated = q.execute(&mut *tx).await?.rows_affected();
                    if updated != fenced.len() as u64 {
                        return Err(StoreError::Other(format!(
                            "{} sent copies were fenced and {updated} updated", fenced.len())));
                    }
                    fenced
                }
                None => q
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<i64, _>(0))
                    .collect::<std::result::Result<_, _>>()?,
            };
            for &i in chunk {
                results[i] = fenced.contains(&items[i].delivery.id);
            }
        }
        // Retries, failures and skips: one statement each (they are the rare case).
        for &index in order.iter().filter(|&&i| !matches!(items[i].outcome, Outcome::Sent { .. })) {
            let d = &items[index].delivery;
            let update = match &items[index].outcome {
                Outcome::Sent { .. } => unreachable!("sent copies are recorded above"),
                Outcome::Retry { run_after, error, refund, uncertain, .. } => sqlx::query(
                    "UPDATE deliveries SET status = 'retrying', run_after = $3, last_error = $4, \
                         attempts = attempts - $5, uncertain = $6, lease_owner = NULL, lease_until = NULL, updated_at = $7 \
                     WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight' AND attempts = $8")
                    .bind(d.id).bind(owner).bind(*run_after).bind(error)
                    .bind(if *refund { 1i32 } else { 0i32 }).bind(*uncertain).bind(now).bind(d.attempts)
                    .execute(&mut *tx).await?,
                Outcome::Failed { error, .. } => sqlx::query(
                    "UPDATE deliveries SET status = 'failed', last_error = $3, lease_owner = NULL, \
                         lease_until = NULL, updated_at = $4 \
                     WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight' AND attempts = $5")
                    .bind(d.id).bind(owner).bind(error).bind(now).bind(d.attempts)
                    .execute(&mut *tx).await?,
                Outcome::Cancelled { reason } => sqlx::query(
                    "UPDATE deliveries SET status = 'cancelled', last_error = $3, lease_owner = NULL, \
                         lease_until = NULL, updated_at = $4 \
                     WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight' AND attempts = $5")
                    .bind(d.id).bind(owner).bind(reason).bind(now).bind(d.attempts)
                    .execute(&mut *tx).await?,
            };
            results[index] = update.rows_affected() == 1;
        }
        // Every fenced attempt into the delivery log, in one statement per chunk.
        let logged: Vec<usize> = order.iter().copied().filter(|&i| results[i]).collect();
        for chunk in logged.chunks(FINISH_ROWS) {
            let mut p = Params::new(db);
            let values = p.rows(chunk.len(), 12);
            let sql = format!(
                "INSERT INTO delivery_attempts (delivery_id, announcement_id, channel, attempt, outcome, \
                     status_code, error, note, remote_id, worker, started_at, finished_at) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for &i in chunk {
                let item = &items[i];
                let d = &item.delivery;
                let (outcome, error, note, status_code, remote_id) = item.outcome.log_fields();
                q = q
                    .bind(d.id).bind(&d.announcement_id).bind(&d.channel).bind(d.attempts)
                    .bind(outcome).bind(status_code).bind(error).bind(note).bind(remote_id)
                    .bind(owner).bind(item.started_at).bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        RECORD_TURN.observe(items.len(), started.elapsed());
        results
    });
    roll_up(db, items, &results).await;
    Ok(results)
}

/// The common case on PostgreSQL, a batch of copies that were all sent, in one statement:
/// the fenced update of the deliveries and the attempts of exactly the rows it updated
/// (one round trip and one implicit transaction instead of four round trips).
///
/// The fence is the owner and the attempt number: a row with an owner is in flight (see the
/// invariants above). Leaving `status = 'in_flight'` out is deliberate: with it the planner
/// may scan the partial index `deliveries_leased` and join in memory, and that index holds
/// an entry for every row that was ever in flight until the table is vacuumed, so each
/// batch would walk all of them (seen at 8 ms a batch after 20,000 copies with autovacuum
/// off). Without it the rows are found by primary key.
async fn finish_sent_postgres(
    db: &Db,
    owner: &str,
    items: &[Finished],
    now: i64,
) -> Result<Vec<bool>> {
    // The batch goes as one array per column: one statement text whatever the batch's size,
    // parsed and planned once per connection (a VALUES list of each size was a statement of
    // its own, parsed and planned again and again).
    const SQL: &str = "WITH v AS (SELECT * FROM UNNEST($3::BIGINT[], $4::INTEGER[], $5::TEXT[], \
             $6::TEXT[], $7::TEXT[], $8::BIGINT[]) AS v (id, attempts, remote_id, outcome, note, started_at)), \
         sent AS (UPDATE deliveries d SET status = 'sent', remote_id = v.remote_id, sent_at = $1, \
                 updated_at = $1, last_error = NULL, uncertain = FALSE, lease_owner = NULL, lease_until = NULL \
             FROM v WHERE d.id = v.id AND d.attempts = v.attempts AND d.lease_owner = $2 \
             RETURNING d.id, d.announcement_id, d.channel, d.attempts, v.outcome, v.note, v.remote_id, v.started_at) \
         INSERT INTO delivery_attempts (delivery_id, announcement_id, channel, attempt, outcome, \
             status_code, error, note, remote_id, worker, started_at, finished_at) \
         SELECT id, announcement_id, channel, attempts, outcome, NULL, NULL, note, remote_id, $2, started_at, $1 \
         FROM sent ORDER BY id \
         RETURNING delivery_id";
    let n = items.len();
    let (mut ids, mut attempts, mut remote_ids, mut outcomes, mut notes, mut started) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for item in items {
        let (outcome, _, note, _, remote_id) = item.outcome.log_fields();
        ids.push(item.delivery.id);
        attempts.push(item.delivery.attempts);
        remote_ids.push(remote_id);
        outcomes.push(outcome);
        notes.push(note);
        started.push(item.started_at);
    }
    let crate::store::Pool::Postgres(pool) = &db.pool else {
        unreachable!("finish_sent_postgres is called on PostgreSQL only");
    };
    let out: Result<Vec<i64>> = async {
        Ok(sqlx::query_scalar::<_, i64>(SQL)
            .bind(now)
            .bind(owner)
            .bind(&ids)
            .bind(&attempts)
            .bind(&remote_ids)
            .bind(&outcomes)
            .bind(&notes)
            .bind(&started)
            .fetch_all(pool)
            .await?)
    }
    .await;
    crate::store::health::observe(&out);
    let fenced: std::collections::HashSet<i64> = out?.into_iter().collect();
    Ok(items
        .iter()
        .map(|i| fenced.contains(&i.delivery.id))
        .collect())
}

/// Rolls up each announcement of a recorded batch that may have finished, once per batch.
async fn roll_up(db: &Db, items: &[Finished], results: &[bool]) {
    let mut done: Vec<&str> = items
        .iter()
        .zip(results)
        .filter(|(i, ok)| **ok && !matches!(i.outcome, Outcome::Retry { .. }))
        .map(|(i, _)| i.delivery.announcement_id.as_str())
        .collect();
    done.sort_unstable();
    done.dedup();
    for id in done {
        // The outcomes are committed; a failed roll-up is repaired by the sweep.
        if let Err(e) = refresh_announcement_status(db, id).await {
            tracing::warn!(announcement = %id, error = %e, "Could not roll up the announcement's status");
        }
    }
}

/// Puts a claimed delivery back untouched (its channel was paused meanwhile, or the
/// daemon is shutting down): no attempt is recorded or counted.
pub async fn release(db: &Db, d: &Claimed, owner: &str, run_after: i64) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = CASE WHEN attempts <= 1 THEN 'pending' ELSE 'retrying' END, \
             attempts = attempts - 1, run_after = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight' AND attempts = $5")
        .bind(d.id).bind(owner).bind(run_after).bind(now_ms()).bind(d.attempts).execute(p).await?.rows_affected());
    Ok(())
}

/// Multiplies an email unit by the next batch of active subscribers (after the cursor),
/// in one transaction with the cursor move. Returns how many deliveries were inserted and
/// whether the list is done (the row is then `sent`; until then it stays in flight, leased
/// to its worker), or None when the lease was lost or the announcement was cancelled
/// meanwhile.
///
/// The expand row is read `FOR UPDATE` on PostgreSQL (SQLite's `BEGIN IMMEDIATE` already
/// serialises writers), so a concurrent cancel either sees the copies this batch inserts or
/// makes this batch insert none; copies that slip between the two are never claimed
/// (claims skip cancelled announcements) and [`sweep`] marks them.
pub async fn expand_batch(
    db: &Db,
    d: &Claimed,
    owner: &str,
    batch: i64,
) -> Result<Option<(u64, bool)>> {
    let now = now_ms();
    let lock = if db.is_postgres() {
        " FOR UPDATE OF d"
    } else {
        ""
    };
    let fence = format!(
        "SELECT d.expand_cursor, a.status FROM deliveries d JOIN announcements a ON a.id = d.announcement_id \
         WHERE d.id = $1 AND d.lease_owner = $2 AND d.status = 'in_flight' AND d.attempts = $3{lock}"
    );
    let done = write_tx!(db, tx => {
        let row = sqlx::query(&fence)
            .bind(d.id).bind(owner).bind(d.attempts).fetch_optional(&mut *tx).await?;
        let state: Option<(i64, String)> = match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        };
        match state {
            None => None,
            Some((_, status)) if status == "cancelled" => {
                sqlx::query("UPDATE deliveries SET status = 'cancelled', lease_owner = NULL, lease_until = NULL, \
                     updated_at = $2 WHERE id = $1")
                    .bind(d.id).bind(now).execute(&mut *tx).await?;
                None
            }
            Some((cursor, _)) => {
                let started = std::time::Instant::now();
                let (last, n, inserted) = if db.is_postgres() {
                    // The batch read once: its bounds and its copies in one statement.
                    let row = sqlx::query(&format!(
                        "WITH batch AS ({}), \
                         ins AS (INSERT INTO deliveries (announcement_id, channel, kind, unit_index, \
                                 subscriber_id, lane, status, attempts, run_after, idempotency_key, \
                                 created_at, updated_at) \
                             SELECT $1, $2, 'send', $3, b.id, $4, 'pending', 0, $5, \
                                 $1 || ':' || $2 || ':' || CAST($3 AS TEXT) || ':' || CAST(b.id AS TEXT), $5, $5 \
                             FROM batch b ON CONFLICT DO NOTHING RETURNING 1) \
                         SELECT (SELECT MAX(id) FROM batch) AS last, (SELECT COUNT(*) FROM batch) AS n, \
                             (SELECT COUNT(*) FROM ins) AS inserted",
                        expand_batch_read("$6", "$7")))
                        .bind(&d.announcement_id).bind(&d.channel).bind(d.unit_index).bind(d.lane)
                        .bind(now).bind(cursor).bind(batch)
                        .fetch_one(&mut *tx).await?;
                    let last: Option<i64> = row.try_get("last")?;
                    let n: i64 = row.try_get("n")?;
                    let inserted: i64 = row.try_get("inserted")?;
                    (last, n, inserted as u64)
                } else {
                    // One statement gives the batch's end and size, so a subscriber leaving
                    // between two reads cannot make a full batch look like the last one.
                    let batch_row = sqlx::query(&format!(
                        "SELECT MAX(id) AS last, COUNT(*) AS n FROM ({}) AS batch",
                        expand_batch_read("$1", "$2")))
                        .bind(cursor).bind(batch).fetch_one(&mut *tx).await?;
                    let last: Option<i64> = batch_row.try_get("last")?;
                    let n: i64 = batch_row.try_get("n")?;
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
                    (last, n, inserted)
                };
                let finished = n < batch;
                let new_cursor = last.unwrap_or(cursor);
                // The row is still ours (and locked on PostgreSQL) since the fenced read.
                // Unfinished, it stays in flight with its worker, which goes on with the next
                // batch (see `Dispatcher::expand`); finished, it is sent and unleased.
                if finished {
                    sqlx::query(
                        "UPDATE deliveries SET status = 'sent', expand_cursor = $2, sent_at = $3, \
                             lease_owner = NULL, lease_until = NULL, updated_at = $3 \
                         WHERE id = $1 AND status = 'in_flight'")
                        .bind(d.id).bind(new_cursor).bind(now).execute(&mut *tx).await?;
                } else {
                    sqlx::query("UPDATE deliveries SET expand_cursor = $2, updated_at = $3 WHERE id = $1")
                        .bind(d.id).bind(new_cursor).bind(now).execute(&mut *tx).await?;
                }
                EXPAND_TURN.observe(n as usize, started.elapsed());
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
            Ok(Some((inserted, finished)))
        }
    }
}

/// The next batch of subscribers an expansion multiplies a unit by: the active ones after
/// the cursor, in id order, at most `limit`. Read through `subscribers_active` in order, it
/// costs the batch; planned as a scan of every active subscriber after the cursor and a
/// sort (what PostgreSQL picks for a table it has no statistics of), a batch costs the
/// rest of the list. Public for the test that checks the plan after an import.
pub fn expand_batch_read(cursor: &str, limit: &str) -> String {
    format!("SELECT id FROM subscribers WHERE status = 'active' AND id > {cursor} ORDER BY id LIMIT {limit}")
}

/// Renews the leases of the deliveries this process's tasks are working on right now
/// (`ids`), so a long attempt is not mistaken for a crash. A row whose task is gone is not
/// renewed: its lease runs out and it is reclaimed.
pub async fn extend_leases(db: &Db, owner: &str, ids: &[i64], lease_ms: i64) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // On PostgreSQL, rows the recorder is finishing right now are locked: skip them rather
    // than wait (two transactions locking the same rows in different orders deadlock), and
    // they need no renewal anyway. An owner means in flight; the rows are found by key (see
    // `finish_sent_postgres` on why `status` is left out).
    let skip = if db.is_postgres() {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE deliveries SET lease_until = $2 WHERE id IN (SELECT id FROM deliveries \
         WHERE lease_owner = $1 AND id IN ({list}){skip})"
    );
    let now = now_ms();
    Ok(
        // A text of its own each time (the ids are in it): not kept among the prepared
        // statements, where it would push out the batch statements.
        write_pool!(db, p => sqlx::query(&sql).persistent(false).bind(owner).bind(now + lease_ms).execute(p).await?.rows_affected()),
    )
}

/// Which leases [`reclaim`] takes back.
pub enum Reclaim<'a> {
    /// Leases that expired: their worker crashed or hung. Never this process's own leases
    /// whose tasks are alive (`live`): those are waiting for storage to record an outcome,
    /// and taking them would send again what may already be on the platform.
    Expired { owner: &'a str, live: &'a [i64] },
    /// Every lease: at start on SQLite, where one process owns the file (a lock file makes
    /// sure), anything in flight belongs to a run that died.
    All,
    /// This process's own leases, at shutdown, so other instances need not wait for expiry.
    OwnedBy(&'a str),
}

/// Returns leased deliveries to the queue, due now. A `send` that was in flight may have
/// reached the platform: it is marked uncertain, so its next attempt reconciles first where
/// the platform allows.
pub async fn reclaim(db: &Db, which: Reclaim<'_>) -> Result<u64> {
    let now = now_ms();
    // A list of ids makes the text new each time: then it is not kept prepared.
    let persistent = !matches!(which, Reclaim::Expired { live, .. } if !live.is_empty());
    let (filter, owner) = match which {
        Reclaim::Expired { owner, live } if !live.is_empty() => {
            let list = live
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",");
            (
                format!("lease_until < $1 AND NOT (lease_owner = $2 AND id IN ({list}))"),
                Some(owner),
            )
        }
        Reclaim::Expired { .. } => ("lease_until < $1".to_string(), None),
        Reclaim::All => ("TRUE".to_string(), None),
        Reclaim::OwnedBy(o) => ("lease_owner = $2".to_string(), Some(o)),
    };
    let sql = format!(
        "UPDATE deliveries SET status = 'retrying', run_after = $1, \
             uncertain = CASE WHEN kind = 'send' THEN TRUE ELSE uncertain END, \
             lease_owner = NULL, lease_until = NULL, updated_at = $1 \
         WHERE status = 'in_flight' AND {filter}"
    );
    Ok(write_pool!(db, p => {
        let q = sqlx::query(&sql).persistent(persistent).bind(now);
        let q = match owner { Some(o) => q.bind(o), None => q };
        q.execute(p).await?.rows_affected()
    }))
}

/// Repairs what a crash between two transactions can leave behind: an announcement with
/// nothing left to do whose status was not rolled up, and copies of a cancelled
/// announcement that an expansion inserted while the cancel ran.
pub async fn sweep(db: &Db) -> Result<()> {
    let now = now_ms();
    write_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET status = 'cancelled', last_error = 'cancelled by staff', updated_at = $1 \
         WHERE status IN ('pending', 'retrying') AND announcement_id IN \
             (SELECT id FROM announcements WHERE status = 'cancelled')")
        .bind(now).execute(p).await?.rows_affected());
    let stale: Vec<String> = with_pool!(db, p => sqlx::query_scalar(
        "SELECT a.id FROM announcements a WHERE a.status IN ('queued', 'sending') \
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.announcement_id = a.id \
             AND d.status IN ('pending', 'in_flight', 'retrying')) LIMIT 100")
        .fetch_all(p).await?);
    for id in stale {
        refresh_announcement_status(db, &id).await?;
    }
    Ok(())
}

/// Deletes up to `batch` delivery attempts that finished before `cutoff` (ms): the log's
/// retention. Announcements, deliveries (each channel's outcome) and reach stay.
pub async fn prune_attempts(db: &Db, cutoff: i64, batch: i64) -> Result<u64> {
    Ok(write_pool!(db, p => sqlx::query(
        "DELETE FROM delivery_attempts WHERE id IN \
             (SELECT id FROM delivery_attempts WHERE finished_at < $1 ORDER BY id LIMIT $2)")
        .bind(cutoff).bind(batch).execute(p).await?.rows_affected()))
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
    let mut tally = crate::status::Tally::default();
    for (status, n) in &rows {
        let status: crate::status::DeliveryStatus = status.parse().map_err(StoreError::Other)?;
        tally.add(status, *n);
    }
    let Some(new_status) = crate::status::roll_up(tally) else {
        return Ok(());
    };
    let new_status = new_status.as_str();
    write_pool!(db, p => sqlx::query(
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

/// Whether an earlier attempt of this delivery may have been accepted by the platform: an
/// attempt that timed out or got a server error (LINE never processes a 4xx or 429), or an
/// attempt lost with its process (the delivery is then marked uncertain).
pub async fn may_have_landed(db: &Db, d: &Claimed) -> Result<bool> {
    if d.uncertain {
        return Ok(true);
    }
    let n: i64 = with_pool!(db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM delivery_attempts WHERE delivery_id = $1 \
         AND (outcome = 'uncertain' OR (outcome = 'transient' AND (status_code IS NULL OR status_code >= 500)))")
        .bind(d.id).fetch_one(p).await?);
    Ok(n > 0)
}

/// Gives the delivery a new idempotency key, whose age counts from now. Fenced on the claim.
pub async fn renew_key(db: &Db, d: &Claimed, owner: &str, key: &str) -> Result<bool> {
    let now = now_ms();
    let n = write_pool!(db, p => sqlx::query(
        "UPDATE deliveries SET idempotency_key = $3, first_attempt_at = $4, updated_at = $4 \
         WHERE id = $1 AND lease_owner = $2 AND status = 'in_flight' AND attempts = $5")
        .bind(d.id).bind(owner).bind(key).bind(now).bind(d.attempts)
        .execute(p).await?.rows_affected());
    Ok(n == 1)
}
