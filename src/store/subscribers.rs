//! Email subscribers: create, list, delete, bulk import, unsubscribe by token.

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Db, Result, StoreError};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub lang: String,
    pub topics: Vec<String>,
    /// active | unsubscribed
    pub status: String,
    pub created_at: String,
}

#[derive(Clone, Debug)]
pub struct NewSubscriber {
    pub email: String,
    pub lang: String,
    pub topics: Vec<String>,
}

/// A fresh unguessable unsubscribe token (256 random bits, hex).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

macro_rules! subscriber_from {
    ($r:expr) => {{
        let r = $r;
        let topics: String = r.try_get("topics")?;
        Ok::<_, StoreError>(Subscriber {
            id: r.try_get("id")?,
            email: r.try_get("email")?,
            lang: r.try_get("lang")?,
            topics: serde_json::from_str(&topics).unwrap_or_default(),
            status: r.try_get("status")?,
            created_at: crate::time::rfc3339_jst(r.try_get("created_at")?),
        })
    }};
}

/// Inserts one subscriber; an existing address is a unique violation.
pub async fn create(db: &Db, s: &NewSubscriber) -> Result<Subscriber> {
    let now = now_ms();
    let topics = serde_json::to_string(&s.topics).unwrap_or_else(|_| "[]".into());
    let id: i64 = write_pool!(db, p => sqlx::query_scalar(
        "INSERT INTO subscribers (email, lang, topics, token, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'active', $5, $5) RETURNING id")
        .bind(&s.email).bind(&s.lang).bind(&topics).bind(new_token()).bind(now)
        .fetch_one(p).await?);
    get(db, id)
        .await?
        .ok_or_else(|| StoreError::Other("subscriber vanished".into()))
}

pub async fn get(db: &Db, id: i64) -> Result<Option<Subscriber>> {
    with_pool!(db, p => {
        let row = sqlx::query(
            "SELECT id, email, lang, topics, status, created_at FROM subscribers WHERE id = $1")
            .bind(id).fetch_optional(p).await?;
        row.as_ref().map(|r| subscriber_from!(r)).transpose()
    })
}

/// Keyset-paged by id, optionally by status.
pub async fn list(
    db: &Db,
    status: Option<&str>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Subscriber>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT id, email, lang, topics, status, created_at FROM subscribers \
             WHERE id > $1 AND status <> 'importing' AND ($2 IS NULL OR status = $2) ORDER BY id LIMIT $3")
            .bind(after_id).bind(status).bind(limit).fetch_all(p).await?;
        rows.iter().map(|r| subscriber_from!(r)).collect()
    })
}

/// Deletes the subscriber's record for good (their address is personal data). Copies
/// already queued for them are skipped at send time.
pub async fn delete(db: &Db, id: i64) -> Result<bool> {
    Ok(
        write_pool!(db, p => sqlx::query("DELETE FROM subscribers WHERE id = $1")
        .bind(id).execute(p).await?.rows_affected())
            == 1,
    )
}

/// Rows written per write turn at most (fewer when a turn would be long): short turns, so
/// a disaster alert's writes never wait behind a large import.
const IMPORT_TURN_ROWS: usize = 200;

/// Imports all rows, all or nothing: either every new address becomes active or none.
/// Addresses already present are left as they are and counted. The rows are written in
/// short turns as invisible `importing` rows, then made active turn by turn under a
/// `committing` mark that [`recover_imports`] completes after a crash; a failure before
/// that removes them.
pub async fn import(db: &Db, rows: &[NewSubscriber]) -> Result<(u64, u64)> {
    let import_id = uuid::Uuid::new_v4().to_string();
    write_pool!(db, p => sqlx::query(
        "INSERT INTO subscriber_imports (id, state, created_at) VALUES ($1, 'staging', $2)")
        .bind(&import_id).bind(now_ms()).execute(p).await?.rows_affected());
    let staged = stage(db, &import_id, rows).await;
    let (created, existing) = match staged {
        Ok(counts) => counts,
        Err(e) => {
            if let Err(cleanup) = discard_import(db, &import_id).await {
                tracing::warn!(error = %cleanup, "Could not remove a failed import; the next start does");
            }
            return Err(e);
        }
    };
    write_pool!(db, p => sqlx::query(
        "UPDATE subscriber_imports SET state = 'committing' WHERE id = $1")
        .bind(&import_id).execute(p).await?.rows_affected());
    activate_import(db, &import_id).await?;
    Ok((created, existing))
}

