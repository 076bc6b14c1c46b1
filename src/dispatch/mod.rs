//! Dispatch: per-channel worker loops that claim deliveries, pass the rate gate, call the
//! adapter once, and record the outcome.
//!
//! - [`worker`]: each channel has two loops and two pools of permits. The general loop
//!   claims any lane (highest first) with `concurrency` permits; the disaster loop claims
//!   only live disaster alerts (never drills), with `reserved` permits of its own (at least
//!   `disaster_burst`) plus any free general permit. However deep the normal backlog, a
//!   disaster delivery never waits for a normal attempt to finish.
//! - [`gate`]: the rate gate, with a share and a burst kept for live alerts, this
//!   instance's share of the channel's rate, and the channel-wide hold after a platform's
//!   rate-limit answer.
//! - [`outcome`]: pure: an adapter's error class and the attempt → the next step.
//! - [`recorder`]: outcomes committed in batches.
//! - [`upkeep`]: lease renewal, reclaim, sweep, pause and hold sync, instance heartbeat,
//!   credentials.
//! - [`wake`]: in-process wake-ups and `NOTIFY noroshi_work` across instances; loops poll
//!   (`poll_interval_ms`) only as a fallback.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tasks::{Shutdown, Tasks};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use noroshi_channel_core::{
    Audience, Channel, DeliveryContext, DeliveryError, DeliveryUnit, Priority, Recipient,
};
use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

mod gate;
mod outcome;
mod recorder;
mod upkeep;
mod wake;
mod worker;

pub use gate::{GateLane, GateSettings, RateGate};
pub use worker::AlertWorkers;

use crate::config::QueueConfig;
use crate::queue::{self, Claimed, Outcome};
use crate::registry::Registered;
use crate::store::{self, now_ms, Db};

type RecorderItem = (
    queue::Finished,
    tokio::sync::oneshot::Sender<Result<bool, String>>,
);
type RecorderRx = tokio::sync::mpsc::Receiver<RecorderItem>;

/// The stored units of one announcement on one channel.
type Units = Arc<Vec<serde_json::Value>>;

/// One channel's runtime: its adapter, pools, rate gate and wake-ups.
pub struct ChannelRuntime {
    pub channel: Arc<dyn Channel>,
    pub name: String,
    pub audience: Audience,
    wake_general: Notify,
    wake_disaster: Notify,
    general: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    /// Normal outcomes waiting for their commit, at most `concurrency`: a worker hands its
    /// place at the platform on once its outcome has one of these (see `attempt_inner`).
    committing: Arc<Semaphore>,
    pub concurrency: usize,
    pub reserved_workers: usize,
    pub gate: RateGate,
    pub rate_per_second: f64,
    pub disaster_reserve: f64,
    max_attempts: i32,
    paused: AtomicBool,
    /// In `[disaster] pause_channels`: while a live alert is active this channel sends
    /// only live disaster work.
    pub pauses_in_disaster: bool,
    disaster_mode: AtomicBool,
    in_flight: AtomicUsize,
    /// The last successful delivery (ms), kept here and written to the database by the
    /// heartbeat: one write per tick instead of one per delivery.
    last_success_ms: AtomicI64,
    flushed_success_ms: AtomicI64,
}

impl ChannelRuntime {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
    /// Disaster mode holds this channel's other work now.
    pub fn in_disaster_mode(&self) -> bool {
        self.disaster_mode.load(Ordering::SeqCst)
    }
}

/// Settings the dispatcher needs beside the channels.
#[derive(Clone)]
pub struct DispatchSettings {
    pub lease_ms: i64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub poll: Duration,
    pub expand_batch: i64,
    pub public_base_url: String,
    /// `[disaster] pause_channels`.
    pub pause_in_disaster: Vec<String>,
    /// `[queue] log_retention_days` in ms (0: keep every attempt).
    pub log_retention_ms: i64,
}

impl DispatchSettings {
    pub fn from_config(q: &QueueConfig, public_base_url: String) -> Self {
        DispatchSettings {
            lease_ms: (q.lease_secs * 1000) as i64,
            retry_base_ms: q.retry_base_ms,
            retry_max_ms: q.retry_max_secs * 1000,
            poll: Duration::from_millis(q.poll_interval_ms),
            expand_batch: q.expand_batch as i64,
            public_base_url,
            pause_in_disaster: Vec::new(),
            log_retention_ms: q.log_retention_days as i64 * 86_400_000,
        }
    }
}

