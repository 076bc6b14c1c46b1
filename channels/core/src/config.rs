//! Channel config sections as the daemon's registry drives them, and the checks their
//! validations share.

use std::sync::Arc;

use reqwest::Url;

use crate::{BuildEnv, Channel, ConfigProblem, DeliverySettings, ExposeSecret, SecretString};

/// One channel's config section (`[channels.line]`, `[channels.webhook.cms]`), as the
/// daemon's registry sees it: the one interface through which `check-config`, the build
/// at start and the list of channel names reach an adapter.
///
/// Each adapter crate implements it for its `Config`; the daemon lists every section once
/// (`src/registry.rs`) and drives everything from that list.
pub trait ChannelConfig {
    /// Whether the channel is on: only enabled sections are validated and built.
    fn enabled(&self) -> bool;

    /// `[channels.NAME.delivery]`: the queue and pacing settings.
    fn delivery(&self) -> &DeliverySettings;

    /// Every problem with the section, each key relative to it (`page_id`,
    /// `delivery.rate_per_second`). Pure: no I/O.
    fn validate(&self) -> Vec<ConfigProblem>;

    /// Validates the section and builds the channel named `name`, the name the API and
    /// the queue use (`line`, `webhook.cms`). No network I/O.
    fn build(&self, name: &str, env: &BuildEnv) -> Result<Arc<dyn Channel>, Vec<ConfigProblem>>;
}

/// `value` as an absolute `http://` or `https://` URL (which always has a host), else
/// `None`.
pub fn http_url(value: &str) -> Option<Url> {
    Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// An API base such as `https://api.line.me`: an http(s) URL without a query string (paths
/// are appended to it). `not_http` words the problem when it is no http(s) URL at all.
pub fn check_api_base(
    key: &str,
    value: &str,
    not_http: impl FnOnce() -> String,
) -> Option<ConfigProblem> {
    match http_url(value) {
        Some(u) if u.query().is_some() => {
            Some(ConfigProblem::new(key, "must not carry a query string"))
        }
        Some(_) => None,
        None => Some(ConfigProblem::new(key, not_http())),
    }
}

/// Whether a secret is empty or only white space (an empty variable, a blank file).
pub fn is_blank(secret: &SecretString) -> bool {
    secret.expose_secret().trim().is_empty()
}

/// A secret the channel cannot work without. Missing: the problem says where to give it,
/// `KEY_env` (naming the variable read when none is named, if there is one) or `KEY_file`;
/// blank: `is empty`. The value is never echoed.
pub fn required_secret(
    key: &str,
    value: Option<&SecretString>,
    default_env: Option<&str>,
) -> Option<ConfigProblem> {
    match value {
        None => {
            let default = default_env
                .map(|var| format!(" (default {var})"))
                .unwrap_or_default();
            Some(ConfigProblem::new(
                key,
                format!("missing: set {key}_env{default} or {key}_file"),
            ))
        }
        Some(s) if is_blank(s) => Some(ConfigProblem::new(key, "is empty")),
        Some(_) => None,
    }
}

/// Deserializes a text setting that may arrive as a bare number: an id set through the
/// environment (`NOROSHI__CHANNELS__FACEBOOK__PAGE_ID=1234567890`) is read as TOML, and a
/// run of digits is an integer there. Use with `#[serde(deserialize_with = "…")]`.
pub fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("text or a non-negative whole number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            if v < 0 {
                return Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self));
            }
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text)
}

/// [`text_or_number`] for an optional setting.
pub fn optional_text_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    text_or_number(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_absolute_http_or_https() {
        assert!(http_url("https://api.line.me").is_some());
        assert!(http_url("http://127.0.0.1:9/x?y=1").is_some());
        for bad in [
            "",
            "api.line.me",
            "ftp://example.jp/",
            "mailto:a@example.jp",
            "https://",
        ] {
            assert!(http_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_api_base_has_no_query() {
        let worded = || "must be an http(s) URL".to_string();
        assert_eq!(
            check_api_base("api_base", "https://api.x.com", worded),
            None
        );
        assert_eq!(
            check_api_base("api_base", "https://api.x.com/?a=1", worded),
            Some(ConfigProblem::new(
                "api_base",
                "must not carry a query string"
            ))
        );
        assert_eq!(
            check_api_base("api_base", "api.x.com", worded),
            Some(ConfigProblem::new("api_base", "must be an http(s) URL"))
        );
    }

    #[test]
    fn a_required_secret_says_where_to_give_it_and_never_echoes_it() {
        assert_eq!(
            required_secret("channel_access_token", None, None)
                .unwrap()
                .message,
            "missing: set channel_access_token_env or channel_access_token_file"
        );
        assert_eq!(
            required_secret("page_access_token", None, Some("FACEBOOK_PAGE_TOKEN"))
                .unwrap()
                .message,
            "missing: set page_access_token_env (default FACEBOOK_PAGE_TOKEN) or \
             page_access_token_file"
        );
        let blank = SecretString::from(" \n".to_string());
        assert_eq!(
            required_secret("token", Some(&blank), None),
            Some(ConfigProblem::new("token", "is empty"))
        );
        let given = SecretString::from("s3cret".to_string());
        assert_eq!(required_secret("token", Some(&given), None), None);
        assert!(is_blank(&blank) && !is_blank(&given));
    }
}
