//! The one place the daemon learns which channel adapters exist.
//!
//! A new channel costs one crate, one line here and one config section.

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ConfigProblem, DeliverySettings};

use crate::config::{ChannelsConfig, Problem};

/// An enabled channel with its per-channel queue settings.
pub struct Registered {
    pub channel: Arc<dyn Channel>,
    pub delivery: DeliverySettings,
}

/// Builds every enabled channel. Problems name their full config key.
pub fn build_channels(
    cfg: &ChannelsConfig,
    env: &BuildEnv,
) -> Result<Vec<Registered>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut add =
        |section: String,
         enabled: bool,
         delivery: &DeliverySettings,
         built: &dyn Fn() -> Result<Arc<dyn Channel>, Vec<ConfigProblem>>| {
            if !enabled {
                return;
            }
            match built() {
                Ok(channel) => out.push(Registered {
                    channel,
                    delivery: delivery.clone(),
                }),
                Err(found) => problems.extend(found.into_iter().map(|p| Problem {
                    key: format!("{section}.{}", p.key),
                    message: p.message,
                })),
            }
        };
    add(
        "channels.website".into(),
        cfg.website.enabled,
        &cfg.website.delivery,
        &|| noroshi_website::build(&cfg.website, env),
    );
    add(
        "channels.email".into(),
        cfg.email.enabled,
        &cfg.email.delivery,
        &|| noroshi_email::build(&cfg.email, env),
    );
    add(
        "channels.line".into(),
        cfg.line.enabled,
        &cfg.line.delivery,
        &|| noroshi_line::build(&cfg.line, env),
    );
    add("channels.x".into(), cfg.x.enabled, &cfg.x.delivery, &|| {
        noroshi_x::build(&cfg.x, env)
    });
    add(
        "channels.facebook".into(),
        cfg.facebook.enabled,
        &cfg.facebook.delivery,
        &|| noroshi_facebook::build(&cfg.facebook, env),
    );
    for (name, w) in &cfg.webhook {
        add(
            format!("channels.webhook.{name}"),
            w.enabled,
            &w.delivery,
            &|| noroshi_webhook::build(name, w, env),
        );
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Every channel name a submission may use, enabled or not (for clear refusals).
pub fn known_channel_names(cfg: &ChannelsConfig) -> Vec<String> {
    let mut names: Vec<String> = ["line", "x", "facebook", "email", "website"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(cfg.webhook.keys().map(|k| format!("webhook.{k}")));
    names
}
