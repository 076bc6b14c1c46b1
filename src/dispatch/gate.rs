//! The rate gate: a channel's budget, with a share and a burst kept for disaster work, this
//! instance's share of the channel's rate, and the hold a platform's rate-limit answer puts
//! on the whole channel.
//!
//! - Normal and urgent work pass `normal` (`(1 - reserve) × rate`) and then `all` (the full
//!   rate): normal work can use at most its share, and the rest is there for disaster work.
//! - Disaster work passes its own `disaster` bucket, whose burst is at least
//!   `disaster_burst` (5 by default), so several alerts in one second go out at once even on
//!   a channel paced at one post every two seconds. It also takes from `all` when there is
//!   budget there (never waiting for it), which pushes normal work back.
//! - Drills travel in the disaster lane but pass the gate as urgent work: they never spend
//!   what is kept for live alerts.
//! - The configured rate is the channel's total across instances: each instance paces
//!   itself at `rate / instances` (the upkeep counts live instances in the database).
//! - A platform's rate-limit answer holds the whole channel until its reset time; when the
//!   hold lifts, disaster work goes first (normal work waits a little longer).

use std::sync::atomic::{AtomicI64, AtomicU32};
use std::sync::RwLock;

use super::*;

/// What the gate is built from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateSettings {
    /// The channel's total rate (requests per second), across all instances.
    pub rate: f64,
    pub burst: u32,
    /// Share of the rate kept for disaster work (0.0 – 0.9).
    pub reserve: f64,
    /// Disaster sends that may go at once, whatever normal work has used.
    pub disaster_burst: u32,
}

struct Buckets {
    all: DefaultDirectRateLimiter,
    normal: DefaultDirectRateLimiter,
    disaster: DefaultDirectRateLimiter,
}

impl Buckets {
    fn new(s: GateSettings, instances: u32) -> Buckets {
        let n = instances.max(1) as f64;
        let rate = s.rate / n;
        let burst = ((s.burst as f64) / n).ceil().max(1.0) as u32;
        let normal_burst = ((burst as f64) * (1.0 - s.reserve)).floor().max(1.0) as u32;
        Buckets {
            all: limiter(rate, burst),
            normal: limiter(rate * (1.0 - s.reserve), normal_burst),
            disaster: limiter(rate, burst.max(s.disaster_burst)),
        }
    }
}

/// The lane a request passes the gate in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateLane {
    Normal,
    /// A live disaster alert.
    Disaster,
}

impl GateLane {
    /// Drills pass as normal work whatever their lane.
    pub fn of(priority: Priority, exercise: bool) -> GateLane {
        if priority == Priority::Disaster && !exercise {
            GateLane::Disaster
        } else {
            GateLane::Normal
        }
    }
}

/// After a hold lifts, normal work waits this much longer, so disaster work goes first.
const DISASTER_HEAD_START: Duration = Duration::from_millis(200);

pub struct RateGate {
    settings: GateSettings,
    instances: AtomicU32,
    buckets: RwLock<Arc<Buckets>>,
    /// The platform asked the whole account to wait until this time (ms); 0 = no hold.
    hold_until: AtomicI64,
}

impl RateGate {
    pub fn new(settings: GateSettings) -> RateGate {
        RateGate {
            settings,
            instances: AtomicU32::new(1),
            buckets: RwLock::new(Arc::new(Buckets::new(settings, 1))),
            hold_until: AtomicI64::new(0),
        }
    }

    pub fn settings(&self) -> GateSettings {
        self.settings
    }

