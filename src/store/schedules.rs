//! Schedules and their firings.

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Db, Result};

/// A schedule as stored.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleRow {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The submission (JSON).
    pub announcement: String,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub paused: bool,
    pub catch_up: String,
    pub holidays: String,
    pub next_fire_at: Option<i64>,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, name, cron, timezone, announcement, starts_at, ends_at, paused, catch_up, \
     holidays, next_fire_at, version, created_by, created_at, updated_at";

macro_rules! schedule_from {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, super::StoreError>(ScheduleRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            cron: r.try_get("cron")?,
            timezone: r.try_get("timezone")?,
            announcement: r.try_get("announcement")?,
            starts_at: r.try_get("starts_at")?,
            ends_at: r.try_get("ends_at")?,
            paused: r.try_get("paused")?,
            catch_up: r.try_get("catch_up")?,
            holidays: r.try_get("holidays")?,
            next_fire_at: r.try_get("next_fire_at")?,
            version: r.try_get("version")?,
            created_by: r.try_get("created_by")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }};
}

pub async fn insert(db: &Db, s: &ScheduleRow) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO schedules (id, name, cron, timezone, announcement, starts_at, ends_at, paused, \
             catch_up, holidays, next_fire_at, version, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)")
        .bind(&s.id).bind(&s.name).bind(&s.cron).bind(&s.timezone).bind(&s.announcement)
        .bind(s.starts_at).bind(s.ends_at).bind(s.paused).bind(&s.catch_up).bind(&s.holidays)
        .bind(s.next_fire_at).bind(s.version).bind(&s.created_by).bind(s.created_at).bind(s.updated_at)
        .execute(p).await?.rows_affected());
    Ok(())
}

pub async fn get(db: &Db, id: &str) -> Result<Option<ScheduleRow>> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE id = $1 AND deleted_at IS NULL");
    with_pool!(db, p => {
        let row = sqlx::query(&sql).bind(id).fetch_optional(p).await?;
        row.as_ref().map(|r| schedule_from!(r)).transpose()
    })
}

pub async fn list(db: &Db) -> Result<Vec<ScheduleRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 1000"
    );
    with_pool!(db, p => {
        let rows = sqlx::query(&sql).fetch_all(p).await?;
        rows.iter().map(|r| schedule_from!(r)).collect()
    })
}

/// Replaces a schedule's editable fields and moves its version, if it is still at
/// `version` (else `false`: someone else edited it first).
pub async fn update(db: &Db, s: &ScheduleRow, version: i64) -> Result<bool> {
    let now = now_ms();
    let n = write_pool!(db, p => sqlx::query(
        "UPDATE schedules SET name = $1, cron = $2, timezone = $3, announcement = $4, starts_at = $5, \
             ends_at = $6, paused = $7, catch_up = $8, holidays = $9, next_fire_at = $10, \
             version = version + 1, updated_at = $11 \
         WHERE id = $12 AND version = $13 AND deleted_at IS NULL")
        .bind(&s.name).bind(&s.cron).bind(&s.timezone).bind(&s.announcement).bind(s.starts_at)
        .bind(s.ends_at).bind(s.paused).bind(&s.catch_up).bind(&s.holidays).bind(s.next_fire_at)
        .bind(now).bind(&s.id).bind(version)
        .execute(p).await?.rows_affected());
    Ok(n == 1)
}

/// Deletes a schedule (its firings stay, for the record). `false` if there was none.
pub async fn delete(db: &Db, id: &str) -> Result<bool> {
    let now = now_ms();
    let n = write_pool!(db, p => sqlx::query(
        "UPDATE schedules SET deleted_at = $1, next_fire_at = NULL, version = version + 1, updated_at = $1 \
         WHERE id = $2 AND deleted_at IS NULL")
        .bind(now).bind(id).execute(p).await?.rows_affected());
    Ok(n == 1)
}

/// Schedules due at `now`, not paused, not deleted.
pub async fn due(db: &Db, now: i64, limit: i64) -> Result<Vec<ScheduleRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE deleted_at IS NULL AND NOT paused \
         AND next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2"
    );
    with_pool!(db, p => {
        let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(p).await?;
        rows.iter().map(|r| schedule_from!(r)).collect()
    })
}

/// The earliest next firing of any active schedule.
pub async fn earliest(db: &Db) -> Result<Option<i64>> {
    with_pool!(db, p => {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_fire_at) FROM schedules WHERE deleted_at IS NULL AND NOT paused")
            .fetch_one(p).await?;
        Ok(v)
    })
}

/// A firing's claim on its schedule, checked inside the transaction that stores the
/// announcement: the schedule must still be at `version` and due at `fire_at`, and moves to
/// `next`. If it is not (edited, paused, deleted, or fired by another instance), nothing is
/// stored.
#[derive(Clone, Debug)]
pub struct Firing {
    pub schedule_id: String,
    pub version: i64,
    pub fire_at: i64,
    pub next: Option<i64>,
}

