//! Reach measurements with their lineage, collection runs, and the daemon's own page views.

use serde::Serialize;
use sqlx::Row;

use super::{Db, Result};

/// One stored measurement.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Sample {
    pub channel: String,
    /// The platform's own name (`followers_count`, `page_media_view`, `impression_count`).
    pub metric: String,
    pub value: f64,
    /// lifetime | day | days_28 | fiscal_year
    pub period: String,
    /// The platform API version it came from (`v25.0`), when it has one.
    pub api_version: Option<String>,
    /// The post or message it is about; null for the whole account.
    pub subject: Option<String>,
    /// ms since the epoch.
    pub collected_at: i64,
    /// api (measured by the platform) | daemon (counted by Noroshi) | manual (entered)
    pub source: String,
    /// A manual figure's source (e.g. the readership survey).
    pub note: Option<String>,
    pub entered_by: Option<String>,
}

pub async fn insert(db: &Db, samples: &[Sample]) -> Result<()> {
    if samples.is_empty() {
        return Ok(());
    }
    write_tx!(db, tx => {
        for s in samples {
            sqlx::query(
                "INSERT INTO reach_samples (channel, metric, value, period, api_version, subject, \
                     collected_at, source, note, entered_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(&s.channel).bind(&s.metric).bind(s.value).bind(&s.period).bind(&s.api_version)
                .bind(&s.subject).bind(s.collected_at).bind(&s.source).bind(&s.note).bind(&s.entered_by)
                .execute(&mut *tx).await?;
        }
    });
    Ok(())
}

/// Measurements in `[since, until)`, optionally of one channel or metric, oldest first.
pub async fn samples(
    db: &Db,
    channel: Option<&str>,
    metric: Option<&str>,
    announcement_id: Option<&str>,
    since: i64,
    until: i64,
) -> Result<Vec<Sample>> {
    // One announcement's reach: the samples whose subject is one of its posts, by the id
    // the platform gave it (the delivery's remote id).
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT channel, metric, value, period, api_version, subject, collected_at, source, note, entered_by \
             FROM reach_samples WHERE collected_at >= $1 AND collected_at < $2 \
               AND (CAST($3 AS TEXT) IS NULL OR channel = $3) AND (CAST($4 AS TEXT) IS NULL OR metric = $4) \
               AND (CAST($5 AS TEXT) IS NULL OR subject IN (SELECT d.remote_id FROM deliveries d \
                   WHERE d.announcement_id = $5 AND d.remote_id IS NOT NULL)) \
             ORDER BY collected_at, id LIMIT 100000")
            .bind(since).bind(until).bind(channel).bind(metric).bind(announcement_id)
            .fetch_all(p).await?;
        rows.iter().map(|r| Ok(Sample {
            channel: r.try_get("channel")?,
            metric: r.try_get("metric")?,
            value: r.try_get("value")?,
            period: r.try_get("period")?,
            api_version: r.try_get("api_version")?,
            subject: r.try_get("subject")?,
            collected_at: r.try_get("collected_at")?,
            source: r.try_get("source")?,
            note: r.try_get("note")?,
            entered_by: r.try_get("entered_by")?,
        })).collect()
    })
}

/// Records one channel's collection (and its error).
pub async fn record_run(
    db: &Db,
    channel: &str,
    started_at: i64,
    samples: i64,
    error: Option<&str>,
) -> Result<()> {
    write_pool!(db, p => sqlx::query(
        "INSERT INTO reach_runs (channel, started_at, samples, error) VALUES ($1, $2, $3, $4)")
        .bind(channel).bind(started_at).bind(samples).bind(error)
        .execute(p).await?.rows_affected());
    Ok(())
}

/// Each channel's latest collection: (channel, started_at, samples, error).
pub async fn latest_runs(db: &Db) -> Result<Vec<(String, i64, i64, Option<String>)>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT r.channel, r.started_at, r.samples, r.error FROM reach_runs r \
             WHERE r.id = (SELECT MAX(id) FROM reach_runs x WHERE x.channel = r.channel)")
            .fetch_all(p).await?;
        rows.iter().map(|r| Ok((
            r.try_get("channel")?,
            r.try_get("started_at")?,
            r.try_get("samples")?,
            r.try_get("error")?,
        ))).collect()
    })
}

/// Adds page views counted since the last flush.
pub async fn add_site_views(db: &Db, views: &[((String, String), i64)]) -> Result<()> {
    if views.is_empty() {
        return Ok(());
    }
    write_tx!(db, tx => {
        for ((day, path), n) in views {
            sqlx::query(
                "INSERT INTO site_views (day, path, views) VALUES ($1, $2, $3) \
                 ON CONFLICT (day, path) DO UPDATE SET views = site_views.views + $3")
                .bind(day).bind(path).bind(n)
                .execute(&mut *tx).await?;
        }
    });
    Ok(())
}

/// Page views per day (Asia/Tokyo) in `[from, to]` (YYYY-MM-DD).
pub async fn site_views_by_day(db: &Db, from: &str, to: &str) -> Result<Vec<(String, i64)>> {
    with_pool!(db, p => {
        let rows = sqlx::query(
            "SELECT day, CAST(SUM(views) AS BIGINT) AS views FROM site_views WHERE day >= $1 AND day <= $2 \
             GROUP BY day ORDER BY day")
            .bind(from).bind(to).fetch_all(p).await?;
        rows.iter().map(|r| Ok((r.try_get("day")?, r.try_get::<i64, _>("views")?))).collect()
    })
}

/// Live announcements (no drills) tagged `tag`, created in `[since, until)`.
pub async fn posts_with_tag(db: &Db, tag: &str, since: i64, until: i64) -> Result<i64> {
    // Tags are stored inside the request JSON; the few announcements of a year are read.
    let rows: Vec<String> = with_pool!(db, p => sqlx::query_scalar(
        "SELECT request FROM announcements WHERE created_at >= $1 AND created_at < $2 \
         AND NOT exercise AND status <> 'cancelled'")
        .bind(since).bind(until).fetch_all(p).await?);
    Ok(rows
        .iter()
        .filter(|r| {
            serde_json::from_str::<serde_json::Value>(r)
                .ok()
                .and_then(|v| v["tags"].as_array().cloned())
                .is_some_and(|tags| tags.iter().any(|t| t == tag))
        })
        .count() as i64)
}
