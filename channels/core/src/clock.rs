//! Time for the adapters: one injectable clock, and Japan's time zone.
//!
//! The daemon hands its own clock to every adapter through [`crate::BuildEnv::clock`], so
//! adapters and daemon agree on "now" (on PostgreSQL the daemon follows the database
//! server's clock) and tests can walk an adapter through an hour, a month or a token's
//! expiry without sleeping.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};

/// Where an adapter reads the time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// This host's clock (`Utc::now`): for adapters built outside the daemon.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Japan Standard Time, UTC+9 all year (Japan has no daylight saving time): the time
/// residents read, LINE's `date` parameters and its monthly quota period.
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("UTC+9 is a valid offset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jst_is_nine_hours_ahead_of_utc() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            at.with_timezone(&jst()).to_rfc3339(),
            "2026-11-24T00:00:00+09:00"
        );
    }

    #[test]
    fn the_system_clock_reads_the_host_time() {
        let before = Utc::now();
        let read = system_clock()();
        assert!(read >= before && read <= Utc::now());
    }
}
