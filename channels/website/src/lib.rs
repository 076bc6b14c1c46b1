//! Noroshi's website channel: one accessible page per announcement, an index, Atom and RSS feeds.
//!
//! Everything is written under `output_dir` (served by the daemon at `/site/`) at stable
//! addresses residents and feed readers can bookmark: `index.html`, `feed.atom`, `feed.rss`
//! and `a/{id}.html`. Delivery is local and idempotent: file names are derived from the
//! announcement id, the adapter's own entry index (`.entries.json`) is upserted by id, and
//! every file is replaced atomically.
//!
//! # Layout
//! - `config`: `[channels.website]` and its validation.
//! - `render`: the pure part: announcement → page unit, text clean-up, dates in Asia/Tokyo.
//! - `page`: HTML of a page and of the index (minijinja, autoescaped).
//! - `feed`: Atom and RSS (quick-xml).
//! - `entries`: the entry index and atomic writes.
//! - `client`: the [`Channel`] implementation.
//! - `error`: local failures as error classes.

mod cap_feed;
mod client;
mod config;
mod entries;
mod error;
mod feed;
mod page;
mod render;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

pub use client::{Clock, Published, Website};
pub use config::{Config, MAX_FEED_ENTRIES};
pub use entries::{Entry, EntryIndex, Variant, ENTRIES_FILE};
pub use render::{page_url, render, PageUnit};

/// Validates `config` and builds the website channel.
///
/// Of `env` only the clock is used: the channel makes no network calls, and `output_dir`
/// is taken as configured (relative to the working directory, like the default `data/site`).
pub fn build(config: &Config, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Arc::new(Website::new(config).with_clock(env.clock.clone())))
}

/// `[channels.website]` as the daemon's registry drives it (the channel `website`).
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
