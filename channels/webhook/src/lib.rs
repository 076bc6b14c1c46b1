//! The generic webhook channel: signed JSON to any endpoint a city uses (its CMS, an
//! internal chat, a partner system), one named instance per `[channels.webhook.NAME]`.
//!
//! Signing (when `signing_secret` is set), for receivers to verify:
//! - `X-Noroshi-Signature: sha256=<hex HMAC-SHA256(secret, exact body bytes)>` (the
//!   GitHub convention: compare in constant time against your own HMAC of the raw body);
//! - `X-Noroshi-Timestamp: <Unix seconds>` when the attempt was sent;
//! - `X-Noroshi-Timestamp-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`:
//!   the timestamp cannot be altered without the secret, so a receiver that refuses
//!   timestamps older than a few minutes (and remembers `Idempotency-Key`s for that long)
//!   refuses replays.
//!
//! Every request carries `Idempotency-Key` (stable across the attempts of one delivery).

mod client;
mod config;
mod error;
mod render;
mod sign;

#[cfg(feature = "fake")]
pub mod fake;

#[cfg(all(test, feature = "fake"))]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

pub use client::WebhookChannel;
pub use config::Config;
pub use render::{render_body, WebhookPayload, DEFAULT_TEMPLATE};
pub use sign::{signature, timestamped};

/// Validates instance `name`'s `config` and builds it as channel `webhook.NAME`.
pub fn build(
    name: &str,
    config: &Config,
    env: &BuildEnv,
) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let mut problems: Vec<ConfigProblem> = config::validate_name(name).into_iter().collect();
    problems.extend(config.validate());
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Arc::new(WebhookChannel::new(
        name,
        config,
        env.http.clone(),
        env.clock.clone(),
    )))
}

/// `[channels.webhook.NAME]` as the daemon's registry drives it. The channel is named
/// `webhook.NAME`; [`ChannelConfig::build`] takes that name.
impl ChannelConfig for Config {
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }
    fn validate(&self) -> Vec<ConfigProblem> {
        Config::validate(self)
    }
    fn build(&self, name: &str, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
        build(name.strip_prefix("webhook.").unwrap_or(name), self, env)
    }
}
