//! `[channels.x]`: endpoints, credentials (OAuth 1.0a or 2.0) and the long-text policy.

use noroshi_channel_core::config::{check_api_base, is_blank};
use noroshi_channel_core::fetch::FetchPolicy;
use noroshi_channel_core::{ConfigProblem, DeliverySettings, SecretString};
use serde::Deserialize;

/// Which credential set signs requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// OAuth 1.0a user context: the four secrets, HMAC-SHA1 signatures (CHANNELS.md §2.2).
    #[default]
    Oauth1,
    /// OAuth 2.0 user token with a rotating refresh token (CHANNELS.md §2.3).
    Oauth2,
}

/// What to do with a text over 280 weighted characters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongText {
    /// Refuse the announcement for X (a `422` naming the rule `max_weighted_length`).
    #[default]
    Refuse,
    /// Cut the text and append `… {page_url}` (the website page, else the link).
    Shorten,
    /// Split into a thread of replies, each post within 280.
    Thread,
}

/// `[channels.x]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the channel is active.
    pub enabled: bool,
    /// API host (`https://api.x.com`); a local fake's base URL in tests.
    pub api_base: String,
    /// Media upload host (`https://api.x.com`; `/2/media/upload` lives there).
    pub upload_base: String,
    /// `oauth1` (default) or `oauth2`.
    pub auth: AuthMode,
    /// OAuth 1.0a consumer (API) key of the app.
    pub consumer_key: Option<SecretString>,
    /// OAuth 1.0a consumer (API) secret of the app.
    pub consumer_secret: Option<SecretString>,
    /// OAuth 1.0a access token of the city's account (Read+Write).
    pub access_token: Option<SecretString>,
    /// OAuth 1.0a access token secret of the city's account.
    pub access_token_secret: Option<SecretString>,
    /// OAuth 2.0 client id of the app.
    pub oauth2_client_id: Option<SecretString>,
    /// OAuth 2.0 client secret (confidential clients only; absent for public clients).
    pub oauth2_client_secret: Option<SecretString>,
    /// OAuth 2.0 user access token (lasts 2 hours; refreshed on 401).
    pub oauth2_access_token: Option<SecretString>,
    /// OAuth 2.0 refresh token (`offline.access`); it rotates on every refresh.
    pub oauth2_refresh_token: Option<SecretString>,
    /// `refuse` (default), `shorten` or `thread`: texts over 280 weighted characters.
    pub long_text: LongText,
    /// A drill's test target (e.g. a test account's handle); stored for drill routing.
    pub exercise_target: Option<String>,
    /// Other languages to post, each as its own post after the primary one (e.g.
    /// `["en"]`); default none: only the announcement's own language.
    pub languages: Vec<String>,
    /// Queue and pacing settings for this channel.
    pub delivery: DeliverySettings,
    /// How announcement images are fetched: not a key of `[channels.x]`; the daemon sets it
    /// from `[security] allow_private_fetch` and `[server] platform_timeout_ms`. The default
    /// refuses loopback, private and other non-public addresses.
    #[serde(skip)]
    pub image_fetch: FetchPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            api_base: "https://api.x.com".into(),
            upload_base: "https://api.x.com".into(),
            auth: AuthMode::Oauth1,
            consumer_key: None,
            consumer_secret: None,
            access_token: None,
            access_token_secret: None,
            oauth2_client_id: None,
            oauth2_client_secret: None,
            oauth2_access_token: None,
            oauth2_refresh_token: None,
            long_text: LongText::Refuse,
            exercise_target: None,
            languages: Vec::new(),
            delivery: DeliverySettings::default(),
            image_fetch: FetchPolicy::default(),
        }
    }
}

impl Config {
    /// Pure checks, no I/O: every bad or missing key, named relative to `[channels.x]`.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("api_base", &self.api_base),
            ("upload_base", &self.upload_base),
        ] {
            problems.extend(check_api_base(key, value, || {
                "must be an http(s) URL".to_string()
            }));
        }
        let missing = |problems: &mut Vec<ConfigProblem>, key: &str, v: &Option<SecretString>| {
            if v.as_ref().is_none_or(is_blank) {
                problems.push(ConfigProblem::new(
                    key,
                    format!("required when auth = \"{}\"", self.auth_name()),
                ));
            }
        };
        match self.auth {
            AuthMode::Oauth1 => {
                missing(&mut problems, "consumer_key", &self.consumer_key);
                missing(&mut problems, "consumer_secret", &self.consumer_secret);
                missing(&mut problems, "access_token", &self.access_token);
                missing(
                    &mut problems,
                    "access_token_secret",
                    &self.access_token_secret,
                );
            }
            AuthMode::Oauth2 => {
                missing(&mut problems, "oauth2_client_id", &self.oauth2_client_id);
                missing(
                    &mut problems,
                    "oauth2_access_token",
                    &self.oauth2_access_token,
                );
                missing(
                    &mut problems,
                    "oauth2_refresh_token",
                    &self.oauth2_refresh_token,
                );
            }
        }
        if let Some(r) = self.delivery.disaster_reserve {
            if !(0.0..=0.9).contains(&r) {
                problems.push(ConfigProblem::new(
                    "delivery.disaster_reserve",
                    "must be between 0.0 and 0.9",
                ));
            }
        }
        if let Some(r) = self.delivery.rate_per_second {
            if r.is_nan() || r <= 0.0 {
                problems.push(ConfigProblem::new(
                    "delivery.rate_per_second",
                    "must be positive",
                ));
            }
        }
        problems
    }

    fn auth_name(&self) -> &'static str {
        match self.auth {
            AuthMode::Oauth1 => "oauth1",
            AuthMode::Oauth2 => "oauth2",
        }
    }
}
