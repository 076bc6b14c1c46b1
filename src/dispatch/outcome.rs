//! Outcome: what an adapter's error class means for a delivery's next step (CHANNELS.md
//! §0.1). Pure: no I/O, no clock; the worker carries out the [`Effect`] it returns.

use std::time::Duration;

use noroshi_channel_core::{DeliveryError, ErrorClass, Priority};

use crate::queue::Outcome;

/// What the attempt was doing when the error came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Checking whether an earlier, ambiguous attempt landed.
    Reconcile,
    /// Sending.
    Send,
}

/// The delivery as the failed attempt saw it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub lane: Priority,
    /// Counted attempts including this one.
    pub attempts: i32,
    pub max_attempts: i32,
    /// The previous attempt may have been applied.
    pub uncertain: bool,
    pub phase: Phase,
    pub now_ms: i64,
    /// The backoff (already jittered) for this attempt number.
    pub backoff_ms: i64,
}

/// What the whole channel must do besides this delivery's next step.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Show the channel as degraded with this reason (a quota used up).
    Degrade(String),
    /// Pause the channel until an operator resumes it (credentials refused).
    Pause(String),
    /// The platform asked the whole account to wait until this time (ms).
    Hold(i64),
}

/// The longest platform wait honoured: a bad header must not park a delivery for years.
const MAX_PLATFORM_WAIT: Duration = Duration::from_secs(86_400);

/// The next step for a delivery whose attempt failed with `e`.
pub fn next_step(e: &DeliveryError, a: Attempt) -> (Outcome, Option<Effect>) {
    let status_code = e.status.map(|s| s as i32);
    let mut error = e.message.clone();
    if a.phase == Phase::Reconcile {
        error = format!("check before resending failed: {error}");
    }
    // A delivery stays uncertain until a check says whether the earlier attempt landed:
    // only a successful reconcile (or a send that got an answer) clears it.
    let keep_uncertain = a.uncertain || a.phase == Phase::Reconcile;
    let retry =
        |run_after: i64, class: &'static str, refund: bool, uncertain: bool| Outcome::Retry {
            run_after,
            class,
            error: error.clone(),
            status_code,
            refund,
            uncertain,
        };
    let (outcome, effect) = match &e.class {
        ErrorClass::Transient => (
            retry(a.now_ms + a.backoff_ms, "transient", false, keep_uncertain),
            None,
        ),
        ErrorClass::Uncertain => (
            retry(a.now_ms + a.backoff_ms, "uncertain", false, true),
            None,
        ),
        ErrorClass::RateLimited { retry_after } => {
            // Without a wait from the platform, at least a second.
            let until = a.now_ms
                + retry_after
                    .map(|r| r.min(MAX_PLATFORM_WAIT).as_millis() as i64)
                    .unwrap_or_else(|| a.backoff_ms.max(1000));
            (
                retry(until, "rate_limited", true, keep_uncertain),
                Some(Effect::Hold(until)),
            )
        }
        ErrorClass::Quota { until } => {
            let effect = Some(Effect::Degrade(format!("quota exhausted: {}", e.message)));
            if a.lane == Priority::Disaster {
                // A disaster alert must not silently wait for next month: fail visibly now.
                (
                    Outcome::Failed {
                        class: "quota",
                        error,
                        status_code,
                    },
                    effect,
                )
            } else {
                let at = until
                    .map(|u| u.timestamp_millis())
                    .unwrap_or(a.now_ms + 3_600_000)
                    .max(a.now_ms + 1000);
                (retry(at, "quota", true, keep_uncertain), effect)
            }
        }
        ErrorClass::Auth => (
            retry(a.now_ms, "auth", true, keep_uncertain),
            Some(Effect::Pause(format!("credentials refused: {}", e.message))),
        ),
        ErrorClass::Permanent => (
            Outcome::Failed {
                class: "permanent",
                error,
                status_code,
            },
            None,
        ),
    };
    (give_up_after_max(outcome, a), effect)
}

