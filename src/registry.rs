//! The one place the daemon learns which channel adapters exist.
//!
//! [`sections`] lists every channel section once; `check-config` (the per-channel part of
//! [`crate::config::validate`]), the build at start ([`build_channels`]) and the names a
//! submission may use ([`known_channel_names`]) all walk that list, each adapter reached
//! through its [`ChannelConfig`]. A new channel costs one crate, one field in
//! [`ChannelsConfig`] and one line in [`sections`].

use std::sync::Arc;

use noroshi_channel_core::{BuildEnv, Channel, ChannelConfig, ConfigProblem, DeliverySettings};

use crate::config::{ChannelsConfig, Problem};

/// An enabled channel with its per-channel queue settings.
pub struct Registered {
    pub channel: Arc<dyn Channel>,
    pub delivery: DeliverySettings,
}

/// One channel section of the config.
pub struct Section<'a> {
    /// The channel's name in the API and the queue: `line`, `webhook.cms`. Its section is
    /// `[channels.{name}]`.
    pub name: String,
    pub config: &'a dyn ChannelConfig,
}

impl Section<'_> {
    /// The section's config key: `channels.line`, `channels.webhook.cms`.
    pub fn key(&self) -> String {
        format!("channels.{}", self.name)
    }

    /// A problem the adapter found, with its full config key.
    pub fn problem(&self, found: ConfigProblem) -> Problem {
        let key = if found.key.is_empty() {
            self.key()
        } else {
            format!("{}.{}", self.key(), found.key)
        };
        Problem {
            key,
            message: found.message,
        }
    }
}

/// Every channel section, enabled or not, in this order: the fixed channels, then each
/// webhook instance by name. The one list of channels.
pub fn sections(cfg: &ChannelsConfig) -> Vec<Section<'_>> {
    let fixed: [(&str, &dyn ChannelConfig); 5] = [
        ("line", &cfg.line),
        ("x", &cfg.x),
        ("facebook", &cfg.facebook),
        ("email", &cfg.email),
        ("website", &cfg.website),
    ];
    let webhooks = cfg.webhook.iter().map(|(instance, w)| Section {
        name: format!("webhook.{instance}"),
        config: w as &dyn ChannelConfig,
    });
    fixed
        .into_iter()
        .map(|(name, config)| Section {
            name: name.to_string(),
            config,
        })
        .chain(webhooks)
        .collect()
}

/// What validation finds in the enabled channel sections (pure, no I/O), each problem
/// naming its full key. Disabled sections are not checked.
pub fn validate_channels(cfg: &ChannelsConfig) -> Vec<Problem> {
    sections(cfg)
        .iter()
        .filter(|s| s.config.enabled())
        .flat_map(|s| s.config.validate().into_iter().map(|p| s.problem(p)))
        .collect()
}

