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
    ($db:expr, $p:ident => $body:expr) => {{
        let out: crate::store::Result<_> = async {
            Ok::<_, crate::store::StoreError>(match &$db.pool {
                crate::store::Pool::Sqlite(pool) => {
                    let _turn = $db.writer.turn().await;
                    let $p = $db.sqlite_write_pool(pool);
                    $body
                }
                crate::store::Pool::Postgres($p) => $body,
            })
        }
        .await;
        crate::store::health::observe(&out);
        out?
    }};
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
    /// SQLite: the one connection the write turn writes through. One connection keeps
    /// its prepared statements and its page cache: SQLite drops a connection's page cache
    /// whenever another connection wrote since its last transaction, so writes spread over
    /// the pool re-read their B-tree pages and re-prepared their batch statements on almost
    /// every turn. (`None` for an in-memory database, whose pool is its only copy.)
    sqlite_writer: Option<SqlitePool>,
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

    /// The database could not take the write: it is full, or it could not take the
    /// statement at all (busy, locked, unreachable, read-only, out of connections). Nothing
    /// was written, and the same request can be tried again later.
    pub fn is_unavailable(&self) -> bool {
        self.storage_fault().is_some()
    }

    /// Which storage fault this is, if any: the database is full, or it cannot take writes
    /// (unreachable, out of connections, I/O errors, read-only, busy or locked).
    pub fn storage_fault(&self) -> Option<health::Fault> {
        let e = match self {
            StoreError::Sql(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed,
            ) => return Some(health::Fault::Unavailable),
            StoreError::Sql(sqlx::Error::Database(e)) => e,
            _ => return None,
        };
        let code = e.code().unwrap_or_default();
        // SQLite's primary code is the low byte of its (extended) code.
        let sqlite = code.parse::<i64>().ok().map(|c| c & 0xff);
        // SQLite: SQLITE_FULL (13). PostgreSQL: disk full (53100), out of memory (53200).
        if sqlite == Some(13) || matches!(code.as_ref(), "53100" | "53200") {
            return Some(health::Fault::Full);
        }
        // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_READONLY (8), SQLITE_IOERR (10).
        // PostgreSQL: connection exceptions (08…), shutting down (57P0…), lock not available
        // (55P03), not accepting connections (55000), read-only transaction (25006), too
        // many connections (53300).
        let unavailable = matches!(sqlite, Some(5 | 6 | 8 | 10))
            || matches!(code.as_ref(), "55P03" | "55000" | "25006" | "53300")
            || code.starts_with("08")
            || code.starts_with("57P0");
        unavailable.then_some(health::Fault::Unavailable)
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
    (
        3,
        "desk",
        include_str!("../../migrations/sqlite/0003_desk.sql"),
    ),
    (
        4,
        "schedules",
        include_str!("../../migrations/sqlite/0004_schedules.sql"),
    ),
    (
        5,
        "reach",
        include_str!("../../migrations/sqlite/0005_reach.sql"),
    ),
    (
        6,
        "console",
        include_str!("../../migrations/sqlite/0006_console.sql"),
    ),
    (
        7,
        "approval",
        include_str!("../../migrations/sqlite/0007_approval.sql"),
    ),
    (
        8,
        "people",
        include_str!("../../migrations/sqlite/0008_people.sql"),
    ),
    (
        9,
        "queue_indexes",
        include_str!("../../migrations/sqlite/0009_queue_indexes.sql"),
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
    (
        3,
        "desk",
        include_str!("../../migrations/postgres/0003_desk.sql"),
    ),
    (
        4,
        "schedules",
        include_str!("../../migrations/postgres/0004_schedules.sql"),
    ),
    (
        5,
        "reach",
        include_str!("../../migrations/postgres/0005_reach.sql"),
    ),
    (
        6,
        "console",
        include_str!("../../migrations/postgres/0006_console.sql"),
    ),
    (
        7,
        "approval",
        include_str!("../../migrations/postgres/0007_approval.sql"),
    ),
    (
        8,
        "people",
        include_str!("../../migrations/postgres/0008_people.sql"),
    ),
    (
        9,
        "queue_indexes",
        include_str!("../../migrations/postgres/0009_queue_indexes.sql"),
    ),
];

impl Db {
    /// Opens the database named by `url`, creating a SQLite file (and its directory) when
    /// missing.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        sqlite_max_page_count: Option<u64>,
    ) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // sqlx's default statement cache: on PostgreSQL each kept statement also holds
            // memory in its server backend, and the larger SQLite cache showed no clear gain in
            // the backends' CPU when tried here.
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            return Ok(Db {
                pool: Pool::Postgres(pool),
                writer: Default::default(),
                sqlite_writer: None,
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
            .busy_timeout(Duration::from_secs(10))
            .statement_cache_capacity(STATEMENT_CACHE);
        let options = match sqlite_max_page_count {
            Some(pages) => options.pragma("max_page_count", pages.to_string()),
            None => options,
        };
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
            .connect_with(options.clone())
            .await?;
        let sqlite_writer = match lock {
            Some(_) => Some(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    // Kept for the process's life: its caches are the point.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await?,
            ),
            None => None,
        };
        Ok(Db {
            pool: Pool::Sqlite(pool),
            writer: Default::default(),
            sqlite_writer,
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

    /// After the database was full: writes (and rolls back) a 64 KiB row to learn whether
    /// there is room again; ends the "full" spell when there is.
    pub async fn probe_room(&self) -> Result<bool> {
        const BYTES: usize = 64 * 1024;
        // Written and rolled back like every transaction here: a connection whose ROLLBACK
        // fails is closed, never returned to the pool inside a transaction.
        macro_rules! probe {
            ($p:expr, $begin:literal, $insert:literal, $n:expr) => {{
                let mut conn = $p.acquire().await?;
                match sqlx::query($begin).execute(&mut *conn).await {
                    Err(e) => {
                        conn.close_on_drop();
                        Err(e)
                    }
                    Ok(_) => {
                        let r = sqlx::query($insert).bind($n).execute(&mut *conn).await;
                        if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                            conn.close_on_drop();
                        }
                        r.map(|_| ())
                    }
                }
            }};
        }
        let room = match &self.pool {
            Pool::Sqlite(pool) => {
                let _turn = self.writer.turn().await;
                let p = self.sqlite_write_pool(pool);
                probe!(
                    p,
                    "BEGIN IMMEDIATE",
                    "INSERT INTO storage_probe (filler) VALUES (zeroblob($1))",
                    BYTES as i64
                )
            }
            Pool::Postgres(p) => probe!(
                p,
                "BEGIN",
                "INSERT INTO storage_probe (filler) VALUES (convert_to(repeat('x', $1), 'UTF8'))",
                BYTES as i32
            ),
        };
        match room {
            Ok(_) => {
                health::recovered();
                Ok(true)
            }
            Err(e) => {
                let e = StoreError::from(e);
                if e.storage_fault().is_some() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The SQLite pool writes go through, in the write turn (see `sqlite_writer`).
    pub(crate) fn sqlite_write_pool<'a>(&'a self, pool: &'a SqlitePool) -> &'a SqlitePool {
        self.sqlite_writer.as_ref().unwrap_or(pool)
    }

    pub async fn close(&self) {
        if let Some(w) = &self.sqlite_writer {
            w.close().await;
        }
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

/// Live-alert work running in this process (inside [`urgent`]), and a signal when none is.
static URGENT_ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static URGENT_IDLE: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Runs `f` with its database writes ahead of every normal writer waiting (SQLite's one
/// write turn), and normal claims held back meanwhile (see [`behind_urgent`]). For the
/// disaster lane: accepting a live alert, claiming it, sending and recording it.
pub async fn urgent<F: std::future::Future>(f: F) -> F::Output {
    struct Active;
    impl Drop for Active {
        fn drop(&mut self) {
            if URGENT_ACTIVE.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                URGENT_IDLE.notify_waiters();
            }
        }
    }
    URGENT_ACTIVE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _active = Active;
    URGENT.scope(true, f).await
}

/// Waits until no live-alert work runs in this process, for at most `max`. Normal claims
/// call it first: an alert's statements then do not queue behind the backlog's on the
/// database server, whose CPU every statement shares (on PostgreSQL the write turns of
/// SQLite do not exist). `max` keeps the backlog moving, slowly, while an alert waits for
/// a platform that does not answer.
pub async fn behind_urgent(max: Duration) {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let idle = URGENT_IDLE.notified();
        tokio::pin!(idle);
        // Registered before the check, so a notification in between is not missed.
        idle.as_mut().enable();
        if URGENT_ACTIVE.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            return;
        }
    }
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
/// Prepared statements kept per SQLite connection. The queue's batch statements have one text per
/// batch size (up to 64 rows, several statements), so sqlx's default of 100 kept preparing
/// them again: `sqlite3_prepare_v3` was 4 % of the daemon's CPU during a fan-out.
const STATEMENT_CACHE: usize = 512;

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

/// Ends a transaction on `$conn` (a pooled connection) after its body: `COMMIT` when the
/// body succeeded, `ROLLBACK` when it failed. A connection whose `COMMIT` or `ROLLBACK`
/// failed is closed when it goes back to the pool, never reused inside a transaction (a
/// full disk must not leave the pool poisoned).
macro_rules! finish_tx {
    ($conn:ident, $body:expr) => {
        match $body {
            Ok(v) => match sqlx::query("COMMIT").execute(&mut *$conn).await {
                Ok(_) => Ok(v),
                Err(e) => {
                    if sqlx::query("ROLLBACK").execute(&mut *$conn).await.is_err() {
                        $conn.close_on_drop();
                    }
                    Err(crate::store::StoreError::from(e))
                }
            },
            Err(e) => {
                if sqlx::query("ROLLBACK").execute(&mut *$conn).await.is_err() {
                    $conn.close_on_drop();
                }
                Err(e)
            }
        }
    };
}
pub(crate) use finish_tx;

/// Runs `$body` inside a write transaction `$tx` (a pooled connection) on either dialect,
/// committing on success and rolling back on failure; the one way every writer runs a
/// transaction. On SQLite it starts with `BEGIN IMMEDIATE` in this process's write turn:
/// taking the write lock up front means a transaction that reads before it writes cannot
/// fail with `SQLITE_BUSY` when another writer committed in between. A connection whose
/// `BEGIN`, `COMMIT` or `ROLLBACK` failed is closed, not returned. Every outcome tells the
/// storage health ([`health`]).
macro_rules! write_tx {
    ($db:expr, $tx:ident => $body:expr) => {{
        let out: crate::store::Result<_> = match &$db.pool {
            crate::store::Pool::Sqlite(pool) => {
                let _turn = $db.writer.turn().await;
                let p = $db.sqlite_write_pool(pool);
                async {
                    let mut $tx = p.acquire().await?;
                    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *$tx).await {
                        $tx.close_on_drop();
                        return Err(crate::store::StoreError::from(e));
                    }
                    let body: crate::store::Result<_> =
                        async { Ok::<_, crate::store::StoreError>($body) }.await;
                    crate::store::finish_tx!($tx, body)
                }
                .await
            }
            crate::store::Pool::Postgres(p) => {
                async {
                    let mut $tx = p.acquire().await?;
                    if let Err(e) = sqlx::query("BEGIN").execute(&mut *$tx).await {
                        $tx.close_on_drop();
                        return Err(crate::store::StoreError::from(e));
                    }
                    let body: crate::store::Result<_> =
                        async { Ok::<_, crate::store::StoreError>($body) }.await;
                    crate::store::finish_tx!($tx, body)
                }
                .await
            }
        };
        crate::store::health::observe(&out);
        out?
    }};
}
pub(crate) use write_tx;

/// The daemon's time (ms): see [`crate::clock`].
pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

pub mod alerts;
pub mod announcements;
pub mod channels;
pub mod health;
pub mod people;
pub mod reach;
pub mod schedules;
pub mod subscribers;

/// Placeholders for a statement built at run time, numbered in order of appearance: `?` on
/// SQLite, where a named `$n` costs a lookup by name per parameter (quadratic in a long
/// statement), `$n` on PostgreSQL. Values are bound in the same order.
pub(crate) struct Params {
    postgres: bool,
    n: usize,
}

impl Params {
    pub(crate) fn new(db: &Db) -> Params {
        Params {
            postgres: db.is_postgres(),
            n: 0,
        }
    }

    pub(crate) fn next(&mut self) -> String {
        self.n += 1;
        if self.postgres {
            format!("${}", self.n)
        } else {
            "?".to_string()
        }
    }

    /// `count` placeholders separated by commas.
    pub(crate) fn list(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| self.next())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `count` rows of `width` placeholders each, for a multi-row `VALUES`: `($1, $2), ($3, $4)`.
    pub(crate) fn rows(&mut self, count: usize, width: usize) -> String {
        (0..count)
            .map(|_| format!("({})", self.list(width)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

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
    async fn normal_claims_wait_behind_live_alert_work_for_a_bounded_time() {
        use std::time::Instant;
        // Alert work that ends after 30 ms: the wait ends with it.
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let alert = tokio::spawn(urgent(async move {
            let _ = finished.await;
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        let ender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = done.send(());
        });
        behind_urgent(Duration::from_secs(5)).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(20),
            "did not wait: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(2),
            "waited past the alert: {waited:?}"
        );
        ender.await.unwrap();
        alert.await.unwrap();
        // Alert work that never ends: the wait ends at its bound.
        let (_never, pending) = tokio::sync::oneshot::channel::<()>();
        let stuck = tokio::spawn(urgent(async move {
            let _ = pending.await;
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        behind_urgent(Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        stuck.abort();
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
