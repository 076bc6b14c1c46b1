//! Noroshi's X (API v2) channel: weighted-280 rendering, OAuth 1.0a / 2.0 posting, reach.
//!
//! CHANNELS.md §2 is the wire reference. The pieces: [`Config`] (`[channels.x]`), pure
//! rendering with twitter-text counting in [`render`], request signing in [`oauth`], the
//! [`Channel`] implementation in [`XChannel`], status/body classification in [`error`], and
//! behind the `fake` feature a faithful fake of the platform in [`fake`].

mod client;
mod config;
pub mod error;
pub mod oauth;
mod reach;
pub mod render;

#[cfg(feature = "fake")]
pub mod fake;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

pub use client::{OAuth2Tokens, XChannel};
pub use config::{AuthMode, Config, LongText};
pub use render::{XPayload, MAX_WEIGHTED_LENGTH};

/// Validates `[channels.x]` and builds the adapter on the daemon's shared HTTP client.
pub fn build(config: &Config, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let channel: Arc<dyn Channel> = build_x(config, env)?;
    Ok(channel)
}

/// Like [`build`], but keeps the concrete type: the daemon can read rotated OAuth 2.0
/// tokens ([`XChannel::oauth2_tokens`]) to persist them.
pub fn build_x(config: &Config, env: &BuildEnv) -> Result<Arc<XChannel>, Vec<ConfigProblem>> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    XChannel::new(config, env.http.clone()).map(|c| Arc::new(c.with_clock(env.clock.clone())))
}

/// `[channels.x]` as the daemon's registry drives it (the channel `x`).
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