pub struct Dispatcher {
    pub db: Db,
    pub channels: Vec<Arc<ChannelRuntime>>,
    pub owner: String,
    settings: DispatchSettings,
    stop: Shutdown,
    /// Given when the shutdown grace has passed: attempts still running are dropped.
    abort: Shutdown,
    /// Renderings by (announcement, channel): units are read once per announcement, not
    /// once per email copy.
    renderings: Mutex<HashMap<(String, String), Units>>,
    announcements: Mutex<HashMap<String, Arc<AnnouncementInfo>>>,
    /// Deliveries a live task of this process holds: the only leases the heartbeat renews.
    live: Mutex<HashSet<i64>>,
    /// Fingerprints of the rotated credentials already saved, per channel.
    saved_credentials: Mutex<HashMap<String, String>>,
    /// Outcomes on their way to the database, committed in batches by `run_recorder`.
    recorder: tokio::sync::mpsc::Sender<RecorderItem>,
    /// Kept here so a restarted recorder takes up the same queue.
    recorder_rx: Arc<tokio::sync::Mutex<RecorderRx>>,
}

/// Marks a claimed delivery as held by a live task; dropping it (even in a panic) lets the
/// heartbeat stop renewing the lease and frees the channel's slot.
struct LiveGuard {
    dispatcher: Arc<Dispatcher>,
    channel: Arc<ChannelRuntime>,
    id: i64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.dispatcher.live.lock().unwrap().remove(&self.id);
        self.channel.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct AnnouncementInfo {
    exercise: bool,
    request_id: Option<String>,
    /// When it was accepted, or its scheduled time if later (ms): latency counts from here.
    due_at: i64,
    /// Whether this process already moved the announcement to `sending`.
    marked_sending: AtomicBool,
}

impl Dispatcher {
    pub fn new(
        db: Db,
        registered: Vec<Registered>,
        queue_cfg: &QueueConfig,
        settings: DispatchSettings,
        paused: &[String],
        shutdown: Shutdown,
    ) -> Arc<Dispatcher> {
        let channels = registered
            .into_iter()
            .map(|r| {
                let limits = r.channel.limits();
                let d = r.delivery;
                let concurrency = d.concurrency.unwrap_or(limits.concurrency).max(1);
                let reserve = d
                    .disaster_reserve
                    .unwrap_or(queue_cfg.disaster_reserve)
                    .clamp(0.0, 0.9);
                let disaster_burst = d.disaster_burst.unwrap_or(queue_cfg.disaster_burst).max(1);
                // Enough reserved workers for a burst of alerts at once.
                let reserved_workers =
                    ((concurrency as f64 * reserve).ceil() as usize).max(disaster_burst as usize);
                let rate = d.rate_per_second.unwrap_or(limits.rate_per_second);
                let burst = d.burst.unwrap_or(limits.burst).max(1);
                let name = r.channel.name().to_string();
                Arc::new(ChannelRuntime {
                    audience: r.channel.audience(),
                    paused: AtomicBool::new(paused.contains(&name)),
                    pauses_in_disaster: settings.pause_in_disaster.contains(&name),
                    disaster_mode: AtomicBool::new(false),
                    name,
                    channel: r.channel,
                    wake_general: Notify::new(),
                    wake_disaster: Notify::new(),
                    general: Arc::new(Semaphore::new(concurrency)),
                    reserved: Arc::new(Semaphore::new(reserved_workers)),
                    committing: Arc::new(Semaphore::new(concurrency)),
                    concurrency,
                    reserved_workers,
                    gate: RateGate::new(GateSettings {
                        rate,
                        burst,
                        reserve,
                        disaster_burst,
                    }),
                    rate_per_second: rate,
                    disaster_reserve: reserve,
                    max_attempts: d.max_attempts.unwrap_or(queue_cfg.max_attempts).max(1) as i32,
                    in_flight: AtomicUsize::new(0),
                    last_success_ms: AtomicI64::new(0),
                    flushed_success_ms: AtomicI64::new(0),
                })
            })
            .collect();
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (recorder, recorder_rx) = tokio::sync::mpsc::channel(4096);
        Arc::new(Dispatcher {
            db,
            channels,
            owner,
            settings,
            stop: shutdown,
            abort: Shutdown::default(),
            renderings: Mutex::new(HashMap::new()),
            announcements: Mutex::new(HashMap::new()),
            live: Mutex::new(HashSet::new()),
            saved_credentials: Mutex::new(HashMap::new()),
            recorder,
            recorder_rx: Arc::new(tokio::sync::Mutex::new(recorder_rx)),
        })
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<ChannelRuntime>> {
        self.channels.iter().find(|c| c.name == name)
    }

    pub fn set_paused(&self, channel: &str, paused: bool) {
        if let Some(c) = self.channel(channel) {
            c.paused.store(paused, Ordering::SeqCst);
            if !paused {
                c.wake_disaster.notify_one();
                c.wake_general.notify_one();
            }
        }
    }

    /// Disaster mode on or off: the channels in `[disaster] pause_channels` send only live
    /// disaster work while it is on, and take up the rest when it ends.
    pub fn set_disaster_mode(&self, on: bool) {
        for c in self.channels.iter().filter(|c| c.pauses_in_disaster) {
            let was = c.disaster_mode.swap(on, Ordering::SeqCst);
            if was != on {
                if on {
                    tracing::warn!(channel = %c.name, "Disaster mode: only live disaster work is sent on this channel until the alert ends");
                } else {
                    tracing::info!(channel = %c.name, "Disaster mode ended: other work resumes");
                    c.wake_general.notify_one();
                }
            }
        }
    }

    /// Reads whether any live alert is active and sets disaster mode to match. Called at
    /// once by whoever changed an alert, and by every instance's heartbeat.
    pub async fn sync_disaster_mode(&self) {
        match store::alerts::any_active(&self.db, now_ms()).await {
            Ok(on) => self.set_disaster_mode(on),
            Err(e) => tracing::warn!(error = %e, "Could not read the active alerts"),
        }
    }

    /// Starts every loop under `tasks`' supervision: two per channel, the recorder, upkeep
    /// and (PostgreSQL) the wake-up listener.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        for c in &self.channels {
            for disaster in [false, true] {
                let (d, c) = (self.clone(), c.clone());
                let name = format!(
                    "{}:{}",
                    c.name,
                    if disaster { "disaster-loop" } else { "loop" }
                );
                tasks.spawn(name, move || d.clone().run_loop(c.clone(), disaster));
            }
        }
        for c in &self.channels {
            if let Some(every) = c.channel.refresh_interval() {
                let (d, c) = (self.clone(), c.clone());
                let name = format!("{}:refresh", c.name);
                tasks.spawn(name, move || d.clone().refresh_loop(c.clone(), every));
            }
        }
        let d = self.clone();
        tasks.spawn("upkeep", move || d.clone().heartbeat());
        let d = self.clone();
        tasks.spawn("recorder", move || {
            let d = d.clone();
            async move {
                let rx = d.recorder_rx.clone();
                let mut rx = rx.lock().await;
                d.run_recorder(&mut rx).await
            }
        });
        if let crate::store::Pool::Postgres(pool) = &self.db.pool {
            let (d, pool) = (self.clone(), pool.clone());
            tasks.spawn("work-notifications", move || {
                d.clone().listen_for_work(pool.clone())
            });
        }
    }