/// Waits that give the attempt back (rate limits, quota, a paused channel) never exhaust
/// a delivery; real failures do, after `max_attempts`.
pub fn give_up_after_max(outcome: Outcome, a: Attempt) -> Outcome {
    match outcome {
        Outcome::Retry {
            class,
            error,
            status_code,
            refund: false,
            ..
        } if a.attempts >= a.max_attempts => Outcome::Failed {
            class,
            error: format!("{error} (gave up after {} attempts)", a.attempts),
            status_code,
        },
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(phase: Phase, uncertain: bool, attempts: i32, lane: Priority) -> Attempt {
        Attempt {
            lane,
            attempts,
            max_attempts: 4,
            uncertain,
            phase,
            now_ms: 1_000_000,
            backoff_ms: 500,
        }
    }

    /// (class, phase, was uncertain, attempts, lane) → (kind, class, run_after - now,
    /// refund, uncertain after, effect kind)
    #[test]
    fn next_steps_as_a_table() {
        use ErrorClass::*;
        use Phase::*;
        use Priority::*;
        let wait = |s| RateLimited {
            retry_after: Some(Duration::from_secs(s)),
        };
        type Row = (
            ErrorClass,
            Phase,
            bool,
            i32,
            Priority,
            &'static str,
            &'static str,
            i64,
            bool,
            bool,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (
                Transient,
                Send,
                false,
                1,
                Normal,
                "retry",
                "transient",
                500,
                false,
                false,
                "",
            ),
            (
                Transient,
                Send,
                true,
                1,
                Normal,
                "retry",
                "transient",
                500,
                false,
                true,
                "",
            ),
            // A.1: a failed check never clears "uncertain".
            (
                Transient,
                Reconcile,
                true,
                2,
                Normal,
                "retry",
                "transient",
                500,
                false,
                true,
                "",
            ),
            (
                Uncertain,
                Reconcile,
                true,
                2,
                Normal,
                "retry",
                "uncertain",
                500,
                false,
                true,
                "",
            ),
            (
                Uncertain,
                Send,
                false,
                1,
                Normal,
                "retry",
                "uncertain",
                500,
                false,
                true,
                "",
            ),
            (
                Transient,
                Send,
                false,
                4,
                Normal,
                "failed",
                "transient",
                0,
                false,
                false,
                "",
            ),
            (
                Transient,
                Reconcile,
                true,
                4,
                Normal,
                "failed",
                "transient",
                0,
                false,
                false,
                "",
            ),
            (
                wait(30),
                Send,
                false,
                1,
                Normal,
                "retry",
                "rate_limited",
                30_000,
                true,
                false,
                "hold",
            ),
            (
                wait(30),
                Reconcile,
                true,
                9,
                Normal,
                "retry",
                "rate_limited",
                30_000,
                true,
                true,
                "hold",
            ),
            (
                wait(10_000_000),
                Send,
                false,
                1,
                Normal,
                "retry",
                "rate_limited",
                86_400_000,
                true,
                false,
                "hold",
            ),
            (
                RateLimited { retry_after: None },
                Send,
                false,
                1,
                Normal,
                "retry",
                "rate_limited",
                1000,
                true,
                false,
                "hold",
            ),
            (
                Quota { until: None },
                Send,
                false,
                1,
                Normal,
                "retry",
                "quota",
                3_600_000,
                true,
                false,
                "degrade",
            ),
            (
                Quota { until: None },
                Send,
                false,
                1,
                Disaster,
                "failed",
                "quota",
                0,
                false,
                false,
                "degrade",
            ),
            (
                Auth, Send, false, 1, Normal, "retry", "auth", 0, true, false, "pause",
            ),
            (
                Auth, Reconcile, true, 2, Disaster, "retry", "auth", 0, true, true, "pause",
            ),
            (
                Permanent,
                Send,
                false,
                1,
                Normal,
                "failed",
                "permanent",
                0,
                false,
                false,
                "",
            ),
            (
                Permanent,
                Reconcile,
                true,
                1,
                Normal,
                "failed",
                "permanent",
                0,
                false,
                false,
                "",
            ),
        ];
        for (i, row) in rows.into_iter().enumerate() {
            let (class, phase, was, attempts, lane, kind, cls, delay, refund, unc, eff) = row;
            let e = DeliveryError::new(class, "boom");
            let (o, effect) = next_step(&e, attempt(phase, was, attempts, lane));
            let effect_kind = match effect {
                None => "",
                Some(Effect::Hold(_)) => "hold",
                Some(Effect::Degrade(_)) => "degrade",
                Some(Effect::Pause(_)) => "pause",
            };
            assert_eq!(effect_kind, eff, "row {i}");
            match o {
                Outcome::Retry {
                    run_after,
                    class,
                    refund: r,
                    uncertain,
                    error,
                    ..
                } => {
                    assert_eq!(
                        ("retry", class, run_after - 1_000_000, r, uncertain),
                        (kind, cls, delay, refund, unc),
                        "row {i}"
                    );
                    assert_eq!(
                        error.starts_with("check before resending"),
                        phase == Reconcile,
                        "row {i}"
                    );
                }
                Outcome::Failed { class, .. } => {
                    assert_eq!(("failed", class), (kind, cls), "row {i}")
                }
                other => panic!("row {i}: {other:?}"),
            }
        }
    }
}
