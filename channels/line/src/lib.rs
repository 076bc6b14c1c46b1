//! The LINE Messaging API channel: broadcast, multicast, narrowcast or push under LINE's
//! retry key, a disaster Flex card, the hourly broadcast budget, quota, reach and webhooks.
//!
//! # Layout
//! `config` (the `[channels.line]` section), `render` (pure: message objects and request
//! bodies), `client` (the `Channel` impl), `error` (status and body → class, as a table),
//! `reach` (insight), `webhook` (inbound signature and events), and behind the `fake`
//! feature `fake` (a LINE server on loopback for tests).

mod client;
mod config;
mod error;
mod reach;
mod render;
mod webhook;

#[cfg(feature = "fake")]
pub mod fake;

#[cfg(all(test, feature = "fake"))]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

pub use client::{Clock, LineChannel, NarrowcastProgress};
pub use config::{Config, Mode, NarrowcastSettings, VariantMode};
pub use error::{
    ErrorBody, ADDITIONAL_MESSAGE_LIMIT, CONCURRENT_LIMIT, MONTHLY_LIMIT, RATE_LIMIT_EXCEEDED,
    RETRY_KEY_ACCEPTED,
};
pub use render::{Unit, MAX_ALT_TEXT, MAX_MESSAGES, MAX_TEXT_UTF16, MULTICAST_CHUNK};
pub use webhook::{
    parse_events, sign, verify_signature, WebhookError, WebhookEvent, WebhookEventKind,
    SIGNATURE_HEADER,
};

/// Validates `config` and builds the channel on the daemon's shared HTTP client.
pub fn build(config: &Config, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    LineChannel::new(config.clone(), env.http.clone())
        .map(|c| Arc::new(c.with_clock(env.clock.clone())) as Arc<dyn Channel>)
        .map_err(|m| vec![ConfigProblem::new("channel_access_token", m)])
}

/// `[channels.line]` as the daemon's registry drives it (the channel `line`).
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
    fn build(&self, _name: &str, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
        build(self, env)
    }
}
