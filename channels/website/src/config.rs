//! `[channels.website]`: where the site is written, where it is served, how the feeds are named.

use std::path::PathBuf;

use noroshi_channel_core::{ConfigProblem, DeliverySettings};
use serde::Deserialize;

/// The most entries the feeds and the index may list; also how many entries the adapter's
/// entry index keeps (older pages stay on disk, they only leave the listings).
pub const MAX_FEED_ENTRIES: usize = 1000;

/// The year in the derived `tag:` feed id (RFC 4151 wants a date at which the authority
/// held the name). Fixed, because a feed id must never change once readers have it.
const FEED_ID_YEAR: &str = "2026";

/// `[channels.website]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the channel is on. The website is the only channel enabled by default.
    pub enabled: bool,
    /// Directory the pages, `index.html`, `feed.atom` and `feed.rss` are written to; the
    /// daemon serves it at `/site/`. Relative paths are relative to the working directory.
    pub output_dir: PathBuf,
    /// Public URL of `output_dir`, ending in `/`. Pages are `{base_url}a/{id}.html`; feeds
    /// and other channels' "shorten and link" use it, so it must be the address residents
    /// reach.
    pub base_url: String,
    /// Title of the site, the index page and both feeds.
    pub site_title: String,
    /// One sentence describing the site (RSS `description`, index page).
    pub site_description: String,
    /// Who publishes the site (Atom `author/name`, page footers), e.g. the city's name.
    pub site_author: String,
    /// Permanent IRI of the Atom feed. Unset: `tag:{host of base_url},2026:noroshi/announcements`.
    /// Pin it before moving the site to another host, or feed readers see a new feed.
    pub feed_id: Option<String>,
    /// How many of the newest announcements the index page and the feeds list.
    pub feed_entries: usize,
    /// A drill's test target: a draft folder name under `output_dir` (no `/`).
    pub exercise_target: Option<String>,
    /// Queue and pacing settings (`[channels.website.delivery]`).
    #[serde(default)]
    pub delivery: DeliverySettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            output_dir: PathBuf::from("data/site"),
            base_url: "http://127.0.0.1:8080/site/".to_string(),
            site_title: "お知らせ".to_string(),
            site_description: "市からのお知らせ".to_string(),
            site_author: "市役所".to_string(),
            feed_id: None,
            feed_entries: 50,
            exercise_target: None,
            delivery: DeliverySettings::default(),
        }
    }
}

impl Config {
    /// Every problem with the section, each naming its key. Pure: touches no file.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.output_dir.as_os_str().is_empty() {
            problems.push(ConfigProblem::new("output_dir", "must not be empty"));
        }
        match url::Url::parse(&self.base_url) {
            Ok(url) => {
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    problems.push(ConfigProblem::new(
                        "base_url",
                        "must be an absolute http:// or https:// URL",
                    ));
                } else if !self.base_url.ends_with('/') {
                    problems.push(ConfigProblem::new(
                        "base_url",
                        "must end with `/` (pages are `{base_url}a/{id}.html`)",
                    ));
                } else if url.query().is_some() || url.fragment().is_some() {
                    problems.push(ConfigProblem::new(
                        "base_url",
                        "must not have a query or a fragment",
                    ));
                }
            }
            Err(e) => problems.push(ConfigProblem::new(
                "base_url",
                format!("is not a valid URL: {e}"),
            )),
        }
        for (key, value) in [
            ("site_title", &self.site_title),
            ("site_description", &self.site_description),
            ("site_author", &self.site_author),
        ] {
            if value.trim().is_empty() {
                problems.push(ConfigProblem::new(key, "must not be empty"));
            }
        }
        if let Some(id) = &self.feed_id {
            // An IRI needs a scheme; `tag:`, `urn:` and `https:` ids all have one.
            let scheme_ok = id.split_once(':').is_some_and(|(scheme, rest)| {
                !rest.is_empty()
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            });
            if !scheme_ok || id.chars().any(char::is_whitespace) {
                problems.push(ConfigProblem::new(
                    "feed_id",
                    "must be an absolute IRI such as `tag:city.example.jp,2026:announcements`",
                ));
            }
        }
        if self.feed_entries == 0 || self.feed_entries > MAX_FEED_ENTRIES {
            problems.push(ConfigProblem::new(
                "feed_entries",
                format!("must be between 1 and {MAX_FEED_ENTRIES}"),
            ));
        }
        if let Some(target) = &self.exercise_target {
            if !is_safe_folder_name(target) {
                problems.push(ConfigProblem::new(
                    "exercise_target",
                    "must be one folder name of letters, digits, `-`, `_` or `.`, not starting with `.`",
                ));
            } else if target == "a" {
                problems.push(ConfigProblem::new(
                    "exercise_target",
                    "must not be `a`, the folder of published pages",
                ));
            }
        }
        problems
    }

    /// The Atom feed id: configured, or derived from the host of `base_url`.
    pub fn feed_id(&self) -> String {
        if let Some(id) = &self.feed_id {
            return id.clone();
        }
        let host = url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".to_string());
        format!("tag:{host},{FEED_ID_YEAR}:noroshi/announcements")
    }
}

fn is_safe_folder_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The site-wide facts every page and feed repeats, resolved once from the config.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Site {
    pub title: String,
    pub description: String,
    pub author: String,
    /// Ends in `/`.
    pub base_url: String,
    pub atom_url: String,
    pub rss_url: String,
    pub feed_id: String,
    /// Language of the index page and of the feeds as a whole.
    pub lang: String,
}

impl Site {
    pub fn from_config(config: &Config) -> Site {
        let mut base_url = config.base_url.clone();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        Site {
            title: crate::render::clean_line(&config.site_title),
            description: crate::render::clean_line(&config.site_description),
            author: crate::render::clean_line(&config.site_author),
            atom_url: format!("{base_url}feed.atom"),
            rss_url: format!("{base_url}feed.rss"),
            base_url,
            feed_id: config.feed_id(),
            lang: "ja".to_string(),
        }
    }
}