async fn stage(db: &Db, import_id: &str, rows: &[NewSubscriber]) -> Result<(u64, u64)> {
    let (mut created, mut existing) = (0u64, 0u64);
    static TURN: super::TurnSize = super::TurnSize::new(IMPORT_TURN_ROWS);
    let mut rest = rows;
    while !rest.is_empty() {
        let (chunk, later) = rest.split_at(TURN.get(db, IMPORT_TURN_ROWS).min(rest.len()));
        rest = later;
        let now = now_ms();
        write_tx!(db, tx => {
            // Timed from inside the turn: waiting for it says nothing about its size.
            let started = std::time::Instant::now();
            // One statement for the turn: an address already present (in any case) is
            // skipped by the conflict clause, so what was not inserted already existed.
            let mut p = super::Params::new(db);
            let values = chunk
                .iter()
                .map(|_| {
                    let [email, lang, topics, token, import, created, updated] =
                        std::array::from_fn(|_| p.next());
                    format!("({email}, {lang}, {topics}, {token}, 'importing', {import}, {created}, {updated})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO subscribers (email, lang, topics, token, status, import_id, created_at, updated_at) \
                 VALUES {values} ON CONFLICT DO NOTHING"
            );
            // A text per turn size: not kept among the prepared statements.
            let mut q = sqlx::query(&sql).persistent(false);
            for s in chunk {
                let topics = serde_json::to_string(&s.topics).unwrap_or_else(|_| "[]".into());
                q = q
                    .bind(&s.email)
                    .bind(&s.lang)
                    .bind(topics)
                    .bind(new_token())
                    .bind(import_id)
                    .bind(now)
                    .bind(now);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            created += n;
            existing += chunk.len() as u64 - n;
            TURN.observe(chunk.len(), started.elapsed());
        });
    }
    Ok((created, existing))
}

/// Makes a committing import's rows active, a turn at a time, then forgets the import.
async fn activate_import(db: &Db, import_id: &str) -> Result<()> {
    loop {
        let n = write_pool!(db, p => sqlx::query(
            "UPDATE subscribers SET status = 'active', import_id = NULL WHERE id IN \
                 (SELECT id FROM subscribers WHERE import_id = $1 AND status = 'importing' LIMIT $2)")
            .bind(import_id).bind(IMPORT_TURN_ROWS as i64 * 5).execute(p).await?.rows_affected());
        if n == 0 {
            break;
        }
    }
    write_pool!(db, p => sqlx::query("DELETE FROM subscriber_imports WHERE id = $1")
        .bind(import_id).execute(p).await?.rows_affected());
    if db.is_postgres() {
        // Fresh statistics for the planner, as after any bulk load: until the table is
        // analysed (autovacuum may take a minute, or never run), PostgreSQL guesses that few
        // subscribers are active and plans a fan-out's batch read as a scan of every active
        // subscriber after the cursor and a sort, for each batch it plans anew. ANALYZE
        // reads a sample (at most 30,000 rows), whatever the table's size.
        let analysed =
            write_pool!(db, p => sqlx::query("ANALYZE subscribers").execute(p).await.map(|_| ()));
        if let Err(e) = analysed {
            tracing::warn!(error = %e, "Could not analyse the subscribers after an import");
        }
    }
    Ok(())
}

/// Removes a staging import's rows, a turn at a time, then the import.
async fn discard_import(db: &Db, import_id: &str) -> Result<()> {
    loop {
        let n = write_pool!(db, p => sqlx::query(
            "DELETE FROM subscribers WHERE id IN \
                 (SELECT id FROM subscribers WHERE import_id = $1 AND status = 'importing' LIMIT $2)")
            .bind(import_id).bind(IMPORT_TURN_ROWS as i64 * 5).execute(p).await?.rows_affected());
        if n == 0 {
            break;
        }
    }
    write_pool!(db, p => sqlx::query("DELETE FROM subscriber_imports WHERE id = $1")
        .bind(import_id).execute(p).await?.rows_affected());
    Ok(())
}

/// Imports a crash cut short: committing ones are completed, staging ones older than
/// `older_than_ms` removed (0 on SQLite at start: one process owns the file).
pub async fn recover_imports(db: &Db, older_than_ms: i64) -> Result<()> {
    let cutoff = now_ms() - older_than_ms;
    let open: Vec<(String, String)> = with_pool!(db, p => {
        let rows = sqlx::query("SELECT id, state FROM subscriber_imports WHERE created_at <= $1")
            .bind(cutoff).fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("state")?))).collect::<Result<Vec<_>>>()?
    });
    for (id, state) in open {
        if state == "committing" {
            tracing::warn!(import = %id, "Completing a subscriber import a crash cut short");
            activate_import(db, &id).await?;
        } else {
            tracing::warn!(import = %id, "Removing a subscriber import a crash cut short");
            discard_import(db, &id).await?;
        }
    }
    Ok(())
}

/// The address a token belongs to, for the confirmation page (no state change).
pub async fn by_token(db: &Db, token: &str) -> Result<Option<(String, String)>> {
    with_pool!(db, p => {
        let row = sqlx::query("SELECT email, status FROM subscribers WHERE token = $1")
            .bind(token).fetch_optional(p).await?;
        row.map(|r| Ok((r.try_get("email")?, r.try_get("status")?))).transpose()
    })
}

/// One-click unsubscribe: idempotent; false when the token is unknown.
pub async fn unsubscribe(db: &Db, token: &str) -> Result<bool> {
    let now = now_ms();
    let n = write_pool!(db, p => sqlx::query(
        "UPDATE subscribers SET status = 'unsubscribed', updated_at = $2 WHERE token = $1")
        .bind(token).bind(now).execute(p).await?.rows_affected());
    Ok(n == 1)
}

pub async fn count_active(db: &Db) -> Result<i64> {
    Ok(with_pool!(db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM subscribers WHERE status = 'active'").fetch_one(p).await?))
}
