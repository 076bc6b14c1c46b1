//! Storage health: whether the database takes writes. Every write reports its outcome
//! ([`observe`], called by `write_tx!` and `write_pool!`); the first fault is logged once at
//! error level and the recovery once at info level, never once per request. `/readyz` and
//! `GET /api/v1/storage` show it; the API answers `503` with its problem type meanwhile.

use std::sync::Mutex;

use serde::Serialize;

use super::{Result, StoreError};

/// What is wrong with storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The disk or the database is full (SQLite `SQLITE_FULL`, PostgreSQL 53100).
    Full,
    /// The database cannot take writes: unreachable, read-only, I/O errors, locked.
    Unavailable,
}

impl Fault {
    /// The problem type's last segment: `storage-full`, `storage-unavailable`.
    pub fn problem(self) -> &'static str {
        match self {
            Fault::Full => "storage-full",
            Fault::Unavailable => "storage-unavailable",
        }
    }
    /// Seconds a client should wait before trying again.
    pub fn retry_after(self) -> u32 {
        match self {
            Fault::Full => 30,
            Fault::Unavailable => 5,
        }
    }
}

/// The storage state as shown.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StorageState {
    /// ok | full | unavailable
    pub state: String,
    /// The last error, when not ok (the database's own words).
    pub reason: Option<String>,
    /// Since when (RFC 3339, Asia/Tokyo), when not ok.
    pub since: Option<String>,
}

struct Current {
    fault: Fault,
    reason: String,
    since_ms: i64,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// Records a write's outcome: a storage fault starts (or continues) a bad spell. A success
/// ends an "unavailable" spell; a full database is over only when [`Db::probe_room`] finds
/// room again (small writes that need no new space succeed while it is full).
///
/// [`Db::probe_room`]: super::Db::probe_room
pub fn observe<T>(outcome: &Result<T>) {
    match outcome {
        Ok(_) if fault() == Some(Fault::Unavailable) => recovered(),
        Ok(_) => {}
        Err(e) => {
            if let Some(fault) = e.storage_fault() {
                fault_seen(fault, e);
            }
        }
    }
}

fn fault_seen(fault: Fault, e: &StoreError) {
    let mut current = CURRENT.lock().unwrap();
    match current.as_mut() {
        Some(c) if c.fault == fault => {}
        _ => {
            let text = e.to_string();
            match fault {
                Fault::Full => tracing::error!(error = %text,
                    "Storage is full: writes are refused (503 storage-full) until space is freed"),
                Fault::Unavailable => tracing::error!(error = %text,
                    "Storage is unavailable: writes are refused (503 storage-unavailable) until it returns"),
            }
            *current = Some(Current {
                fault,
                reason: text,
                since_ms: crate::clock::now_ms(),
            });
        }
    }
}

/// Storage takes writes again (a probe found room).
pub fn recovered() {
    let mut current = CURRENT.lock().unwrap();
    if let Some(c) = current.take() {
        let secs = (crate::clock::now_ms() - c.since_ms) / 1000;
        tracing::info!(after_secs = secs, "Storage is writable again");
    }
}

/// The fault in force, if any.
pub fn fault() -> Option<Fault> {
    CURRENT.lock().unwrap().as_ref().map(|c| c.fault)
}

pub fn state() -> StorageState {
    match CURRENT.lock().unwrap().as_ref() {
        None => StorageState {
            state: "ok".into(),
            reason: None,
            since: None,
        },
        Some(c) => StorageState {
            state: match c.fault {
                Fault::Full => "full".into(),
                Fault::Unavailable => "unavailable".into(),
            },
            reason: Some(c.reason.clone()),
            since: Some(crate::time::rfc3339_jst(c.since_ms)),
        },
    }
}