    /// How many instances share the channel's rate now.
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::SeqCst)
    }

    /// Paces this instance at `rate / instances` from now on.
    pub fn set_instances(&self, instances: u32) {
        let instances = instances.max(1);
        if self.instances.swap(instances, Ordering::SeqCst) != instances {
            *self.buckets.write().unwrap() = Arc::new(Buckets::new(self.settings, instances));
        }
    }

    fn buckets(&self) -> Arc<Buckets> {
        self.buckets.read().unwrap().clone()
    }

    /// Holds the whole channel until `until_ms` (a later hold wins).
    pub fn hold(&self, until_ms: i64) {
        self.hold_until.fetch_max(until_ms, Ordering::SeqCst);
    }

    /// The end of the hold in force, if any.
    pub fn held_until(&self, now_ms: i64) -> Option<i64> {
        let until = self.hold_until.load(Ordering::SeqCst);
        (until > now_ms).then_some(until)
    }

    /// Waits until one request in `lane` may go: through any hold, then the buckets.
    pub async fn wait(&self, lane: GateLane) {
        while let Some(until) = self.held_until(now_ms()) {
            let mut pause = Duration::from_millis((until - now_ms()).max(0) as u64);
            if lane == GateLane::Normal {
                pause += DISASTER_HEAD_START;
            }
            tokio::time::sleep(pause).await;
        }
        let b = self.buckets();
        match lane {
            GateLane::Disaster => {
                b.disaster.until_ready().await;
                // Spend from the shared budget when it has some, never waiting for it.
                let _ = b.all.check();
            }
            GateLane::Normal => {
                b.normal.until_ready().await;
                b.all.until_ready().await;
            }
        }
    }

    /// Takes a request's budget now if there is some (for tests and diagnostics).
    pub fn try_pass(&self, lane: GateLane) -> bool {
        if self.held_until(now_ms()).is_some() {
            return false;
        }
        let b = self.buckets();
        match lane {
            GateLane::Disaster => {
                let ok = b.disaster.check().is_ok();
                if ok {
                    let _ = b.all.check();
                }
                ok
            }
            GateLane::Normal => b.normal.check().is_ok() && b.all.check().is_ok(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: f64, burst: u32, reserve: f64, disaster_burst: u32) -> RateGate {
        RateGate::new(GateSettings {
            rate,
            burst,
            reserve,
            disaster_burst,
        })
    }

    #[test]
    fn normal_work_cannot_spend_the_disaster_reserve() {
        // 10 requests of burst, 30 % kept for disaster work.
        let gate = gate(1.0, 10, 0.3, 1);
        let normal = (0..20).filter(|_| gate.try_pass(GateLane::Normal)).count();
        assert_eq!(normal, 7, "normal work stops at its share");
        let disaster = (0..20)
            .filter(|_| gate.try_pass(GateLane::Disaster))
            .count();
        assert_eq!(disaster, 10, "the disaster bucket is its own");
        assert!(
            !gate.try_pass(GateLane::Normal),
            "and disaster work took the shared budget too"
        );
    }

    #[test]
    fn disaster_alerts_burst_even_on_a_slow_channel() {
        // Facebook's default pacing: one post every two seconds, burst 1.
        let gate = gate(0.5, 1, 0.2, 5);
        assert!(
            gate.try_pass(GateLane::Normal),
            "normal work takes the one token"
        );
        assert!(!gate.try_pass(GateLane::Normal));
        let disaster = (0..10)
            .filter(|_| gate.try_pass(GateLane::Disaster))
            .count();
        assert_eq!(disaster, 5, "five alerts at once whatever normal work used");
    }

    #[test]
    fn drills_pass_as_normal_work() {
        assert_eq!(GateLane::of(Priority::Disaster, true), GateLane::Normal);
        assert_eq!(GateLane::of(Priority::Disaster, false), GateLane::Disaster);
        assert_eq!(GateLane::of(Priority::Urgent, false), GateLane::Normal);
    }

    #[test]
    fn instances_share_the_rate() {
        let gate = gate(40.0, 40, 0.0, 5);
        gate.set_instances(2);
        let n = (0..100).filter(|_| gate.try_pass(GateLane::Normal)).count();
        assert_eq!(n, 20, "half the burst each");
        assert_eq!(gate.instances(), 2);
    }

    #[tokio::test]
    async fn a_hold_stops_everything_and_disaster_goes_first() {
        let gate = Arc::new(gate(1000.0, 100, 0.2, 5));
        gate.hold(now_ms() + 300);
        assert!(!gate.try_pass(GateLane::Disaster));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (lane, name) in [
            (GateLane::Normal, "normal"),
            (GateLane::Disaster, "disaster"),
        ] {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                g.wait(lane).await;
                o.lock().unwrap().push((name, now_ms()));
            }));
        }
        let started = now_ms();
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order[0].0, "disaster", "{order:?}");
        assert!(order[0].1 - started >= 250, "{order:?}");
    }
}
