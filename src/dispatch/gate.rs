//! The rate gate: a channel's budget, with a share kept for disaster work.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use noroshi_channel_core::Priority;

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
