//! `/metrics`: what the daemon did and what waits, in the Prometheus text format (version
//! 0.0.4, `prometheus-client`). `docs/observability.md` lists every metric.
//!
//! What it costs: counters and histograms are bumped where outcomes are already handled in
//! batches (the recorder, after a batch commits), a few atomic adds per delivery and no
//! statement. What waits (queue depth, channel states, disaster mode) is read from the
//! database when Prometheus scrapes, at most once every [`REFRESH`], with one grouped query
//! each. No label carries a secret or anything a submitter typed: channel names, lanes,
//! outcome and error classes (fixed words), the version.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::queue::{Finished, Outcome};
use crate::status::{ChannelState, Priority};

/// Scrape-time figures are read from the database at most this often (a second Prometheus,
/// or a person's `curl`, costs no extra query).
pub const REFRESH: Duration = Duration::from_secs(5);

/// Delivery latency buckets, in seconds: 10 ms (a disaster alert on a quiet channel) to an
/// hour (a large fan-out at a platform's pace, or retries).
const LATENCY_BUCKETS: [f64; 17] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLane {
    channel: String,
    lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: String,
    lane: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    channel: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    channel: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReachLabels {
    channel: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
    /// The commit the binary was built from (build.rs), `unknown` without one.
    commit: &'static str,
}

type Latency = Family<ChannelLane, Histogram, fn() -> Histogram>;

/// Every metric, registered once.
struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    attempts: Family<ChannelLane, Counter>,
    retries: Family<RetryLabels, Counter>,
    holds: Family<ChannelLabel, Counter>,
    from_accepted: Latency,
    from_claim: Latency,
    reach: Family<ReachLabels, Counter>,
    firings: Family<ResultLabel, Counter>,
    queue_depth: Family<ChannelLane, Gauge>,
    in_flight: Family<ChannelLabel, Gauge>,
    channel_state: Family<StateLabels, Gauge>,
    disaster_mode: Family<ChannelLabel, Gauge>,
    alert_active: Gauge,
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut m = Metrics {
            registry: Registry::with_prefix("noroshi"),
            deliveries: Family::default(),
            attempts: Family::default(),
            retries: Family::default(),
            holds: Family::default(),
            from_accepted: Family::new_with_constructor(latency as fn() -> Histogram),
            from_claim: Family::new_with_constructor(latency as fn() -> Histogram),
            reach: Family::default(),
            firings: Family::default(),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            channel_state: Family::default(),
            disaster_mode: Family::default(),
            alert_active: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "deliveries",
            "Deliveries finished, by channel, lane and outcome (sent, failed, skipped)",
            m.deliveries.clone(),
        );
        r.register(
            "delivery_attempts",
            "Delivery attempts whose outcome was recorded, by channel and lane",
            m.attempts.clone(),
        );
        r.register(
            "delivery_retries",
            "Attempts that will be tried again, by channel and error class",
            m.retries.clone(),
        );
        r.register(
            "rate_limit_holds",
            "Rate-limit answers from a platform that held the whole channel",
            m.holds.clone(),
        );
        r.register_with_unit(
            "delivery_latency_from_accepted",
            "From acceptance (or a scheduled announcement's time) to a delivery's recorded success",
            Unit::Seconds,
            m.from_accepted.clone(),
        );
        r.register_with_unit(
            "delivery_latency_from_claim",
            "From a worker's claim to the recorded success of that attempt (rate gate and send)",
            Unit::Seconds,
            m.from_claim.clone(),
        );
        r.register(
            "reach_collections",
            "Reach collections per channel, by result (ok, failed)",
            m.reach.clone(),
        );
        r.register(
            "schedule_firings",
            "Recurring posts fired, by result (posted, skipped, refused)",
            m.firings.clone(),
        );
        r.register(
            "queue_depth",
            "Deliveries waiting or in flight, by channel and lane (read from the database at scrape time)",
            m.queue_depth.clone(),
        );
        r.register(
            "deliveries_in_flight",
            "Attempts this instance is running now, by channel",
            m.in_flight.clone(),
        );
        r.register(
            "channel_state",
            "1 for each channel's current state (ok, degraded, paused), 0 for the others",
            m.channel_state.clone(),
        );
        r.register(
            "disaster_mode",
            "1 while a live alert holds this channel's other work ([disaster] pause_channels)",
            m.disaster_mode.clone(),
        );
        r.register(
            "disaster_alert_active",
            "1 while any live disaster alert is active",
            m.alert_active.clone(),
        );
        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("NOROSHI_COMMIT"),
            })
            .set(1);
        r.register("build_info", "The running version and its commit (always 1)", build);
        m
    })
}

fn lane(lane: i32) -> &'static str {
    Priority::from_lane(lane).as_str()
}

