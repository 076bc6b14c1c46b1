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

#[cfg(feature = "fake")]
pub mod fake;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ConfigProblem};

pub use address::validate_address;
pub use client::EmailChannel;
pub use config::{Config, TlsMode};
pub use render::EmailPayload;

/// Validates `config` and builds the channel (named `email`). SMTP needs no HTTP client,
/// so `env` is unused.
pub fn build(config: &Config, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let _ = env;
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Arc::new(EmailChannel::new("email", config)?))
}