/// The compare-and-set a firing runs first in its transaction.
pub(crate) const CLAIM: &str =
    "UPDATE schedules SET next_fire_at = $1 WHERE id = $2 AND version = $3 AND next_fire_at = $4 \
     AND NOT paused AND deleted_at IS NULL";

/// The record of a firing, in the same transaction.
pub(crate) const RECORD: &str =
    "INSERT INTO schedule_firings (schedule_id, fire_at, announcement_id, note, fired_at) \
     VALUES ($1, $2, $3, $4, $5)";

/// Moves a schedule on without posting (a missed firing skipped, a refused rendering),
/// with a note; only if it is still at `version` and due at `fire_at`.
pub async fn skip(db: &Db, f: &Firing, note: &str) -> Result<bool> {
    let now = now_ms();
    let out = write_tx!(db, tx => {
        let n = sqlx::query(CLAIM)
            .bind(f.next).bind(&f.schedule_id).bind(f.version).bind(f.fire_at)
            .execute(&mut *tx).await?.rows_affected();
        if n == 1 {
            sqlx::query(RECORD)
                .bind(&f.schedule_id).bind(f.fire_at).bind(None::<String>).bind(note).bind(now)
                .execute(&mut *tx).await?;
        }
        n == 1
    });
    Ok(out)
}

/// A schedule's firings, newest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FiringRow {
    pub fire_at: i64,
    pub announcement_id: Option<String>,
    pub note: Option<String>,
}

pub async fn firings(db: &Db, schedule_id: &str, limit: i64) -> Result<Vec<FiringRow>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT fire_at, announcement_id, note FROM schedule_firings WHERE schedule_id = $1 \
             ORDER BY fire_at DESC LIMIT $2")
            .bind(schedule_id).bind(limit).fetch_all(p).await?;
        rows.iter().map(|r| Ok(FiringRow {
            fire_at: r.try_get("fire_at")?,
            announcement_id: r.try_get("announcement_id")?,
            note: r.try_get("note")?,
        })).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::announcements::{self, NewAnnouncement};

    fn announcement(id: &str, title: &str) -> NewAnnouncement {
        NewAnnouncement {
            id: id.into(),
            title: title.into(),
            body: "本文".into(),
            link: None,
            priority: "normal".into(),
            lane: 0,
            lang: "ja".into(),
            exercise: false,
            status: "queued".into(),
            request: "{}".into(),
            created_by: "schedule:s1".into(),
            idempotency_key: Some("1000".into()),
            request_hash: "h".into(),
            request_id: None,
            scheduled_at: None,
            created_at: 1,
            alert: None,
        }
    }

    /// The guarantee behind "an edit that has answered wins": a firing rendered from the
    /// version before an edit (or read before a delete, or already fired by another
    /// instance) stores nothing; one from the current version stores exactly once.
    #[tokio::test]
    async fn a_firing_commits_only_from_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2, None).await.unwrap();
        db.migrate().await.unwrap();
        let row = ScheduleRow {
            id: "s1".into(),
            name: "n".into(),
            cron: "* * * * *".into(),
            timezone: "Asia/Tokyo".into(),
            announcement: "{}".into(),
            starts_at: None,
            ends_at: None,
            paused: false,
            catch_up: "once".into(),
            holidays: "ignore".into(),
            next_fire_at: Some(1000),
            version: 1,
            created_by: "pr-desk".into(),
            created_at: 1,
            updated_at: 1,
        };
        insert(&db, &row).await.unwrap();
        // The firing read version 1; the edit answers first.
        assert!(update(
            &db,
            &ScheduleRow {
                name: "edited".into(),
                ..row.clone()
            },
            1
        )
        .await
        .unwrap());
        let stale = Firing {
            schedule_id: "s1".into(),
            version: 1,
            fire_at: 1000,
            next: Some(61_000),
        };
        let a = announcement("a-old", "旧い内容");
        assert!(!announcements::insert_firing(&db, &a, &[], Some(&stale))
            .await
            .unwrap());
        assert!(
            announcements::get(&db, "a-old").await.unwrap().is_none(),
            "the old content was stored"
        );
        // The current version fires once; a second instance's identical firing does not.
        let current = Firing {
            version: 2,
            ..stale.clone()
        };
        let a = announcement("a-new", "新しい内容");
        assert!(announcements::insert_firing(&db, &a, &[], Some(&current))
            .await
            .unwrap());
        let again = announcement("a-twice", "新しい内容");
        assert!(
            !announcements::insert_firing(&db, &again, &[], Some(&current))
                .await
                .unwrap()
        );
        assert_eq!(firings(&db, "s1", 10).await.unwrap().len(), 1);
        // Deleted: a firing read before the delete stores nothing.
        assert!(delete(&db, "s1").await.unwrap());
        let after_delete = Firing {
            version: 2,
            fire_at: 61_000,
            next: None,
            ..stale
        };
        let a = announcement("a-deleted", "消された");
        assert!(
            !announcements::insert_firing(&db, &a, &[], Some(&after_delete))
                .await
                .unwrap()
        );
    }
}
