//! `[channels.facebook]`: the Page, the Graph API version and the credentials.

use noroshi_channel_core::config::{http_url, is_blank, required_secret};
use noroshi_channel_core::{ConfigProblem, DeliverySettings, SecretString};
use serde::Deserialize;

/// Graph API versions and the day Meta stops serving them (CHANNELS.md §3.1). A version
/// past its day is served by the oldest live version instead: a silent behaviour change.
pub(crate) const VERSION_EXPIRY: &[(u32, &str)] = &[
    (21, "2027-01-21"),
    (22, "2027-05-20"),
    (23, "2027-10-08"),
    (24, "2028-02-18"),
    (25, "2028-07-29"),
];

/// The oldest version still served when this was written (November 2026).
pub(crate) const OLDEST_LIVE_VERSION: u32 = 21;

/// `[channels.facebook]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Post to the Page at all.
    pub enabled: bool,
    /// The Graph API host; tests point it at the fake on loopback.
    pub graph_base: String,
    /// The Graph API version, `vNN.0`. Versions expire about two years after release.
    pub api_version: String,
    /// The numeric id of the city's Facebook Page (text or digits: set through the
    /// environment it arrives as a number).
    #[serde(deserialize_with = "noroshi_channel_core::config::text_or_number")]
    pub page_id: String,
    /// The Page (or system-user) access token; resolved by the daemon from
    /// `page_access_token_env` (default `FACEBOOK_PAGE_TOKEN`) or `page_access_token_file`.
    pub page_access_token: Option<SecretString>,
    /// The app secret, for `appsecret_proof` on every call (needed when the app requires
    /// it). Sent as a form parameter, never in a URL.
    pub app_secret: Option<SecretString>,
    /// An app access token (`{app-id}|{app-secret}`) for `debug_token`; without it the Page
    /// token inspects itself.
    pub app_token: Option<SecretString>,
    /// Above this percentage in `X-App-Usage` / `X-Business-Use-Case-Usage` the adapter
    /// asks the queue to slow down before it sends (1–99).
    pub usage_slowdown_percent: u8,
    /// A drill's test target (a test Page id); kept for the disaster issue.
    #[serde(deserialize_with = "noroshi_channel_core::config::optional_text_or_number")]
    pub exercise_target: Option<String>,
    /// Other languages to post, each as its own post after the primary one (e.g.
    /// `["en"]`); default none: only the announcement's own language.
    pub languages: Vec<String>,
    /// Queue and pacing settings for this channel.
    pub delivery: DeliverySettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            graph_base: "https://graph.facebook.com".to_string(),
            api_version: "v25.0".to_string(),
            page_id: String::new(),
            page_access_token: None,
            app_secret: None,
            app_token: None,
            usage_slowdown_percent: 80,
            exercise_target: None,
            languages: Vec::new(),
            delivery: DeliverySettings::default(),
        }
    }
}

/// `vNN.0` → `NN`.
pub(crate) fn parse_version(v: &str) -> Option<u32> {
    let major = v.strip_prefix('v')?.strip_suffix(".0")?;
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    major.parse().ok()
}

impl Config {
    /// Pure checks, no I/O; called only when the channel is enabled.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if http_url(&self.graph_base).is_none_or(|u| u.query().is_some()) {
            problems.push(ConfigProblem::new(
                "graph_base",
                "must be an http(s) URL without a query, e.g. https://graph.facebook.com",
            ));
        }
        match parse_version(&self.api_version) {
            None => problems.push(ConfigProblem::new(
                "api_version",
                format!(
                    "`{}` is not a Graph API version; write it as `v25.0`",
                    self.api_version
                ),
            )),
            Some(major) if major < OLDEST_LIVE_VERSION => problems.push(ConfigProblem::new(
                "api_version",
                format!(
                    "Graph API {} is no longer served (Meta answers with the oldest live \
                     version instead); use v25.0 or newer",
                    self.api_version
                ),
            )),
            Some(_) => {}
        }
        if self.page_id.is_empty() || !self.page_id.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(ConfigProblem::new(
                "page_id",
                "must be the Page's numeric id (Page settings → About → Page ID)",
            ));
        }
        problems.extend(required_secret(
            "page_access_token",
            self.page_access_token.as_ref(),
            Some("FACEBOOK_PAGE_TOKEN"),
        ));
        for (key, secret) in [
            ("app_secret", &self.app_secret),
            ("app_token", &self.app_token),
        ] {
            if secret.as_ref().is_some_and(is_blank) {
                problems.push(ConfigProblem::new(
                    key,
                    "is empty; remove it or give a value",
                ));
            }
        }
        if !(1..=99).contains(&self.usage_slowdown_percent) {
            problems.push(ConfigProblem::new(
                "usage_slowdown_percent",
                "must be between 1 and 99 (a percentage of the Graph API allowance)",
            ));
        }
        problems
    }
}
