//! The channel boundary: the one trait every adapter implements and the types that cross it.
//!
//! Adapters know nothing of the database or of axum. The daemon renders an announcement
//! through [`Channel::render`] when it is accepted (so a queued delivery sends exactly what
//! was previewed), stores each rendered unit as a queue row, and later hands one unit at a
//! time to [`Channel::deliver`], which makes exactly one network attempt. Retries, backoff,
//! leases and pausing are the queue's business; an adapter only says what happened, as an
//! [`ErrorClass`].

pub mod clock;
pub mod config;
mod error;
pub mod fetch;
pub mod http;
pub mod text;
mod types;

#[cfg(feature = "fake")]
pub mod fake;

pub use clock::{jst, system_clock, Clock};
pub use config::ChannelConfig;
pub use error::{ConfigProblem, DeliveryError, ErrorClass, RenderError};
pub use secrecy::{ExposeSecret, SecretString};
pub use types::*;

use async_trait::async_trait;

/// One outbound channel (LINE, X, a Facebook Page, email, the website, a webhook instance).
///
/// Object safe: the daemon holds `Arc<dyn Channel>` in its registry.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The instance name used in the API and in config: `line`, `x`, `email`, `webhook.cms`.
    fn name(&self) -> &str;

    /// Turns an announcement into this channel's payload(s) under its limits. Pure: no I/O.
    ///
    /// Serves three callers: validation at accept time (an error becomes a `422` naming the
    /// channel and the rule), the preview API, and planning the delivery units.
    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError>;

    /// Who each unit goes to. `Fixed` units are delivered as rendered; `EmailSubscribers`
    /// units are multiplied by the daemon, one delivery per active subscriber.
    fn audience(&self) -> Audience {
        Audience::Fixed
    }

    /// Who this announcement's units go to: [`Channel::audience`], except where the
    /// adapter routes a drill to its `exercise_target` (email: the test address alone,
    /// never the subscribers).
    fn audience_for(&self, _announcement: &Announcement) -> Audience {
        self.audience()
    }

    /// The default pacing for this channel; `[channels.NAME.delivery]` may override it.
    fn limits(&self) -> Limits;

    /// Exactly one network attempt for one unit: no sleeps, no internal retries.
    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError>;

    /// Before re-sending after an ambiguous attempt (an `Uncertain` error or an expired
    /// lease): did the earlier attempt land? `Ok(Some(receipt))` means yes, do not resend;
    /// `Ok(None)` means it did not (or the platform cannot tell), send again.
    async fn reconcile(
        &self,
        _unit: &DeliveryUnit,
        _ctx: &DeliveryContext,
    ) -> Result<Option<Receipt>, DeliveryError> {
        Ok(None)
    }

    /// How long the platform honours [`DeliveryContext::idempotency_key`] (LINE's
    /// `X-Line-Retry-Key`: 24 hours). Past it, a resend with the same key is a new request:
    /// the daemon then renews the key when no earlier attempt can have been accepted, and
    /// otherwise does not send blindly. `None`: no key, or one that never expires.
    fn retry_key_lifetime(&self) -> Option<std::time::Duration> {
        None
    }

    /// Followers, views, impressions as the platform names them, for the reach collector.
    async fn fetch_reach(&self) -> Result<Vec<ReachSample>, DeliveryError> {
        Ok(Vec::new())
    }

    /// How often the daemon calls [`Channel::refresh`] in the background; `None`: never.
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Background reads that must never sit on a send's path (LINE's monthly quota). Runs
    /// in a supervised task every [`Channel::refresh_interval`]; what it learns shows in
    /// [`Channel::status`] and guards later sends.
    async fn refresh(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// A check that walks the real send's auth path (not a status page).
    async fn healthcheck(&self) -> Result<(), DeliveryError>;

    /// What the adapter has observed of the platform: remaining budgets, quota, token
    /// expiry, warnings. Shown in `GET /api/v1/channels`. Cheap; no I/O.
    fn status(&self) -> AdapterStatus {
        AdapterStatus::default()
    }

    /// Credentials the platform issued in place of configured ones (a rotated OAuth 2.0
    /// refresh token), opaque to the daemon, which keeps them in its database and hands
    /// them back through [`Channel::restore_credentials`] at the next start. `None` while
    /// nothing has rotated. Cheap; no I/O.
    fn rotated_credentials(&self) -> Option<SecretString> {
        None
    }

    /// Takes back what [`Channel::rotated_credentials`] returned before a restart. An
    /// adapter ignores them when the operator has configured new credentials since.
    /// Returns whether they were taken.
    fn restore_credentials(&self, _saved: &SecretString) -> bool {
        false
    }
}