    /// Waits until no attempt of this process runs, renewing their leases meanwhile so
    /// no other instance takes them over.
    async fn wait_for_attempts(&self, deadline: tokio::time::Instant) {
        let mut last_renewal = tokio::time::Instant::now();
        while self.channels.iter().any(|c| c.in_flight() > 0)
            && tokio::time::Instant::now() < deadline
        {
            if last_renewal.elapsed() > Duration::from_secs(1) {
                let live: Vec<i64> = self.live.lock().unwrap().iter().copied().collect();
                let _ = queue::extend_leases(&self.db, &self.owner, &live, self.settings.lease_ms)
                    .await;
                last_renewal = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops claiming; attempts that had not started their send (waiting at the gate) are
    /// given back untouched; sends already on the wire may finish within `grace`, their
    /// leases renewed meanwhile. After `grace`, attempts still running are dropped, and
    /// only once they are gone are their leases released (as uncertain, so the next
    /// attempt checks first where the platform allows). No lease is ever released while
    /// its send still runs.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        self.wait_for_attempts(deadline).await;
        if self.channels.iter().any(|c| c.in_flight() > 0) {
            let running: usize = self.channels.iter().map(|c| c.in_flight()).sum();
            tracing::warn!(
                count = running,
                grace_secs = grace.as_secs(),
                "Attempts still running after the shutdown grace are being stopped"
            );
            self.abort.cancel();
            // Dropping an attempt is immediate at its next await; wait for every one.
            self.wait_for_attempts(tokio::time::Instant::now() + Duration::from_secs(5))
                .await;
        }
        self.save_rotated_credentials().await;
        // Whatever is still leased goes back to the queue now rather than when its lease
        // expires, so another instance (or the next start) takes it over at once.
        match queue::reclaim(&self.db, queue::Reclaim::OwnedBy(&self.owner)).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "Released deliveries still in flight at shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "Could not release leases at shutdown; they expire on their own")
            }
        }
        self.flush_successes().await;
        if self.db.is_postgres() {
            let _ = store::channels::instance_gone(&self.db, &self.owner).await;
        }
    }
}
