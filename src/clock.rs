//! The daemon's one clock. Every time the daemon stores or compares (leases, `run_after`,
//! holds, schedules, expiry) comes from here.
//!
//! On PostgreSQL, where several hosts share one queue, the clock follows the database
//! server's: [`crate::store::Db::sync_clock`] measures the difference every few seconds, so
//! a host whose clock is off cannot reclaim another host's live lease or run work early.
//! On SQLite one process owns the database and its own clock is the only one.
//!
//! `NOROSHI_CLOCK_SKEW_MS` shifts this process's view of the system clock; the tests use it
//! to play a host with a wrong clock (on PostgreSQL the database's clock corrects it).
//! `NOROSHI_TEST_CLOCK_OFFSET_MS` moves the daemon's time itself, after any correction: a
//! controlled clock for tests (every instance given the same offset agrees on the time), so
//! a schedule's firing can be brought to the next few seconds instead of slept for.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

/// The database's clock minus this host's (ms); 0 on SQLite.
static DB_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

fn skew_ms() -> i64 {
    static SKEW: OnceLock<i64> = OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var("NOROSHI_CLOCK_SKEW_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// This host's clock in ms since the epoch (with the test skew, without the database's
/// correction).
pub fn host_ms() -> i64 {
    Utc::now().timestamp_millis() + skew_ms()
}

fn test_offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("NOROSHI_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// The daemon's time in ms since the epoch.
pub fn now_ms() -> i64 {
    host_ms() + DB_OFFSET_MS.load(Ordering::Relaxed) + test_offset_ms()
}

/// The daemon's time.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(now_ms()).unwrap_or_else(Utc::now)
}

/// Follows the database's clock from now on: `offset_ms` = database − host.
pub fn set_db_offset(offset_ms: i64) {
    DB_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

pub fn db_offset_ms() -> i64 {
    DB_OFFSET_MS.load(Ordering::Relaxed)
}
