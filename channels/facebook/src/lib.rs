//! The Facebook Page channel: posts announcements through the Meta Graph API (CHANNELS.md §3).
//!
//! `render` turns an announcement into one feed or photo post; `deliver` makes one Graph
//! call with the Page token in `Authorization: Bearer` (never in a URL); Graph errors are
//! classified by `error.code` as data (`error.rs`); Graph's usage headers slow posting down
//! before Graph throttles it (`usage.rs`); `healthcheck` asks `debug_token` and `status`
//! warns a week before the token expires; `fetch_reach` collects `followers_count`,
//! `page_media_view`, `page_total_media_view_unique` and `post_media_view`.

mod client;
mod config;
mod error;
mod reach;
mod render;
mod usage;

#[cfg(feature = "fake")]
pub mod fake;

#[cfg(all(test, feature = "fake"))]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

pub use client::FacebookChannel;
pub use config::Config;
pub use render::{PostKind, PostPayload, MAX_CHARS, MOBILE_VISIBLE_CHARS};

/// Validates `config` and builds the adapter on the daemon's shared HTTP client.
pub fn build(config: &Config, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Arc::new(FacebookChannel::new(
        config,
        env.http.clone(),
        env.clock.clone(),
    )))
}

/// `[channels.facebook]` as the daemon's registry drives it (the channel `facebook`).
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
