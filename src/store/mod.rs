//! The database: SQLite (embedded default) or PostgreSQL, the same SQL on both except
//! where noted, and every statement Noroshi runs.
//!
//! Times are stored as milliseconds since the epoch. Statements use `$N` parameters, which
//! both dialects accept. The few statements that differ (the claim's row locking, how a
//! write transaction starts) are chosen by [`Db::is_postgres`].

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Runs `$body` with `$p` bound to whichever pool this is. The body is compiled once per
/// dialect, so one statement text serves both.
macro_rules! with_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match &$db.pool {
            crate::store::Pool::Sqlite($p) => $body,
            crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Like [`with_pool!`], for a statement that writes. On SQLite it first takes the
/// process's write turn (see [`Db::writer`]).
macro_rules! write_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match &$db.pool {
            crate::store::Pool::Sqlite($p) => {
                let _turn = $db.writer.turn().await;
                $body
            }
            crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use write_pool;

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: Pool,
    /// SQLite: the one write turn of this process. SQLite lets one writer in at a time and
    /// makes the others sleep and poll (1, 2, 5 … 100 ms) until the lock frees, which puts
    /// random tens of milliseconds in front of a disaster acceptance under load. Writers
    /// queue here instead, in order, and are let in the moment the previous one is done.
    /// (The lock file makes this process the only writer.) Disaster work takes the next
    /// turn, ahead of every normal writer waiting ([`WriteTurns`]).
    pub writer: std::sync::Arc<WriteTurns>,
    /// SQLite only: an exclusive lock on `FILE.lock`, held for the process's life. Queue
    /// recovery at start assumes one process per SQLite file; the lock makes that true.
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sql(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// The database could not take the statement at all (busy, locked, unreachable, out of
    /// connections): nothing was written, and the same request can be tried again later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sql(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            StoreError::Sql(sqlx::Error::Database(e)) => {
                let code = e.code().unwrap_or_default();
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
                // PostgreSQL: connection exceptions (08…), lock not available (55P03),
                // shutting down (57P0…).
                matches!(code.as_ref(), "5" | "6" | "261" | "517" | "262" | "55P03")
                    || code.starts_with("08")
                    || code.starts_with("57P0")
            }
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Migrations compiled into the binary, so an installed daemon needs no source tree.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> BoxFuture<'s, std::result::Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../../migrations/sqlite/0001_core.sql"),
    ),
    (
        2,
        "hardening",
        include_str!("../../migrations/sqlite/0002_hardening.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../../migrations/postgres/0001_core.sql"),
    ),
    (
        2,
        "hardening",
        include_str!("../../migrations/postgres/0002_hardening.sql"),
    ),
];

impl Db {
    /// Opens the database named by `url`, creating a SQLite file (and its directory) when
    /// missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            return Ok(Db {
                pool: Pool::Postgres(pool),
                writer: Default::default(),
                _lock: None,
            });
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets the API read while workers write.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL, not NORMAL: in WAL mode NORMAL syncs only at checkpoints, so the last
            // commits before a power loss can vanish. With FULL every commit fsyncs the WAL
            // before it returns, so a `202` (sent after the commit) means the announcement
            // and its deliveries are on disk.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Writers queue behind each other for up to this long instead of failing.
            .busy_timeout(Duration::from_secs(10));
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Other(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        let lock = lock_sqlite_file(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Db {
            pool: Pool::Sqlite(pool),
            writer: Default::default(),
            _lock: lock,
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub fn dialect(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => {
                Migrator::new(Embedded(SQLITE_MIGRATIONS))
                    .await?
                    .run(p)
                    .await?
            }
            Pool::Postgres(p) => {
                Migrator::new(Embedded(POSTGRES_MIGRATIONS))
                    .await?
                    .run(p)
                    .await?
            }
        }
        Ok(())
    }

    /// Readiness: the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<()> {
        let expected = if self.is_postgres() {
            POSTGRES_MIGRATIONS.len()
        } else {
            SQLITE_MIGRATIONS.len()
        } as i64;
        let applied: i64 = with_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE").fetch_one(p).await?);
        if applied < expected {
            return Err(StoreError::Other(format!(
                "{applied} of {expected} migrations applied"
            )));
        }
        Ok(())
    }

    /// PostgreSQL: measures the database server's clock against this host's and makes the
    /// daemon's clock follow it (see [`crate::clock`]). Says so when the two disagree by
    /// more than a second. SQLite: nothing to do.
    pub async fn sync_clock(&self) -> Result<()> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(());
        };
        let before = crate::clock::host_ms();
        let db_ms: i64 = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        )
        .fetch_one(p)
        .await?;
        let after = crate::clock::host_ms();
        let offset = db_ms - (before + after) / 2;
        let previous = crate::clock::db_offset_ms();
        if offset.abs() > 1000 && (offset - previous).abs() > 500 {
            tracing::warn!(
                offset_ms = offset,
                "This host's clock differs from the database server's; the daemon follows the database's"
            );
        }
        crate::clock::set_db_offset(offset);
        Ok(())
    }

    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