/// Builds every enabled channel. Problems name their full config key.
pub fn build_channels(
    cfg: &ChannelsConfig,
    env: &BuildEnv,
) -> Result<Vec<Registered>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for section in sections(cfg).iter().filter(|s| s.config.enabled()) {
        match section.config.build(&section.name, env) {
            Ok(channel) => out.push(Registered {
                channel,
                delivery: section.config.delivery().clone(),
            }),
            Err(found) => problems.extend(found.into_iter().map(|p| section.problem(p))),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Every channel name a submission may use, enabled or not (for clear refusals).
pub fn known_channel_names(cfg: &ChannelsConfig) -> Vec<String> {
    sections(cfg).into_iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &std::path::Path) -> BuildEnv {
        BuildEnv {
            http: reqwest::Client::new(),
            data_dir: dir.to_path_buf(),
            public_base_url: "http://127.0.0.1:8080/".into(),
            clock: noroshi_channel_core::system_clock(),
        }
    }

    fn channels(toml: &str) -> ChannelsConfig {
        toml::from_str(toml).unwrap()
    }

    const ALL: &str = r#"
        [line]
        enabled = true
        channel_access_token = "line-token"
        [x]
        enabled = true
        consumer_key = "a"
        consumer_secret = "b"
        access_token = "c"
        access_token_secret = "d"
        [facebook]
        enabled = true
        page_id = "1001"
        page_access_token = "fb-token"
        [email]
        enabled = true
        tls = "none"
        [website]
        enabled = true
        [webhook.cms]
        enabled = true
        url = "https://cms.example.jp/hook"
        [webhook.chat]
        url = "https://chat.example.jp/hook"
        [webhook.chat.delivery]
        max_attempts = 2
    "#;

    #[test]
    fn one_list_names_every_section_once() {
        let cfg = channels(ALL);
        let names: Vec<(String, String)> = sections(&cfg)
            .iter()
            .map(|s| (s.name.clone(), s.key()))
            .collect();
        assert_eq!(
            names,
            [
                ("line", "channels.line"),
                ("x", "channels.x"),
                ("facebook", "channels.facebook"),
                ("email", "channels.email"),
                ("website", "channels.website"),
                ("webhook.chat", "channels.webhook.chat"),
                ("webhook.cms", "channels.webhook.cms"),
            ]
            .map(|(n, k)| (n.to_string(), k.to_string()))
        );
        assert_eq!(
            known_channel_names(&cfg),
            sections(&cfg)
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        );
        // Enabled or not, every section is known.
        let defaults = ChannelsConfig::default();
        assert_eq!(
            known_channel_names(&defaults),
            ["line", "x", "facebook", "email", "website"]
        );
    }

    #[test]
    fn build_walks_the_same_list_and_keeps_each_delivery_section() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = channels(ALL);
        cfg.website.output_dir = dir.path().join("site");
        cfg.webhook.get_mut("chat").unwrap().enabled = true;
        let built = build_channels(&cfg, &env(dir.path())).unwrap_or_else(|p| panic!("{p:?}"));
        let names: Vec<&str> = built.iter().map(|r| r.channel.name()).collect();
        assert_eq!(
            names,
            [
                "line",
                "x",
                "facebook",
                "email",
                "website",
                "webhook.chat",
                "webhook.cms"
            ]
        );
        let chat = built
            .iter()
            .find(|r| r.channel.name() == "webhook.chat")
            .unwrap();
        assert_eq!(chat.delivery.max_attempts, Some(2));
        // Disabled sections are neither built nor validated.
        let only_site = build_channels(&ChannelsConfig::default(), &env(dir.path())).unwrap();
        assert_eq!(only_site.len(), 1);
        assert_eq!(only_site[0].channel.name(), "website");
        assert!(validate_channels(&ChannelsConfig::default()).is_empty());
    }

    #[test]
    fn problems_name_their_full_key_in_validation_and_build_alike() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = channels(
            r#"
            [facebook]
            enabled = true
            page_id = "not-a-number"
            page_access_token = "t"
            [webhook.cms]
            enabled = true
            url = "ftp://cms.example.jp/"
            [webhook.off]
            url = "also wrong, but disabled"
            "#,
        );
        let keys = |problems: Vec<Problem>| -> Vec<String> {
            problems.into_iter().map(|p| p.key).collect()
        };
        let expected = ["channels.facebook.page_id", "channels.webhook.cms.url"];
        assert_eq!(keys(validate_channels(&cfg)), expected);
        let built = build_channels(&cfg, &env(dir.path())).err().unwrap();
        assert_eq!(keys(built), expected);
        // A problem about the whole section is named by the section itself.
        let bad_name =
            channels("[webhook.\"Bad Name\"]\nenabled = true\nurl = \"https://a.jp/\"\n");
        let built = build_channels(&bad_name, &env(dir.path())).err().unwrap();
        assert_eq!(keys(built), ["channels.webhook.Bad Name"]);
    }
}
