//! The states Noroshi keeps, typed: an announcement's status, a delivery's status, a
//! channel's state. One place maps each to the text stored in the database and shown in
//! the API, and one place holds each roll-up rule. (Lanes are [`Priority`]: `lane()` is
//! the stored number.) SQL statements use the same words as literals; the tests below pin
//! them.

use std::fmt;
use std::str::FromStr;

pub use noroshi_channel_core::Priority;

macro_rules! stored_text {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            /// The text stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(format!("`{other}` is not a {}", stringify!($ty))),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// (awaiting_approval | awaiting_confirmation →) scheduled → queued → sending → sent |
/// partially_failed | failed; or cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnouncementStatus {
    AwaitingApproval,
    AwaitingConfirmation,
    Scheduled,
    Queued,
    Sending,
    Sent,
    PartiallyFailed,
    Failed,
    Cancelled,
}

stored_text!(AnnouncementStatus {
    AwaitingApproval => "awaiting_approval",
    AwaitingConfirmation => "awaiting_confirmation",
    Scheduled => "scheduled",
    Queued => "queued",
    Sending => "sending",
    Sent => "sent",
    PartiallyFailed => "partially_failed",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// pending → in_flight → sent | retrying | failed; or cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryStatus {
    // In order of advancement, least first: a channel shows its least advanced delivery.
    Pending,
    Retrying,
    InFlight,
    Cancelled,
    Sent,
    Failed,
}

stored_text!(DeliveryStatus {
    Pending => "pending",
    Retrying => "retrying",
    InFlight => "in_flight",
    Cancelled => "cancelled",
    Sent => "sent",
    Failed => "failed",
});

impl DeliveryStatus {
    /// Still to be done (or being done).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Pending | DeliveryStatus::Retrying | DeliveryStatus::InFlight
        )
    }
}

/// ok | degraded (working, with a reason: a quota used up, a token expiring) | paused
/// (credentials refused: nothing is sent until an operator resumes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    Ok,
    Degraded,
    Paused,
}

stored_text!(ChannelState {
    Ok => "ok",
    Degraded => "degraded",
    Paused => "paused",
});

/// An announcement's `send` deliveries, counted by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub open: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl Tally {
    pub fn add(&mut self, status: DeliveryStatus, n: i64) {
        match status {
            s if s.is_open() => self.open += n,
            DeliveryStatus::Sent => self.sent += n,
            DeliveryStatus::Failed => self.failed += n,
            _ => self.cancelled += n,
        }
    }
}

/// The one roll-up rule: an announcement with nothing left to do is `sent` (nothing
/// failed; copies skipped because a subscriber left are not failures), `partially_failed`
/// (some sent, some failed) or `failed` (none sent). `None` while work remains: it keeps
/// its status (`queued`, `scheduled`, `sending`). `cancelled` is only ever set by staff.
pub fn roll_up(t: Tally) -> Option<AnnouncementStatus> {
    if t.open > 0 {
        return None;
    }
    Some(if t.failed == 0 {
        AnnouncementStatus::Sent
    } else if t.sent > 0 {
        AnnouncementStatus::PartiallyFailed
    } else {
        AnnouncementStatus::Failed
    })
}

/// A channel's status in an announcement's view: `failed` when any delivery failed for
/// good, else its least advanced delivery's (`sent` when it has none, e.g. no subscribers).
pub fn channel_status(statuses: impl IntoIterator<Item = DeliveryStatus>) -> DeliveryStatus {
    let mut least: Option<DeliveryStatus> = None;
    for s in statuses {
        if s == DeliveryStatus::Failed {
            return DeliveryStatus::Failed;
        }
        least = Some(least.map_or(s, |l| l.min(s)));
    }
    least.unwrap_or(DeliveryStatus::Sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_round_trips_and_matches_the_schema() {
        let schema = include_str!("../migrations/sqlite/0001_core.sql");
        for s in DeliveryStatus::ALL {
            assert_eq!(s.as_str().parse::<DeliveryStatus>().unwrap(), *s);
            assert!(schema.contains(s.as_str()), "{s} in the schema's comment");
        }
        for s in ChannelState::ALL {
            assert_eq!(s.as_str().parse::<ChannelState>().unwrap(), *s);
            assert!(schema.contains(s.as_str()));
        }
        for s in AnnouncementStatus::ALL {
            assert_eq!(s.as_str().parse::<AnnouncementStatus>().unwrap(), *s);
        }
        assert!("paused ".parse::<ChannelState>().is_err());
    }

    #[test]
    fn roll_up_as_a_table() {
        use AnnouncementStatus::*;
        let t = |open, sent, failed, cancelled| Tally {
            open,
            sent,
            failed,
            cancelled,
        };
        for (tally, want) in [
            (t(1, 5, 0, 0), None),
            (t(1, 0, 3, 0), None),
            (t(0, 5, 0, 0), Some(Sent)),
            (t(0, 5, 0, 2), Some(Sent)),
            (t(0, 0, 0, 0), Some(Sent)),
            (t(0, 4, 1, 0), Some(PartiallyFailed)),
            (t(0, 0, 2, 0), Some(Failed)),
            (t(0, 0, 2, 3), Some(Failed)),
        ] {
            assert_eq!(roll_up(tally), want, "{tally:?}");
        }
    }

    #[test]
    fn a_channel_shows_failure_or_its_least_advanced_delivery() {
        use DeliveryStatus::*;
        assert_eq!(channel_status([Sent, InFlight, Pending]), Pending);
        assert_eq!(channel_status([Sent, Retrying]), Retrying);
        assert_eq!(channel_status([Sent, Sent]), Sent);
        assert_eq!(channel_status([Sent, Failed, Pending]), Failed);
        assert_eq!(channel_status([Cancelled, Sent]), Cancelled);
        assert_eq!(channel_status([]), Sent);
    }
}
