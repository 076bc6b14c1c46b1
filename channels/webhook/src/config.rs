//! `[channels.webhook.NAME]`: one endpoint, its method, headers, body template and signing.

use std::collections::BTreeMap;

use noroshi_channel_core::config::http_url;
use noroshi_channel_core::{ConfigProblem, DeliverySettings, ExposeSecret, SecretString};
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

/// `[channels.webhook.NAME]`. Several named instances may be configured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Send to this endpoint at all.
    pub enabled: bool,
    /// The endpoint, `https://…`. Keep credentials out of it: use `secret_headers`.
    pub url: String,
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    /// Extra request headers, sent as written (not secret).
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are secrets (an `Authorization` bearer token, an API
    /// key); the daemon resolves each from `_env` / `_file` like any other secret.
    pub secret_headers: BTreeMap<String, SecretString>,
    /// A JSON template (minijinja syntax) with `{{title}}`, `{{body}}`, `{{text}}` (the
    /// override, or title and body), `{{link}}`, `{{id}}`, `{{priority}}`, `{{page_url}}`,
    /// `{{published_at}}`, `{{tags}}`, `{{exercise}}`, `{{lang}}`. Each placeholder prints
    /// its value JSON-encoded, quotes included: `{"title": {{ title }}}`; join text with
    /// `~`: `{"text": {{ title ~ "\n" ~ link }}}`. A missing link prints `null`.
    /// Unset: a JSON object of every field.
    pub body_template: Option<String>,
    /// A shared secret: every request carries an HMAC-SHA256 signature of its body.
    pub signing_secret: Option<SecretString>,
    /// The header carrying `sha256=` + hex HMAC-SHA256(signing_secret, exact body bytes).
    pub signature_header: String,
    /// The header carrying the send time (Unix seconds), with its own signature in
    /// `{timestamp_header}-Signature` over `"{timestamp}.{body}"`: a receiver that rejects
    /// old timestamps cannot be fed a replayed request.
    pub timestamp_header: String,
    /// Refuse announcements whose text (override, or title + body) is longer than this
    /// many characters.
    pub max_length: Option<usize>,
    /// A drill's test target (another endpoint URL); kept for the disaster issue.
    pub exercise_target: Option<String>,
    /// Queue and pacing settings for this instance.
    pub delivery: DeliverySettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            url: String::new(),
            method: "POST".to_string(),
            headers: BTreeMap::new(),
            secret_headers: BTreeMap::new(),
            body_template: None,
            signing_secret: None,
            signature_header: "X-Noroshi-Signature".to_string(),
            timestamp_header: "X-Noroshi-Timestamp".to_string(),
            max_length: None,
            exercise_target: None,
            delivery: DeliverySettings::default(),
        }
    }
}

/// Headers the adapter sets itself; a configured header may not replace them.
const RESERVED: &[&str] = &["content-length", "host", "idempotency-key"];

impl Config {
    /// Pure checks, no I/O; called only when the instance is enabled.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        match http_url(&self.url) {
            Some(u) => {
                if !u.username().is_empty() || u.password().is_some() {
                    problems.push(ConfigProblem::new(
                        "url",
                        "must not carry credentials (URLs get printed): use secret_headers",
                    ));
                }
            }
            None => problems.push(ConfigProblem::new(
                "url",
                "must be an http(s) URL, e.g. https://cms.example.jp/hooks/noroshi",
            )),
        }
        if !matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            problems.push(ConfigProblem::new(
                "method",
                format!("`{}` is not one of POST, PUT, PATCH", self.method),
            ));
        }
        let mut own = vec![
            self.signature_header.to_ascii_lowercase(),
            self.timestamp_header.to_ascii_lowercase(),
            format!("{}-signature", self.timestamp_header.to_ascii_lowercase()),
        ];
        own.extend(RESERVED.iter().map(|s| s.to_string()));
        for (key, name) in [
            ("signature_header", &self.signature_header),
            ("timestamp_header", &self.timestamp_header),
        ] {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(ConfigProblem::new(key, "is not a valid header name"));
            }
        }
        for (name, value) in &self.headers {
            let key = format!("headers.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(ConfigProblem::new(key, "is not a valid header name"));
            } else if HeaderValue::from_str(value).is_err() {
                problems.push(ConfigProblem::new(key, "is not a valid header value"));
            } else if own.contains(&name.to_ascii_lowercase()) {
                problems.push(ConfigProblem::new(key, "is set by the adapter itself"));
            } else if self
                .secret_headers
                .keys()
                .any(|s| s.eq_ignore_ascii_case(name))
            {
                problems.push(ConfigProblem::new(key, "is also in secret_headers"));
            }
        }
        for (name, value) in &self.secret_headers {
            let key = format!("secret_headers.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(ConfigProblem::new(key, "is not a valid header name"));
            } else if value.expose_secret().is_empty()
                || HeaderValue::from_str(value.expose_secret()).is_err()
            {
                // The value itself is never echoed.
                problems.push(ConfigProblem::new(
                    key,
                    "is empty or not a valid header value",
                ));
            } else if own.contains(&name.to_ascii_lowercase()) {
                problems.push(ConfigProblem::new(key, "is set by the adapter itself"));
            }
        }
        if let Err(e) = crate::render::check_template(self.template()) {
            problems.push(ConfigProblem::new("body_template", e.message));
        }
        if self
            .signing_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().is_empty())
        {
            problems.push(ConfigProblem::new("signing_secret", "is empty"));
        }
        if self.max_length == Some(0) {
            problems.push(ConfigProblem::new("max_length", "must be at least 1"));
        }
        problems
    }

    /// The configured template, or the default object of every field.
    pub fn template(&self) -> &str {
        self.body_template
            .as_deref()
            .unwrap_or(crate::render::DEFAULT_TEMPLATE)
    }
}

/// Instance names become `webhook.NAME` in the API and in metrics.
pub(crate) fn validate_name(name: &str) -> Option<ConfigProblem> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!ok).then(|| {
        ConfigProblem::new(
            "",
            format!("webhook name `{name}` must be 1–64 letters, digits, `_` or `-`"),
        )
    })
}