/// Counts a batch of outcomes the recorder committed (`recorded[i]`: item `i` was written;
/// false when its lease had been lost and another worker owns it). `due_at` gives an
/// announcement's acceptance time, or its scheduled time, in ms, when known.
pub fn recorded(items: &[Finished], recorded: &[bool], due_at: impl Fn(&str) -> Option<i64>) {
    let m = metrics();
    let now = crate::store::now_ms();
    for (item, _) in items.iter().zip(recorded).filter(|(_, ok)| **ok) {
        let d = &item.delivery;
        let at = ChannelLane {
            channel: d.channel.clone(),
            lane: lane(d.lane),
        };
        let outcome = match &item.outcome {
            Outcome::Sent { .. } => Some("sent"),
            Outcome::Failed { .. } => Some("failed"),
            Outcome::Cancelled { .. } => Some("skipped"),
            Outcome::Retry { .. } => None,
        };
        if !matches!(item.outcome, Outcome::Cancelled { .. }) {
            m.attempts.get_or_create(&at).inc();
        }
        if let Outcome::Retry { class, .. } = &item.outcome {
            m.retries
                .get_or_create(&RetryLabels {
                    channel: d.channel.clone(),
                    class,
                })
                .inc();
            if *class == "rate_limited" {
                m.holds
                    .get_or_create(&ChannelLabel {
                        channel: d.channel.clone(),
                    })
                    .inc();
            }
        }
        if let Some(outcome) = outcome {
            m.deliveries
                .get_or_create(&DeliveryLabels {
                    channel: d.channel.clone(),
                    lane: at.lane,
                    outcome,
                })
                .inc();
        }
        if matches!(item.outcome, Outcome::Sent { .. }) {
            let seconds = |from: i64| (now - from).max(0) as f64 / 1000.0;
            m.from_claim
                .get_or_create(&at)
                .observe(seconds(item.started_at));
            if let Some(due) = due_at(&d.announcement_id) {
                m.from_accepted.get_or_create(&at).observe(seconds(due));
            }
        }
    }
}

/// One reach collection of `channel`: ok or failed.
pub fn reach_collected(channel: &str, ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    metrics()
        .reach
        .get_or_create(&ReachLabels {
            channel: channel.to_string(),
            result,
        })
        .inc();
}

/// What a schedule's firing did.
#[derive(Clone, Copy, Debug)]
pub enum Firing {
    /// An announcement was accepted.
    Posted,
    /// Missed while the daemon was down, and `catch_up = skip`.
    Skipped,
    /// The stored submission no longer passes.
    Refused,
}

pub fn schedule_fired(result: Firing) {
    let result = match result {
        Firing::Posted => "posted",
        Firing::Skipped => "skipped",
        Firing::Refused => "refused",
    };
    metrics()
        .firings
        .get_or_create(&ResultLabel { result })
        .inc();
}

/// When the scrape-time figures were last read.
static LAST_REFRESH: tokio::sync::Mutex<Option<Instant>> = tokio::sync::Mutex::const_new(None);

/// The page Prometheus scrapes: scrape-time figures brought up to date (at most every
/// [`REFRESH`]; on a database error the last ones stay and the counters are still served),
/// then everything encoded.
pub async fn page(state: &crate::api::AppState) -> String {
    let m = metrics();
    let mut last = LAST_REFRESH.lock().await;
    if last.is_none_or(|t| t.elapsed() >= REFRESH) {
        match refresh(m, state).await {
            Ok(()) => *last = Some(Instant::now()),
            Err(e) => tracing::warn!(error = %e, "Could not read the queue for /metrics"),
        }
    }
    for c in &state.dispatcher.channels {
        let label = ChannelLabel {
            channel: c.name.clone(),
        };
        m.in_flight.get_or_create(&label).set(c.in_flight() as i64);
        m.disaster_mode
            .get_or_create(&label)
            .set(c.in_disaster_mode() as i64);
    }
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry);
    text
}

/// The `Content-Type` of [`page`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Queue depth (one grouped query), channel states as the channel view shows them, and
/// whether a live alert is active.
async fn refresh(m: &Metrics, state: &crate::api::AppState) -> crate::store::Result<()> {
    use crate::store;
    let depth = crate::queue::depth(&state.db).await?;
    let states = store::channels::all(&state.db).await?;
    let reach_runs = store::reach::latest_runs(&state.db).await?;
    let alert = store::alerts::any_active(&state.db, store::now_ms()).await?;
    // Every enabled channel and lane has a series, 0 when nothing waits.
    for c in &state.dispatcher.channels {
        for p in [Priority::Normal, Priority::Urgent, Priority::Disaster] {
            m.queue_depth
                .get_or_create(&ChannelLane {
                    channel: c.name.clone(),
                    lane: p.as_str(),
                })
                .set(0);
        }
    }
    for (channel, l, n) in depth {
        m.queue_depth
            .get_or_create(&ChannelLane {
                channel,
                lane: lane(l),
            })
            .set(n);
    }
    for c in &state.dispatcher.channels {
        let warnings = c.channel.status().warnings;
        let reach_error = reach_runs
            .iter()
            .find(|(name, ..)| name == &c.name)
            .and_then(|(_, _, _, e)| e.as_deref());
        let stored = states.iter().find(|s| s.channel == c.name);
        let (shown, _) = crate::api::channels::shown_state(
            stored,
            warnings.first().map(String::as_str),
            reach_error,
        );
        for s in ChannelState::ALL {
            m.channel_state
                .get_or_create(&StateLabels {
                    channel: c.name.clone(),
                    state: s.as_str(),
                })
                .set((s.as_str() == shown) as i64);
        }
    }
    m.alert_active.set(alert as i64);
    Ok(())
}
