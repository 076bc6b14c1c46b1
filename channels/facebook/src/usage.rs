//! `X-App-Usage`, `X-Page-Usage` and `X-Business-Use-Case-Usage`: Graph's own usage gauges
//! (CHANNELS.md §3.4), read on every response and turned into a slow-down before sending.

use std::time::Duration;

use chrono::{DateTime, Utc};
use noroshi_channel_core::Budget;
use reqwest::header::HeaderMap;
use serde::Deserialize;

/// Each field is a percentage (0–100) of the allowance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub(crate) struct Percentages {
    #[serde(default)]
    pub call_count: f64,
    #[serde(default)]
    pub total_time: f64,
    #[serde(default)]
    pub total_cputime: f64,
}

impl Percentages {
    pub fn max(&self) -> f64 {
        self.call_count.max(self.total_time).max(self.total_cputime)
    }
}

#[derive(Debug, Deserialize)]
struct BucEntry {
    #[serde(flatten)]
    pct: Percentages,
    #[serde(default)]
    estimated_time_to_regain_access: i64,
}

/// One gauge as last seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Gauge {
    pub pct: Percentages,
    /// Minutes until Graph lets calls through again (BUC only; 0 = not blocked).
    pub regain_minutes: i64,
    pub observed_at: DateTime<Utc>,
}

impl Gauge {
    pub fn percent(&self) -> f64 {
        self.pct.max()
    }
    fn blocked_until(&self) -> Option<DateTime<Utc>> {
        (self.regain_minutes > 0)
            .then(|| self.observed_at + chrono::Duration::minutes(self.regain_minutes))
    }
}

/// The three gauges. A header that is absent says nothing (Graph sends them only after
/// enough calls), so an older reading is kept rather than taken as zero.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    pub app: Option<Gauge>,
    pub page: Option<Gauge>,
    pub buc: Option<Gauge>,
}

/// After a reading above the threshold, this long passes before the next request is let
/// through to take a fresh reading: the gauges cover rolling windows of an hour or more.
const SLOWDOWN_HOLD: Duration = Duration::from_secs(60);
/// At 100 % without an `estimated_time_to_regain_access`.
const EXHAUSTED_HOLD: Duration = Duration::from_secs(300);

/// Why and how long the adapter holds back before sending.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Hold {
    pub retry_after: Duration,
    pub reason: String,
    /// Graph itself is refusing calls (100 % or a regain time), not just our slow-down.
    pub hard: bool,
}

impl Usage {
    pub fn observe(&mut self, headers: &HeaderMap, now: DateTime<Utc>) {
        let gauge = |pct: Percentages, regain_minutes: i64| Gauge {
            pct,
            regain_minutes,
            observed_at: now,
        };
        if let Some(p) = header_json::<Percentages>(headers, "x-app-usage") {
            self.app = Some(gauge(p, 0));
        }
        if let Some(p) = header_json::<Percentages>(headers, "x-page-usage") {
            self.page = Some(gauge(p, 0));
        }
        // `{"{page-id}":[{"type":"pages",…},…]}`: keep the worst entry.
        if let Some(map) = header_json::<std::collections::HashMap<String, Vec<BucEntry>>>(
            headers,
            "x-business-use-case-usage",
        ) {
            let worst = map.values().flatten().fold(None::<Gauge>, |acc, e| {
                let g = gauge(e.pct, e.estimated_time_to_regain_access.max(0));
                match acc {
                    Some(a)
                        if a.regain_minutes > g.regain_minutes
                            || (a.regain_minutes == g.regain_minutes
                                && a.percent() >= g.percent()) =>
                    {
                        Some(a)
                    }
                    _ => Some(g),
                }
            });
            if worst.is_some() {
                self.buc = worst;
            }
        }
    }

    fn gauges(&self) -> impl Iterator<Item = (&'static str, &Gauge)> {
        [
            ("X-App-Usage", self.app.as_ref()),
            ("X-Page-Usage", self.page.as_ref()),
            ("X-Business-Use-Case-Usage", self.buc.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, g)| g.map(|g| (n, g)))
    }

    /// `Some` when the adapter should not send now. `urgent_ok` lets disaster work past the
    /// soft slow-down (it has its own reserve), never past Graph's own block.
    pub fn hold(&self, now: DateTime<Utc>, threshold: u8, urgent_ok: bool) -> Option<Hold> {
        let mut worst: Option<Hold> = None;
        for (name, g) in self.gauges() {
            let pct = g.percent();
            let (until, hard) = if let Some(until) = g.blocked_until() {
                (until, true)
            } else if pct >= 100.0 {
                (g.observed_at + EXHAUSTED_HOLD, true)
            } else if pct > f64::from(threshold) && !urgent_ok {
                (g.observed_at + SLOWDOWN_HOLD, false)
            } else {
                continue;
            };
            let Ok(wait) = (until - now).to_std() else {
                continue;
            };
            if wait.is_zero() {
                continue;
            }
            let reason = if hard {
                format!("{name} at {pct:.0}%: Graph is throttling this app or Page")
            } else {
                format!("{name} at {pct:.0}%, above the slow-down threshold of {threshold}%")
            };
            if worst.as_ref().is_none_or(|w| wait > w.retry_after) {
                worst = Some(Hold {
                    retry_after: wait,
                    reason,
                    hard,
                });
            }
        }
        worst
    }

    /// `estimated_time_to_regain_access` from the latest reading, for a throttling error.
    pub fn regain_wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.buc
            .and_then(|g| g.blocked_until())
            .and_then(|until| (until - now).to_std().ok())
            .filter(|d| !d.is_zero())
    }

    pub fn budgets(&self) -> Vec<Budget> {
        self.gauges()
            .map(|(name, g)| Budget {
                name: format!("{name} (% of allowance left)"),
                remaining: Some((100.0 - g.percent()).clamp(0.0, 100.0).round() as i64),
                limit: Some(100),
                resets_at: g.blocked_until(),
            })
            .collect()
    }

    pub fn warnings(&self, threshold: u8) -> Vec<String> {
        self.gauges()
            .filter(|(_, g)| g.percent() > f64::from(threshold) || g.regain_minutes > 0)
            .map(|(name, g)| {
                format!(
                    "Graph usage high: {name} at {:.0}% (call_count {:.0}, total_time {:.0}, \
                     total_cputime {:.0}); posting is slowed down",
                    g.percent(),
                    g.pct.call_count,
                    g.pct.total_time,
                    g.pct.total_cputime
                )
            })
            .collect()
    }
}

fn header_json<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, name: &str) -> Option<T> {
    let value = headers.get(name)?.to_str().ok()?;
    serde_json::from_str(value).ok()
}
