//! Noroshi's email channel: SMTP submission (CHANNELS.md §4), one message per subscriber.
//!
//! `render` turns an announcement into one `{subject, text, html}` unit; the daemon
//! multiplies it by the active subscribers (`Audience::EmailSubscribers`) and hands each
//! copy to `deliver`, which adds the subscriber's unsubscribe links and sends it in one
//! SMTP transaction. [`validate_address`] lets the daemon refuse addresses Noroshi cannot
//! send to when a subscriber is created or imported.

mod address;
mod client;
mod config;
mod error;
mod reach;
mod render;
mod template;

#[cfg(feature = "fake")]
pub mod fake;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

pub use address::validate_address;
pub use client::EmailChannel;
pub use config::{Config, TlsMode};
pub use render::EmailPayload;

/// Validates `config` and builds the channel (named `email`). SMTP needs no HTTP client:
/// of `env` only the clock is used.
pub fn build(config: &Config, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Arc::new(
        EmailChannel::new("email", config)?.with_clock(env.clock.clone()),
    ))
}

/// `[channels.email]` as the daemon's registry drives it (the channel `email`).
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
