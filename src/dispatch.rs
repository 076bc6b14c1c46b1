//! Dispatch: per-channel worker loops that claim deliveries, pass the rate gate, call the
//! adapter once, and record the outcome.
//!
//! Each channel has two loops and two pools of permits:
//! - the general loop claims any lane (highest first) with `concurrency` permits;
//! - the disaster loop claims only the disaster lane, with `reserved` permits of its own
//!   plus any free general permit. However deep the normal backlog, a disaster delivery
//!   never waits for a normal attempt to finish.
//!
//! The rate gate works the same way: normal and urgent work must pass a limiter set to
//! `(1 - reserve) × rate` and then the channel's full-rate limiter; disaster work passes only
//! the full-rate limiter. Normal traffic can therefore never use the share kept for
//! disaster traffic.
//!
//! Loops sleep until woken (the API wakes them when it inserts work) or until the fallback
//! poll interval passes (work inserted by another instance, retries coming due).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use noroshi_channel_core::{
    Audience, Channel, DeliveryContext, DeliveryError, DeliveryUnit, ErrorClass, Priority,
    Recipient,
};
use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util_shim::CancellationToken;

use crate::config::QueueConfig;
use crate::queue::{self, Claimed, Outcome};
use crate::registry::Registered;
use crate::store::{self, now_ms, Db};

/// A minimal cancellation token (tokio-util's, without the dependency).
mod tokio_util_shim {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Clone, Default)]
    pub struct CancellationToken(Arc<(AtomicBool, Notify)>);
    impl CancellationToken {
        pub fn cancel(&self) {
            self.0 .0.store(true, Ordering::SeqCst);
            self.0 .1.notify_waiters();
        }
        pub fn is_cancelled(&self) -> bool {
            self.0 .0.load(Ordering::SeqCst)
        }
        pub async fn cancelled(&self) {
            loop {
                let notified = self.0 .1.notified();
                if self.is_cancelled() {
                    return;
                }
                notified.await;
            }
        }
    }
}

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
    pub concurrency: usize,
    pub reserved_workers: usize,
    gate: RateGate,
    pub rate_per_second: f64,
    pub disaster_reserve: f64,
    max_attempts: i32,
    paused: AtomicBool,
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
        }
    }
}

pub struct Dispatcher {
    pub db: Db,
    pub channels: Vec<Arc<ChannelRuntime>>,
    pub owner: String,
    settings: DispatchSettings,
    stop: CancellationToken,
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
    recorder_rx: Mutex<Option<RecorderRx>>,
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
    /// Whether this process already moved the announcement to `sending`.
    marked_sending: AtomicBool,
}

/// A channel's rate gate with a share kept for disaster work.
///
/// Normal and urgent work must pass `normal` (`(1 - reserve) × rate`) and then `all`
/// (the full rate); disaster work passes `all` only. Normal work can therefore use at most
/// its share of `all`, and the rest is always there for disaster work.
pub struct RateGate {
    all: DefaultDirectRateLimiter,
    normal: DefaultDirectRateLimiter,
}

impl RateGate {
    pub fn new(rate: f64, burst: u32, reserve: f64) -> RateGate {
        let normal_burst = ((burst as f64) * (1.0 - reserve)).floor().max(1.0) as u32;
        RateGate {
            all: limiter(rate, burst),
            normal: limiter(rate * (1.0 - reserve), normal_burst),
        }
    }

    /// Waits until one request in `priority`'s lane may go.
    pub async fn wait(&self, priority: Priority) {
        if priority < Priority::Disaster {
            self.normal.until_ready().await;
        }
        self.all.until_ready().await;
    }

    /// Takes a request's budget now if there is some (for tests and diagnostics).
    pub fn try_pass(&self, priority: Priority) -> bool {
        if priority < Priority::Disaster && self.normal.check().is_err() {
            return false;
        }
        self.all.check().is_ok()
    }
}

fn limiter(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    let rate = rate.max(0.001);
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("non-zero"));
    RateLimiter::direct(quota)
}

