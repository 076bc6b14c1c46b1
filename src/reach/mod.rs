//! Reach: followers and views collected from each channel (its adapter's `fetch_reach`, one
//! call per metric family), the website's page views the daemon counts itself, figures
//! entered by hand, all kept with their lineage; and the city plan's KPIs by Japanese
//! fiscal year (April–March, Asia/Tokyo).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::api::SharedState;
use crate::store::reach::{self as store, Sample};

/// The period a platform's metric covers, by its own name (CHANNELS.md §1.7, §2.9, §3.5).
pub fn period_of(metric: &str) -> &'static str {
    match metric {
        "page_media_view"
        | "page_total_media_view_unique"
        | "page_impressions"
        | "page_impressions_unique"
        | "page_views"
        | "delivered" => "day",
        _ => "lifetime",
    }
}

/// The API version a channel's samples come from, when the adapter did not say.
fn default_version(channel: &str) -> Option<String> {
    match channel {
        "x" => Some("2".into()),
        "line" => Some("v2".into()),
        _ => None,
    }
}

/// Collects every enabled channel's reach now. Each channel's failure is recorded (and
/// shown in the channel view); none stops the others, the daemon or the queue.
pub async fn collect(state: &SharedState) -> Vec<(String, usize, Option<String>)> {
    let started = crate::clock::now_ms();
    let mut out = Vec::new();
    for c in &state.channels {
        out.push(collect_channel(state, c.as_ref(), started).await);
    }
    // Counted by the daemon: email subscribers and LINE friends from the webhook.
    let mut own = Vec::new();
    if let Ok(n) = crate::store::subscribers::count_active(&state.db).await {
        own.push(("email", "active_subscribers", n as f64));
    }
    if let Ok(n) = crate::store::channels::line_follower_count(&state.db).await {
        own.push(("line", "webhook_followers", n as f64));
    }
    let own: Vec<Sample> = own
        .into_iter()
        .map(|(channel, metric, value)| Sample {
            channel: channel.into(),
            metric: metric.into(),
            value,
            period: "lifetime".into(),
            api_version: None,
            subject: None,
            collected_at: started,
            source: "daemon".into(),
            note: None,
            entered_by: None,
        })
        .collect();
    let _ = store::insert(&state.db, &own).await;
    out
}