/// Takes `FILE.lock` exclusively (released by the OS when the process dies, even on
/// SIGKILL). In-memory databases need none.
fn lock_sqlite_file(db: &std::path::Path) -> Result<Option<std::sync::Arc<std::fs::File>>> {
    if db.as_os_str().is_empty() || db.to_string_lossy().contains(":memory:") {
        return Ok(None);
    }
    // The same file reached through a symlink or another relative path takes the same lock.
    let db = match (db.parent(), db.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| db.to_path_buf())
        }
        _ => db.to_path_buf(),
    };
    let db = std::fs::canonicalize(&db).unwrap_or(db);
    let db = db.as_path();
    let path = std::path::PathBuf::from(format!("{}.lock", db.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Other(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(std::sync::Arc::new(file))),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Other(format!(
            "another Noroshi process is using {} (SQLite serves one process; use PostgreSQL for several instances)",
            db.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Other(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

tokio::task_local! {
    /// Set for work on a live disaster alert: its writes take the next turn.
    static URGENT: bool;
}

/// Runs `f` with its database writes ahead of every normal writer waiting (SQLite's one
/// write turn). For the disaster lane: accepting an alert, claiming it, recording it.
pub async fn urgent<F: std::future::Future>(f: F) -> F::Output {
    URGENT.scope(true, f).await
}

fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

/// The process's SQLite write turns, in order of arrival, except that urgent writers
/// (disaster work, see [`urgent`]) go before every normal writer still waiting.
#[derive(Debug, Default)]
pub struct WriteTurns {
    lock: tokio::sync::Mutex<()>,
    urgent_waiting: std::sync::atomic::AtomicUsize,
    urgent_done: tokio::sync::Notify,
}

impl WriteTurns {
    /// Waits for this task's turn to write.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        use std::sync::atomic::Ordering::SeqCst;
        if is_urgent() {
            self.urgent_waiting.fetch_add(1, SeqCst);
            let guard = self.lock.lock().await;
            self.urgent_waiting.fetch_sub(1, SeqCst);
            self.urgent_done.notify_waiters();
            return guard;
        }
        loop {
            while self.urgent_waiting.load(SeqCst) > 0 {
                let done = self.urgent_done.notified();
                tokio::pin!(done);
                // Registered before the check, so a notification in between is not missed.
                done.as_mut().enable();
                if self.urgent_waiting.load(SeqCst) == 0 {
                    break;
                }
                done.await;
            }
            let guard = self.lock.lock().await;
            if self.urgent_waiting.load(SeqCst) == 0 {
                return guard;
            }
            // An urgent writer arrived while this one queued: let it go first.
            drop(guard);
        }
    }
}

/// How long one write turn should take at most: a live alert waits for at most one turn.
pub const TURN_TARGET: Duration = Duration::from_millis(10);

/// How many rows (or outcomes) one write turn of a large job carries, adapted so a turn
/// takes about [`TURN_TARGET`] on this machine: halved after a slow turn, grown after fast
/// ones, between 1 and `max`. (On PostgreSQL there is no process-wide turn; callers use
/// `max`.)
#[derive(Debug)]
pub struct TurnSize {
    size: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl TurnSize {
    pub const fn new(max: usize) -> TurnSize {
        TurnSize {
            size: std::sync::atomic::AtomicUsize::new(max),
            max,
        }
    }

    /// Rows for the next turn, at most `cap`.
    pub fn get(&self, db: &Db, cap: usize) -> usize {
        if db.is_postgres() {
            return cap.max(1);
        }
        self.size
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(cap)
            .max(1)
    }

    /// Learns from a turn that wrote `rows` in `took`.
    pub fn observe(&self, rows: usize, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let size = self.size.load(Relaxed);
        if took > TURN_TARGET && rows > 1 {
            self.size.store((rows / 2).max(1), Relaxed);
        } else if took < TURN_TARGET / 2 && rows >= size {
            self.size
                .store((size + size / 2 + 1).min(self.max), Relaxed);
        }
    }
}

/// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`: taking the write lock up
/// front means a transaction that reads before it writes cannot fail with `SQLITE_BUSY`
/// when another writer committed in between.
macro_rules! begin_write {
    ($p:expr, sqlite) => {
        $p.begin_with("BEGIN IMMEDIATE").await?
    };
    ($p:expr, postgres) => {
        $p.begin().await?
    };
}
pub(crate) use begin_write;

/// Runs `$body` inside a write transaction `$tx` on either dialect, committing on success.
macro_rules! write_tx {
    ($db:expr, $tx:ident => $body:expr) => {
        match &$db.pool {
            crate::store::Pool::Sqlite(p) => {
                let _turn = $db.writer.turn().await;
                let mut $tx = crate::store::begin_write!(p, sqlite);
                let out = $body;
                $tx.commit().await?;
                out
            }
            crate::store::Pool::Postgres(p) => {
                let mut $tx = crate::store::begin_write!(p, postgres);
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}
pub(crate) use write_tx;

/// The daemon's time (ms): see [`crate::clock`].
pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

pub mod announcements;
pub mod channels;
pub mod subscribers;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn turn_sizes_shrink_after_slow_turns_and_grow_after_fast_ones() {
        let t = TurnSize::new(128);
        t.observe(128, Duration::from_millis(30));
        assert_eq!(t.size.load(std::sync::atomic::Ordering::Relaxed), 64);
        t.observe(64, Duration::from_millis(25));
        assert_eq!(t.size.load(std::sync::atomic::Ordering::Relaxed), 32);
        t.observe(10, Duration::from_millis(1)); // a small turn says nothing about size
        assert_eq!(t.size.load(std::sync::atomic::Ordering::Relaxed), 32);
        t.observe(32, Duration::from_millis(2));
        assert_eq!(t.size.load(std::sync::atomic::Ordering::Relaxed), 49);
        for _ in 0..20 {
            let n = t.size.load(std::sync::atomic::Ordering::Relaxed);
            t.observe(n, Duration::from_millis(1));
        }
        assert_eq!(
            t.size.load(std::sync::atomic::Ordering::Relaxed),
            128,
            "capped"
        );
    }

    #[tokio::test]
    async fn urgent_writers_go_before_normal_writers_waiting() {
        let turns = Arc::new(WriteTurns::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = turns.turn().await;
        let mut tasks = Vec::new();
        for name in ["normal-1", "normal-2", "normal-3"] {
            let (t, o) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = t.turn().await;
                o.lock().unwrap().push(name);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (t, o) = (turns.clone(), order.clone());
        tasks.push(tokio::spawn(urgent(async move {
            let _turn = t.turn().await;
            o.lock().unwrap().push("disaster");
        })));
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order[0], "disaster", "{order:?}");
        assert_eq!(
            &order[1..],
            ["normal-1", "normal-2", "normal-3"],
            "then in order"
        );
    }
}
