//! Reach from LINE's insight endpoints (CHANNELS.md §1.7): followers, daily deliveries,
//! per-broadcast views, and narrowcast progress.

use chrono::{DateTime, Utc};
use noroshi_channel_core::{DeliveryError, ErrorClass, ReachSample};
use serde_json::Value;

use noroshi_channel_core::jst;

use crate::client::{progress_note, LineChannel};

/// Insight numbers are computed about a day late, so the collector asks for yesterday.
pub(crate) fn insight_date(now: DateTime<Utc>) -> String {
    (now.with_timezone(&jst()) - chrono::TimeDelta::days(1))
        .format("%Y%m%d")
        .to_string()
}

/// Views are worth polling for about two weeks after a send.
const VIEWS_FOR_DAYS: i64 = 14;
/// Insight endpoints share 60 requests an hour: a collection asks for a few messages only.
const VIEWS_PER_COLLECTION: usize = 3;
/// The numbers of `insight/message/delivery` kept as samples.
const DELIVERY_FIELDS: &[&str] = &[
    "broadcast",
    "targeting",
    "apiBroadcast",
    "apiPush",
    "apiMulticast",
    "apiNarrowcast",
];

fn sample(metric: &str, value: i64, subject: Option<String>, at: DateTime<Utc>) -> ReachSample {
    ReachSample {
        metric: metric.to_string(),
        value,
        api_version: Some("v2".into()),
        subject,
        collected_at: at,
    }
}

fn status_of(v: &Value) -> &str {
    v.get("status").and_then(Value::as_str).unwrap_or("ready")
}

/// Collects what LINE has. An auth failure or a failure of the followers call is an error;
/// later calls that fail are logged and skipped so the followers still count.
pub(crate) async fn collect(line: &LineChannel) -> Result<Vec<ReachSample>, DeliveryError> {
    let now = line.now();
    let date = insight_date(now);
    let mut samples = Vec::new();
    let mut warnings = Vec::new();

    let followers = line
        .get_json("/v2/bot/insight/followers", &[("date", &date)])
        .await?;
    match status_of(&followers) {
        "ready" => {
            for metric in ["followers", "targetedReaches", "blocks"] {
                if let Some(n) = followers.get(metric).and_then(Value::as_i64) {
                    samples.push(sample(metric, n, None, now));
                }
            }
        }
        // Not zero: not computed yet. The next collection tries again.
        other => warnings.push(format!("LINE follower statistics for {date} are {other}")),
    }

    let mut soft = |result: Result<Value, DeliveryError>, what: &str| -> Option<Value> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(channel = "line", error = %e, "Could not read LINE {what}");
                if e.class == ErrorClass::Auth {
                    warnings.push(format!("LINE {what}: {e}"));
                }
                None
            }
        }
    };

    let deliveries = line
        .get_json("/v2/bot/insight/message/delivery", &[("date", &date)])
        .await;
    if let Some(v) = soft(deliveries, "message delivery statistics") {
        if status_of(&v) == "ready" {
            for metric in DELIVERY_FIELDS {
                if let Some(n) = v.get(*metric).and_then(Value::as_i64) {
                    samples.push(sample(metric, n, Some(format!("date:{date}")), now));
                }
            }
        }
    }

    let tracked: Vec<_> = line.state.lock().unwrap().tracked.iter().cloned().collect();
    for t in tracked
        .iter()
        .filter(|t| t.endpoint == "narrowcast")
        .filter(|t| matches!(t.phase.as_deref(), Some("waiting" | "sending") | None))
    {
        let progress = line.narrowcast_progress(&t.request_id).await;
        match progress {
            Ok(p) => {
                if let Some(n) = p.success_count {
                    samples.push(sample("successCount", n, Some(t.request_id.clone()), now));
                }
                tracing::info!(channel = "line", request_id = %t.request_id, progress = %progress_note(&p), "LINE narrowcast progress");
            }
            Err(e) => {
                tracing::warn!(channel = "line", request_id = %t.request_id, error = %e, "Could not read LINE narrowcast progress")
            }
        }
    }

    let recent = tracked
        .iter()
        .rev()
        .filter(|t| now - t.accepted_at < chrono::TimeDelta::days(VIEWS_FOR_DAYS))
        .take(VIEWS_PER_COLLECTION);
    for t in recent {
        let event = line
            .get_json(
                "/v2/bot/insight/message/event",
                &[("requestId", t.request_id.as_str())],
            )
            .await;
        let Some(v) = soft(event, "message views") else {
            continue;
        };
        let overview = &v["overview"];
        // Below 20 users LINE returns null instead of a number: no sample, not zero.
        for metric in ["delivered", "uniqueImpression", "uniqueClick"] {
            if let Some(n) = overview.get(metric).and_then(Value::as_i64) {
                samples.push(sample(metric, n, Some(t.request_id.clone()), now));
            }
        }
    }

    line.state.lock().unwrap().reach_warnings = warnings;
    Ok(samples)
}