/// One channel's collection, stored with its run: (channel, samples, error).
async fn collect_channel(
    state: &SharedState,
    c: &dyn noroshi_channel_core::Channel,
    started: i64,
) -> (String, usize, Option<String>) {
    let name = c.name().to_string();
    let (samples, error) = match c.fetch_reach().await {
        Ok(samples) => (
            samples
                .into_iter()
                .map(|s| Sample {
                    channel: name.clone(),
                    period: period_of(&s.metric).into(),
                    api_version: s.api_version.or_else(|| default_version(&name)),
                    metric: s.metric,
                    value: s.value as f64,
                    subject: s.subject,
                    collected_at: s.collected_at.timestamp_millis(),
                    source: "api".into(),
                    note: None,
                    entered_by: None,
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let n = samples.len();
    crate::metrics::reach_collected(&name, error.is_none());
    if let Err(e) = store::insert(&state.db, &samples).await {
        tracing::warn!(channel = %name, error = %e, "Could not store reach samples");
    }
    if let Some(err) = &error {
        tracing::warn!(channel = %name, error = %err, "Reach collection failed");
    }
    let _ = store::record_run(&state.db, &name, started, n as i64, error.as_deref()).await;
    (name, n, error)
}

/// After a channel is resumed (its credentials put right): when its last collection
/// failed, collects it again now, so the channel is not shown `degraded` by a failure of
/// the old credentials until the next scheduled collection.
pub async fn recollect_if_failed(state: &SharedState, channel: &str) {
    let failed = store::latest_runs(&state.db).await.is_ok_and(|runs| {
        runs.iter()
            .any(|(c, _, _, error)| c == channel && error.is_some())
    });
    if let Some(c) = state.channels.iter().find(|c| c.name() == channel) {
        if failed {
            collect_channel(state, c.as_ref(), crate::clock::now_ms()).await;
        }
    }
}

/// The collection loop: at every firing of `[reach] schedule` (crontab, Asia/Tokyo).
pub async fn run(state: SharedState, schedule: crate::schedule::Cron) {
    loop {
        let now = crate::clock::now();
        let next = schedule
            .after(chrono_tz::Asia::Tokyo, now)
            .next()
            .unwrap_or(now + chrono::Duration::hours(1));
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        collect(&state).await;
    }
}

/// Page views of `/site/` pages, counted as they are served and flushed to the database.
#[derive(Clone, Default)]
pub struct SiteViews(Arc<Mutex<HashMap<(String, String), i64>>>);

impl SiteViews {
    /// One view of `path` now.
    pub fn count(&self, path: &str) {
        let day = crate::clock::now()
            .with_timezone(&noroshi_channel_core::jst())
            .format("%Y-%m-%d")
            .to_string();
        *self
            .0
            .lock()
            .unwrap()
            .entry((day, path.to_string()))
            .or_default() += 1;
    }

    /// Writes what was counted; kept for the next flush if the write fails.
    pub async fn flush(&self, db: &crate::store::Db) {
        let taken: Vec<_> = self.0.lock().unwrap().drain().collect();
        if let Err(e) = store::add_site_views(db, &taken).await {
            tracing::warn!(error = %e, "Could not store page views; kept for the next flush");
            let mut map = self.0.lock().unwrap();
            for (k, n) in taken {
                *map.entry(k).or_default() += n;
            }
        }
    }
}

/// The Japanese fiscal year (April–March, Asia/Tokyo) an instant falls in: FY2026 runs
/// from 2026-04-01 00:00 JST to 2027-03-31 23:59:59 JST.
pub fn fiscal_year(at: DateTime<Utc>) -> i32 {
    let local = at.with_timezone(&noroshi_channel_core::jst());
    if local.month() >= 4 {
        local.year()
    } else {
        local.year() - 1
    }
}

/// `[start, end)` of fiscal year `fy` in ms.
pub fn fiscal_year_range(fy: i32) -> (i64, i64) {
    let jst = noroshi_channel_core::jst();
    let start = jst
        .from_local_datetime(
            &NaiveDate::from_ymd_opt(fy, 4, 1)
                .expect("a date")
                .and_hms_opt(0, 0, 0)
                .expect("a time"),
        )
        .single()
        .expect("JST has no gaps");
    let end = jst
        .from_local_datetime(
            &NaiveDate::from_ymd_opt(fy + 1, 4, 1)
                .expect("a date")
                .and_hms_opt(0, 0, 0)
                .expect("a time"),
        )
        .single()
        .expect("JST has no gaps");
    (start.timestamp_millis(), end.timestamp_millis())
}

/// What one term of a KPI was computed from.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Lineage {
    /// `channel.metric` as written in the KPI, or `posts.tag:NAME`.
    pub term: String,
    pub value: f64,
    /// How: `latest` (a lifetime count), `sum of N daily values`, `count of posts`.
    pub how: String,
    pub samples: usize,
    pub period: Option<String>,
    pub api_versions: Vec<String>,
    pub sources: Vec<String>,
    /// The newest measurement used (RFC 3339, Asia/Tokyo).
    pub latest_at: Option<String>,
    /// The metric names were renamed or retired within the year (a break in the series).
    pub breaks: Vec<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KpiView {
    pub name: String,
    pub metric: String,
    pub fiscal_year: i32,
    pub baseline: Option<f64>,
    pub target: f64,
    /// Null when nothing was measured in the fiscal year.
    pub value: Option<f64>,
    /// (value − baseline) / (target − baseline), 0–1 and beyond; null without a value.
    pub progress: Option<f64>,
    pub lineage: Vec<Lineage>,
}

fn jst_rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&noroshi_channel_core::jst())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// One term's value in a fiscal year: a lifetime count's latest measurement in the year;
/// a daily metric's sum over the year (one value per day: the latest collected that day);
/// `posts.tag:NAME` the live posts with that tag; `website.page_views` the daemon's count.
pub async fn term_value(
    state: &SharedState,
    term: &str,
    fy: i32,
) -> crate::store::Result<Option<Lineage>> {
    let (since, until) = fiscal_year_range(fy);
    if let Some(tag) = term.strip_prefix("posts.tag:") {
        let n = store::posts_with_tag(&state.db, tag, since, until).await?;
        return Ok(Some(Lineage {
            term: term.into(),
            value: n as f64,
            how: "count of live posts with the tag (drills excluded)".into(),
            samples: n as usize,
            period: Some("fiscal_year".into()),
            api_versions: vec![],
            sources: vec!["daemon".into()],
            latest_at: None,
            breaks: vec![],
        }));
    }
    let Some((channel, metric)) = term.split_once('.') else {
        return Ok(None);
    };
    if channel == "website" && metric == "page_views" {
        let (from, to) = (
            NaiveDate::from_ymd_opt(fy, 4, 1)
                .expect("a date")
                .to_string(),
            NaiveDate::from_ymd_opt(fy + 1, 3, 31)
                .expect("a date")
                .to_string(),
        );
        let days = store::site_views_by_day(&state.db, &from, &to).await?;
        let total: i64 = days.iter().map(|(_, n)| n).sum();
        return Ok(Some(Lineage {
            term: term.into(),
            value: total as f64,
            how: format!("sum of {} daily counts", days.len()),
            samples: days.len(),
            period: Some("day".into()),
            api_versions: vec![],
            sources: vec!["daemon".into()],
            latest_at: None,
            breaks: vec![],
        }));
    }
    let all = store::samples(&state.db, Some(channel), Some(metric), None, since, until).await?;
    let account: Vec<Sample> = all
        .iter()
        .filter(|s| s.subject.is_none())
        .cloned()
        .collect();
    if account.is_empty() && !all.is_empty() {
        // A per-post metric (X impression_count): each post's latest value, summed.
        let mut latest: std::collections::BTreeMap<String, &Sample> = Default::default();
        for s in &all {
            latest.insert(s.subject.clone().unwrap_or_default(), s);
        }
        let mut versions: Vec<String> = all.iter().filter_map(|s| s.api_version.clone()).collect();
        versions.sort();
        versions.dedup();
        return Ok(Some(Lineage {
            term: term.into(),
            value: latest.values().map(|s| s.value).sum(),
            how: format!("sum of the latest value of {} posts", latest.len()),
            samples: latest.len(),
            period: all.last().map(|s| s.period.clone()),
            api_versions: versions,
            sources: vec!["api".into()],
            latest_at: all.last().map(|s| jst_rfc3339(s.collected_at)),
            breaks: vec![],
        }));
    }
    let samples = account;
    if samples.is_empty() {
        return Ok(None);
    }
    let period = samples.last().map(|s| s.period.clone());
    let mut versions: Vec<String> = samples
        .iter()
        .filter_map(|s| s.api_version.clone())
        .collect();
    versions.sort();
    versions.dedup();
    let mut sources: Vec<String> = samples.iter().map(|s| s.source.clone()).collect();
    sources.sort();
    sources.dedup();
    let (value, how, used) = if period.as_deref() == Some("day") {
        let mut by_day: std::collections::BTreeMap<String, f64> = Default::default();
        for s in &samples {
            let day = jst_rfc3339(s.collected_at)[..10].to_string();
            by_day.insert(day, s.value);
        }
        let n = by_day.len();
        (by_day.values().sum(), format!("sum of {n} daily values"), n)
    } else {
        let last = samples.last().expect("not empty");
        (
            last.value,
            "latest measurement in the fiscal year".into(),
            samples.len(),
        )
    };
    let breaks = if versions.len() > 1 {
        vec![format!(
            "API versions changed within the year: {}",
            versions.join(" → ")
        )]
    } else {
        vec![]
    };
    Ok(Some(Lineage {
        term: term.into(),
        value,
        how,
        samples: used,
        period,
        api_versions: versions,
        sources,
        latest_at: samples.last().map(|s| jst_rfc3339(s.collected_at)),
        breaks,
    }))
}

/// Every configured KPI for its fiscal year.
pub async fn kpis(state: &SharedState) -> crate::store::Result<Vec<KpiView>> {
    let mut out = Vec::new();
    for k in state.kpis.iter() {
        let mut lineage = Vec::new();
        let mut total = 0.0;
        let mut any = false;
        for term in k.metric.split('+').map(str::trim).filter(|t| !t.is_empty()) {
            match term_value(state, term, k.fiscal_year).await? {
                Some(l) => {
                    total += l.value;
                    any = true;
                    lineage.push(l);
                }
                None => lineage.push(Lineage {
                    term: term.into(),
                    value: 0.0,
                    how: "nothing measured in the fiscal year".into(),
                    samples: 0,
                    period: None,
                    api_versions: vec![],
                    sources: vec![],
                    latest_at: None,
                    breaks: vec![],
                }),
            }
        }
        let value = any.then_some(total);
        let progress = value.map(|v| {
            let base = k.baseline.unwrap_or(0.0);
            if (k.target - base).abs() < f64::EPSILON {
                1.0
            } else {
                (v - base) / (k.target - base)
            }
        });
        out.push(KpiView {
            name: k.name.clone(),
            metric: k.metric.clone(),
            fiscal_year: k.fiscal_year,
            baseline: k.baseline,
            target: k.target,
            value,
            progress,
            lineage,
        });
    }
    Ok(out)
}

/// A CSV field: quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jst(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// 31 March 23:59 JST is the old fiscal year, 1 April 00:00 JST the new one, whatever
    /// the UTC date says.
    #[test]
    fn fiscal_years_turn_on_1_april_in_tokyo() {
        assert_eq!(fiscal_year(jst("2027-03-31T23:59:59+09:00")), 2026);
        assert_eq!(fiscal_year(jst("2027-04-01T00:00:00+09:00")), 2027);
        // 2027-03-31T15:30Z is already 1 April in Tokyo.
        assert_eq!(fiscal_year(jst("2027-03-31T15:30:00Z")), 2027);
        let (start, end) = fiscal_year_range(2026);
        assert_eq!(start, jst("2026-04-01T00:00:00+09:00").timestamp_millis());
        assert_eq!(end, jst("2027-04-01T00:00:00+09:00").timestamp_millis());
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("followers_count"), "followers_count");
        assert_eq!(csv_field("読者調査, 2026"), "\"読者調査, 2026\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