impl Dispatcher {
    pub fn new(
        db: Db,
        registered: Vec<Registered>,
        queue_cfg: &QueueConfig,
        settings: DispatchSettings,
        paused: &[String],
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
                let reserved_workers = ((concurrency as f64 * reserve).ceil() as usize).max(1);
                let rate = d.rate_per_second.unwrap_or(limits.rate_per_second);
                let burst = d.burst.unwrap_or(limits.burst).max(1);
                let name = r.channel.name().to_string();
                Arc::new(ChannelRuntime {
                    audience: r.channel.audience(),
                    paused: AtomicBool::new(paused.contains(&name)),
                    name,
                    channel: r.channel,
                    wake_general: Notify::new(),
                    wake_disaster: Notify::new(),
                    general: Arc::new(Semaphore::new(concurrency)),
                    reserved: Arc::new(Semaphore::new(reserved_workers)),
                    concurrency,
                    reserved_workers,
                    gate: RateGate::new(rate, burst, reserve),
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
            stop: CancellationToken::default(),
            renderings: Mutex::new(HashMap::new()),
            announcements: Mutex::new(HashMap::new()),
            live: Mutex::new(HashSet::new()),
            saved_credentials: Mutex::new(HashMap::new()),
            recorder,
            recorder_rx: Mutex::new(Some(recorder_rx)),
        })
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<ChannelRuntime>> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// Wakes the loops of `channel` for work just inserted in `lane`.
    /// Wakes the loops of `channel` for work just inserted in `priority`'s lane, here and,
    /// on PostgreSQL, in every other instance (`NOTIFY noroshi_work`).
    pub fn wake(&self, channel: &str, priority: Priority) {
        self.wake_local(channel, priority);
        if let crate::store::Pool::Postgres(pool) = &self.db.pool {
            let (pool, payload) = (pool.clone(), format!("{}:{channel}", priority.lane()));
            tokio::spawn(async move {
                if let Err(e) = sqlx::query("SELECT pg_notify('noroshi_work', $1)")
                    .bind(payload)
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "Could not notify other instances; they poll");
                }
            });
        }
    }

    fn wake_local(&self, channel: &str, priority: Priority) {
        if let Some(c) = self.channel(channel) {
            if priority == Priority::Disaster {
                c.wake_disaster.notify_one();
            }
            c.wake_general.notify_one();
        }
    }

    /// PostgreSQL: wakes this instance's loops when another instance inserts work, so the
    /// poll interval is only a fallback there too.
    async fn listen_for_work(self: Arc<Self>, pool: sqlx::PgPool) {
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                l.listen("noroshi_work").await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot listen for work notifications; polling meanwhile");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            };
            loop {
                let n = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    n = listener.recv() => n,
                };
                match n {
                    Ok(n) => {
                        if let Some((lane, channel)) = n.payload().split_once(':') {
                            let lane = lane.parse().unwrap_or(0);
                            self.wake_local(channel, Priority::from_lane(lane));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Work notifications interrupted; reconnecting");
                        break;
                    }
                }
            }
        }
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

    /// Starts every loop: two per channel, the lease heartbeat and the reclaimer.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for c in &self.channels {
            let (d, c1) = (self.clone(), c.clone());
            tasks.push(tokio::spawn(async move { d.run_loop(c1, false).await }));
            let (d, c2) = (self.clone(), c.clone());
            tasks.push(tokio::spawn(async move { d.run_loop(c2, true).await }));
        }
        let d = self.clone();
        tasks.push(tokio::spawn(async move { d.heartbeat().await }));
        if let Some(rx) = self.recorder_rx.lock().unwrap().take() {
            let d = self.clone();
            tasks.push(tokio::spawn(async move { d.run_recorder(rx).await }));
        }
        if let crate::store::Pool::Postgres(pool) = &self.db.pool {
            let (d, pool) = (self.clone(), pool.clone());
            tasks.push(tokio::spawn(async move { d.listen_for_work(pool).await }));
        }
        tasks
    }

    /// Stops claiming; waits up to `grace` for attempts in flight to finish.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let mut last_renewal = tokio::time::Instant::now();
        while self.channels.iter().any(|c| c.in_flight() > 0)
            && tokio::time::Instant::now() < deadline
        {
            // The heartbeat has stopped; keep the leases of attempts still running alive,
            // so no other instance takes them over and sends them again meanwhile.
            if last_renewal.elapsed() > Duration::from_secs(1) {
                let live: Vec<i64> = self.live.lock().unwrap().iter().copied().collect();
                let _ = queue::extend_leases(&self.db, &self.owner, &live, self.settings.lease_ms)
                    .await;
                last_renewal = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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
    }

    async fn flush_successes(&self) {
        for c in &self.channels {
            let last = c.last_success_ms.load(Ordering::SeqCst);
            if last > c.flushed_success_ms.load(Ordering::SeqCst)
                && store::channels::record_success(&self.db, &c.name, last)
                    .await
                    .is_ok()
            {
                c.flushed_success_ms.store(last, Ordering::SeqCst);
            }
        }
    }

    /// Keeps credentials a platform rotated (X's OAuth 2.0 refresh token) in the database,
    /// so the next start uses them instead of the configured ones, which no longer work.
    async fn save_rotated_credentials(&self) {
        use noroshi_channel_core::ExposeSecret;
        use sha2::Digest;
        for c in &self.channels {
            let Some(creds) = c.channel.rotated_credentials() else {
                continue;
            };
            let digest = hex::encode(sha2::Sha256::digest(creds.expose_secret().as_bytes()));
            if self.saved_credentials.lock().unwrap().get(&c.name) == Some(&digest) {
                continue;
            }
            match store::channels::save_credentials(&self.db, &c.name, creds.expose_secret()).await
            {
                Ok(()) => {
                    tracing::info!(channel = %c.name, "Saved credentials the platform rotated");
                    self.saved_credentials
                        .lock()
                        .unwrap()
                        .insert(c.name.clone(), digest);
                }
                Err(e) => tracing::error!(channel = %c.name, error = %e,
                    "Could not save rotated credentials; a restart would use the configured ones"),
            }
        }
    }

    /// Another instance may have refreshed (and so rotated) a channel's credentials: take
    /// what it saved, or this instance would present a refresh token that no longer works.
    async fn load_saved_credentials(&self) {
        use noroshi_channel_core::{ExposeSecret, SecretString};
        use sha2::Digest;
        let Ok(saved) = store::channels::saved_credentials(&self.db).await else {
            return;
        };
        for (name, creds) in saved {
            let Some(c) = self.channel(&name) else {
                continue;
            };
            let digest = hex::encode(sha2::Sha256::digest(creds.as_bytes()));
            let known = self.saved_credentials.lock().unwrap().get(&name) == Some(&digest);
            let ours = c
                .channel
                .rotated_credentials()
                .map(|r| hex::encode(sha2::Sha256::digest(r.expose_secret().as_bytes())))
                == Some(digest.clone());
            if known || ours {
                continue;
            }
            if c.channel.restore_credentials(&SecretString::from(creds)) {
                tracing::info!(channel = %name, "Took the credentials another instance saved");
            }
            self.saved_credentials.lock().unwrap().insert(name, digest);
        }
    }

    /// Paused flags follow the database, so a resume (or a pause) on one instance reaches
    /// every instance.
    async fn sync_paused(&self) {
        if let Ok(states) = store::channels::all(&self.db).await {
            for c in &self.channels {
                let paused = states
                    .iter()
                    .any(|s| s.channel == c.name && s.state == "paused");
                if c.paused.swap(paused, Ordering::SeqCst) && !paused {
                    c.wake_disaster.notify_one();
                    c.wake_general.notify_one();
                }
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let every = Duration::from_millis((self.settings.lease_ms / 3).clamp(200, 2000) as u64);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let live: Vec<i64> = self.live.lock().unwrap().iter().copied().collect();
            if let Err(e) =
                queue::extend_leases(&self.db, &self.owner, &live, self.settings.lease_ms).await
            {
                tracing::warn!(error = %e, "Could not renew delivery leases");
            }
            match queue::reclaim(&self.db, queue::Reclaim::Expired).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(count = n, "Reclaimed deliveries whose lease expired");
                    for c in &self.channels {
                        c.wake_disaster.notify_one();
                        c.wake_general.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Could not reclaim expired leases"),
            }
            if let Err(e) = queue::sweep(&self.db).await {
                tracing::warn!(error = %e, "Could not sweep finished announcements");
            }
            self.sync_paused().await;
            self.flush_successes().await;
            self.save_rotated_credentials().await;
            self.load_saved_credentials().await;
            // Keep the caches small: a few recent announcements are all that is hot.
            let mut r = self.renderings.lock().unwrap();
            if r.len() > 256 {
                r.clear();
            }
            drop(r);
            let mut a = self.announcements.lock().unwrap();
            if a.len() > 1024 {
                a.clear();
            }
        }
    }

    async fn acquire(&self, c: &ChannelRuntime, disaster: bool) -> Option<OwnedSemaphorePermit> {
        if disaster {
            // A reserved permit, or any free general one, whichever comes first.
            tokio::select! {
                p = c.reserved.clone().acquire_owned() => p.ok(),
                p = c.general.clone().acquire_owned() => p.ok(),
                _ = self.stop.cancelled() => None,
            }
        } else {
            tokio::select! {
                p = c.general.clone().acquire_owned() => p.ok(),
                _ = self.stop.cancelled() => None,
            }
        }
    }

    async fn run_loop(self: Arc<Self>, c: Arc<ChannelRuntime>, disaster: bool) {
        let min_lane = if disaster {
            Priority::Disaster.lane()
        } else {
            0
        };
        let wake = if disaster {
            &c.wake_disaster
        } else {
            &c.wake_general
        };
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if c.is_paused() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            let Some(first) = self.acquire(&c, disaster).await else {
                return;
            };
            let mut permits = vec![first];
            let pool = if disaster { &c.reserved } else { &c.general };
            while permits.len() < 64 {
                match pool.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let claimed = queue::claim(
                &self.db,
                &c.name,
                min_lane,
                permits.len() as i64,
                &self.owner,
                self.settings.lease_ms,
            )
            .await;
            let claimed = match claimed {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(channel = %c.name, error = %e, "Could not claim deliveries");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(permits);
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            for (d, permit) in claimed.into_iter().zip(permits) {
                c.in_flight.fetch_add(1, Ordering::SeqCst);
                self.live.lock().unwrap().insert(d.id);
                let guard = LiveGuard {
                    dispatcher: self.clone(),
                    channel: c.clone(),
                    id: d.id,
                };
                tokio::spawn(async move {
                    let _guard = guard;
                    let _permit = permit;
                    _guard.dispatcher.attempt(&_guard.channel, d).await;
                });
            }
        }
    }

    fn backoff_ms(&self, attempts: i32) -> i64 {
        let exp = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << (attempts.clamp(1, 30) - 1) as u32)
            .min(self.settings.retry_max_ms)
            .max(1);
        // Full jitter: spread retries over the whole window so a recovering platform is not
        // hit by every failed delivery at the same instant.
        rand::thread_rng().gen_range(0..=exp) as i64
    }

    async fn units(
        &self,
        announcement_id: &str,
        channel: &str,
    ) -> Result<Arc<Vec<serde_json::Value>>, String> {
        let key = (announcement_id.to_string(), channel.to_string());
        if let Some(u) = self.renderings.lock().unwrap().get(&key) {
            return Ok(u.clone());
        }
        let text = store::announcements::rendering(&self.db, announcement_id, channel)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no rendering stored for this channel".to_string())?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let units = value
            .get("units")
            .and_then(|u| u.as_array())
            .cloned()
            .ok_or_else(|| "stored rendering has no units".to_string())?;
        let units = Arc::new(units);
        self.renderings.lock().unwrap().insert(key, units.clone());
        Ok(units)
    }

    async fn announcement_info(&self, id: &str) -> Result<Arc<AnnouncementInfo>, String> {
        if let Some(a) = self.announcements.lock().unwrap().get(id) {
            return Ok(a.clone());
        }
        let row = store::announcements::get(&self.db, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "announcement not found".to_string())?;
        let info = Arc::new(AnnouncementInfo {
            exercise: row.exercise,
            request_id: row.request_id,
            marked_sending: AtomicBool::new(false),
        });
        self.announcements
            .lock()
            .unwrap()
            .insert(id.to_string(), info.clone());
        Ok(info)
    }

    /// One attempt, logged under the request id of the API call that accepted the
    /// announcement, so an operator can follow one request to every delivery attempt.
    async fn attempt(&self, c: &ChannelRuntime, d: Claimed) {
        use tracing::Instrument;
        let request_id = self
            .announcement_info(&d.announcement_id)
            .await
            .ok()
            .and_then(|i| i.request_id.clone())
            .unwrap_or_default();
        let span = tracing::info_span!("attempt", request_id = %request_id);
        self.attempt_inner(c, d).instrument(span).await
    }

    /// One attempt of one claimed delivery, start to recorded outcome.
    async fn attempt_inner(&self, c: &ChannelRuntime, d: Claimed) {
        let started = now_ms();
        if d.kind == queue::KIND_EXPAND {
            match queue::expand_batch(&self.db, &d, &self.owner, self.settings.expand_batch).await {
                Ok(Some(n)) => {
                    tracing::debug!(channel = %c.name, announcement = %d.announcement_id, inserted = n, "Expanded subscribers");
                    // The new copies and the rest of the expansion are due now, for every
                    // instance.
                    self.wake(&c.name, Priority::from_lane(d.lane));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(channel = %c.name, error = %e, "Could not expand subscribers");
                    let _ = queue::release(&self.db, &d, &self.owner, now_ms() + 1000).await;
                }
            }
            return;
        }
        let outcome = self.attempt_send(c, &d).await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(internal) => {
                // Our own failure (database, stored data): keep the delivery, try later.
                tracing::error!(channel = %c.name, delivery = d.id, error = %internal, "Could not prepare a delivery");
                Outcome::Retry {
                    run_after: now_ms() + self.backoff_ms(d.attempts),
                    class: "internal",
                    error: internal,
                    status_code: None,
                    refund: false,
                    uncertain: d.uncertain,
                }
            }
        };
        let outcome = match outcome {
            // Waits that give the attempt back (rate limits, quota, a paused channel) never
            // exhaust a delivery; real failures do.
            Outcome::Retry {
                class,
                error,
                status_code,
                refund: false,
                ..
            } if d.attempts >= c.max_attempts => Outcome::Failed {
                class,
                error: format!("{error} (gave up after {} attempts)", d.attempts),
                status_code,
            },
            o => o,
        };
        match &outcome {
            Outcome::Sent { remote_id, how, .. } => {
                tracing::info!(channel = %c.name, delivery = d.id, announcement = %d.announcement_id,
                    attempt = d.attempts, remote_id = remote_id.as_deref().unwrap_or(""), how = *how, "Delivered");
                c.last_success_ms.fetch_max(now_ms(), Ordering::SeqCst);
            }
            Outcome::Retry {
                class,
                error,
                run_after,
                ..
            } => {
                tracing::warn!(channel = %c.name, delivery = d.id, announcement = %d.announcement_id,
                    attempt = d.attempts, class = *class, error = %error,
                    retry_in_ms = run_after - now_ms(), "Delivery attempt failed; will retry");
                let _ = store::channels::record_error(&self.db, &c.name, error).await;
            }
            Outcome::Failed { class, error, .. } => {
                tracing::error!(channel = %c.name, delivery = d.id, announcement = %d.announcement_id,
                    attempt = d.attempts, class = *class, error = %error, "Delivery failed");
                let _ = store::channels::record_error(&self.db, &c.name, error).await;
            }
            Outcome::Cancelled { reason } => {
                tracing::info!(channel = %c.name, delivery = d.id, reason = %reason, "Delivery skipped");
            }
        }
        let id = d.id;
        match self.record(d, started, outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(channel = %c.name, delivery = id,
                "Lease was lost before the outcome was recorded; another worker owns this delivery now"),
            Err(e) => tracing::error!(channel = %c.name, delivery = id, error = %e,
                "Could not record a delivery outcome; the lease will expire and the delivery will be reconciled"),
        }
    }

    /// Hands an outcome to the recorder and waits until it is committed, so the worker's
    /// slot (and the lease renewal) lasts until the outcome is durable.
    async fn record(&self, d: Claimed, started_at: i64, outcome: Outcome) -> Result<bool, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let item = queue::Finished {
            delivery: d,
            started_at,
            outcome: outcome.sanitized(),
        };
        if let Err(tokio::sync::mpsc::error::SendError((item, _))) =
            self.recorder.send((item, reply)).await
        {
            // The recorder is gone (shutting down): record this one directly.
            return queue::finish_batch(&self.db, &self.owner, std::slice::from_ref(&item))
                .await
                .map(|r| r[0])
                .map_err(|e| e.to_string());
        }
        answer
            .await
            .map_err(|_| "the recorder stopped".to_string())?
    }

    /// Commits outcomes in batches: whatever has arrived while the previous batch was being
    /// written goes into the next transaction. Under load this turns a commit (an fsync on
    /// SQLite) per delivery into one per batch; when idle a batch is a single outcome and
    /// nothing waits.
    async fn run_recorder(self: Arc<Self>, mut rx: RecorderRx) {
        const MAX_BATCH: usize = 128;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match queue::finish_batch(&self.db, &self.owner, &items).await {
                Ok(results) => {
                    for (reply, ok) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(ok));
                    }
                }
                Err(e) => {
                    // One item (or a passing database error) must not cost the others their
                    // record: write them one by one, each in its own transaction.
                    tracing::warn!(error = %e, items = items.len(), "Recording a batch failed; recording one by one");
                    for (item, reply) in items.iter().zip(replies) {
                        let one =
                            queue::finish_batch(&self.db, &self.owner, std::slice::from_ref(item))
                                .await
                                .map(|r| r[0])
                                .map_err(|e| e.to_string());
                        let _ = reply.send(one);
                    }
                }
            }
        }
    }

    async fn attempt_send(&self, c: &ChannelRuntime, d: &Claimed) -> Result<Outcome, String> {
        let units = self.units(&d.announcement_id, &c.name).await?;
        let payload = units
            .get(d.unit_index as usize)
            .cloned()
            .ok_or_else(|| format!("unit {} missing from the stored rendering", d.unit_index))?;
        let recipient = if d.subscriber_id > 0 {
            match store::subscribers::recipient(&self.db, d.subscriber_id)
                .await
                .map_err(|e| e.to_string())?
            {
                Some((address, lang, token)) => Some(Recipient {
                    address,
                    lang,
                    unsubscribe_url: format!(
                        "{}unsubscribe?t={token}",
                        self.settings.public_base_url
                    ),
                    unsubscribe_token: token,
                }),
                None => {
                    return Ok(Outcome::Cancelled {
                        reason: "the subscriber unsubscribed or was removed".into(),
                    })
                }
            }
        } else {
            None
        };
        let info = self.announcement_info(&d.announcement_id).await?;
        if !info.marked_sending.swap(true, Ordering::SeqCst) {
            if let Err(e) = queue::mark_sending(&self.db, &d.announcement_id).await {
                // Only the status shown is late; the sweep puts it right.
                tracing::warn!(announcement = %d.announcement_id, error = %e, "Could not mark the announcement as sending");
                info.marked_sending.store(false, Ordering::SeqCst);
            }
        }
        let unit = DeliveryUnit { payload, recipient };
        let ctx = DeliveryContext {
            delivery_id: d.id.to_string(),
            announcement_id: d.announcement_id.clone(),
            idempotency_key: d.idempotency_key.clone(),
            attempt: d.attempts.max(1) as u32,
            priority: Priority::from_lane(d.lane),
            exercise: info.exercise,
            request_id: info.request_id.clone(),
        };
        if d.uncertain {
            match c.channel.reconcile(&unit, &ctx).await {
                Ok(Some(receipt)) => {
                    return Ok(Outcome::Sent {
                        remote_id: receipt.remote_id,
                        note: receipt.note,
                        how: "reconciled",
                    })
                }
                Ok(None) => {}
                Err(e) => return Ok(self.classify(c, d, e).await),
            }
        }
        c.gate.wait(Priority::from_lane(d.lane)).await;
        if c.is_paused() {
            // Paused while waiting at the gate (another attempt hit an auth error).
            return Ok(Outcome::Retry {
                run_after: now_ms(),
                class: "paused",
                error: "channel paused".into(),
                status_code: None,
                refund: true,
                uncertain: d.uncertain,
            });
        }
        match c.channel.deliver(&unit, &ctx).await {
            Ok(receipt) => Ok(Outcome::Sent {
                remote_id: receipt.remote_id,
                note: receipt.note,
                how: if receipt.already_sent {
                    "already_sent"
                } else {
                    "sent"
                },
            }),
            Err(e) => Ok(self.classify(c, d, e).await),
        }
    }

    /// Turns an adapter's error class into the queue's next step (CHANNELS.md §0.1).
    async fn classify(&self, c: &ChannelRuntime, d: &Claimed, e: DeliveryError) -> Outcome {
        let status_code = e.status.map(|s| s as i32);
        let error = e.message.clone();
        let now = now_ms();
        match e.class {
            ErrorClass::Transient => Outcome::Retry {
                run_after: now + self.backoff_ms(d.attempts),
                class: "transient",
                error,
                status_code,
                refund: false,
                uncertain: false,
            },
            ErrorClass::Uncertain => Outcome::Retry {
                run_after: now + self.backoff_ms(d.attempts),
                class: "uncertain",
                error,
                status_code,
                refund: false,
                uncertain: true,
            },
            ErrorClass::RateLimited { retry_after } => Outcome::Retry {
                // A platform's wait is honoured up to a day (a bad header must not park a
                // delivery for years); without one, at least a second.
                run_after: now
                    + retry_after
                        .map(|r| r.min(Duration::from_secs(86_400)).as_millis() as i64)
                        .unwrap_or_else(|| self.backoff_ms(d.attempts).max(1000)),
                class: "rate_limited",
                error,
                status_code,
                refund: true,
                uncertain: false,
            },
            ErrorClass::Quota { until } => {
                let reason = format!("quota exhausted: {error}");
                let _ =
                    store::channels::set_state(&self.db, &c.name, "degraded", Some(&reason)).await;
                if d.lane == Priority::Disaster.lane() {
                    // A disaster alert must not silently wait for next month: fail visibly now.
                    Outcome::Failed {
                        class: "quota",
                        error,
                        status_code,
                    }
                } else {
                    Outcome::Retry {
                        run_after: until
                            .map(|u| u.timestamp_millis())
                            .unwrap_or(now + 3_600_000)
                            .max(now + 1000),
                        class: "quota",
                        error,
                        status_code,
                        refund: true,
                        uncertain: false,
                    }
                }
            }
            ErrorClass::Auth => {
                let reason = format!("credentials refused: {error}");
                tracing::error!(channel = %c.name, reason = %reason,
                    "Channel paused: fix its credentials, then POST /api/v1/channels/{}/resume", c.name);
                let _ =
                    store::channels::set_state(&self.db, &c.name, "paused", Some(&reason)).await;
                c.paused.store(true, Ordering::SeqCst);
                Outcome::Retry {
                    run_after: now,
                    class: "auth",
                    error,
                    status_code,
                    refund: true,
                    uncertain: false,
                }
            }
            ErrorClass::Permanent => Outcome::Failed {
                class: "permanent",
                error,
                status_code,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_work_cannot_spend_the_disaster_reserve() {
        // 10 requests of burst, 30 % kept for disaster work.
        let gate = RateGate::new(1.0, 10, 0.3);
        let normal = (0..20).filter(|_| gate.try_pass(Priority::Normal)).count();
        assert_eq!(normal, 7, "normal work stops at its share");
        let disaster = (0..20)
            .filter(|_| gate.try_pass(Priority::Disaster))
            .count();
        assert_eq!(disaster, 3, "the reserve is still there for disaster work");
        assert!(
            !gate.try_pass(Priority::Disaster),
            "and the whole budget is respected"
        );
    }

    #[test]
    fn disaster_work_may_use_the_whole_budget() {
        let gate = RateGate::new(1.0, 10, 0.3);
        let disaster = (0..20)
            .filter(|_| gate.try_pass(Priority::Disaster))
            .count();
        assert_eq!(disaster, 10);
        assert!(!gate.try_pass(Priority::Urgent));
    }
}
