//! `[channels.email]`: the SMTP submission settings and their pure validation.

use noroshi_channel_core::{ConfigProblem, DeliverySettings, SecretString};
use serde::Deserialize;

use crate::address::parse_mailbox;

/// How the connection to the submission server is protected (CHANNELS.md §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text: only for a relay on loopback (the fake, a local MTA).
    None,
    /// Port 587: plain `EHLO`, then `STARTTLS` is required before `AUTH`.
    #[default]
    Starttls,
    /// Port 465: TLS from the first byte (RFC 8314).
    Tls,
}

/// `[channels.email]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the channel is built at all.
    pub enabled: bool,
    /// The submission server's host name (also the name its TLS certificate must carry).
    pub smtp_host: String,
    /// The submission port: 587 for `starttls`, 465 for `tls`.
    pub smtp_port: u16,
    /// `none` | `starttls` | `tls`.
    pub tls: TlsMode,
    /// SMTP AUTH user; when unset the client does not authenticate.
    pub username: Option<String>,
    /// SMTP AUTH password (from `password_env` / `password_file`).
    pub password: Option<SecretString>,
    /// The `From:` mailbox, e.g. `Suzaka City <info@example.jp>`.
    pub from: String,
    /// An optional `Reply-To:` mailbox.
    pub reply_to: Option<String>,
    /// The envelope sender (`MAIL FROM`) that receives bounces; default the `from` address.
    /// When set and its local part has no `+`, each message uses `local+{delivery id}@domain`
    /// (VERP) so an asynchronous bounce names the delivery it is about.
    pub bounce_address: Option<String>,
    /// The list identifier for `List-Id` (RFC 2919), e.g. `announce.city.example.jp`.
    pub list_id: String,
    /// A display name for `List-Id`, e.g. `須坂市からのお知らせ`.
    pub list_name: Option<String>,
    /// When set, `List-Unsubscribe` also carries `<mailto:unsubscribe+TOKEN@this domain>`
    /// after the HTTPS URI.
    pub unsubscribe_mailto_domain: Option<String>,
    /// The right-hand side of `Message-ID`; default the `from` address's domain.
    pub message_id_domain: Option<String>,
    /// SMTP connections kept open and reused; also the most open at once for normal mail.
    pub pool_size: u32,
    /// Connections kept for disaster copies beyond `pool_size`: normal mail can never hold
    /// them, so a disaster alert never waits for a newsletter's transactions.
    pub disaster_connections: u32,
    /// Seconds allowed for each step: connecting (with TLS and AUTH), each command, and the
    /// server's reply to the end of the message.
    pub timeout_secs: u64,
    /// A drill's test target (an address), kept for drills.
    pub exercise_target: Option<String>,
    /// Queue pacing for this channel.
    #[serde(default)]
    pub delivery: DeliverySettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            smtp_host: "127.0.0.1".into(),
            smtp_port: 587,
            tls: TlsMode::Starttls,
            username: None,
            password: None,
            from: "Suzaka City <info@example.jp>".into(),
            reply_to: None,
            bounce_address: None,
            list_id: "announce.city.example.jp".into(),
            list_name: None,
            unsubscribe_mailto_domain: None,
            message_id_domain: None,
            pool_size: 4,
            disaster_connections: 1,
            timeout_secs: 30,
            exercise_target: None,
            delivery: DeliverySettings::default(),
        }
    }
}

impl Config {
    /// Every bad or missing key, relative to `[channels.email]`. Pure: no I/O.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| problems.push(ConfigProblem::new(key, message));

        if self.smtp_host.trim().is_empty() || self.smtp_host.contains(char::is_whitespace) {
            bad("smtp_host", "must be a host name or an IP address".into());
        }
        if self.smtp_port == 0 {
            bad(
                "smtp_port",
                "must be a port number (587 for starttls, 465 for tls)".into(),
            );
        }
        if let Err(e) = parse_mailbox(&self.from) {
            bad(
                "from",
                format!("is not a mailbox like `Name <user@domain>`: {e}"),
            );
        }
        if let Some(reply_to) = &self.reply_to {
            if let Err(e) = parse_mailbox(reply_to) {
                bad("reply_to", format!("is not a mailbox: {e}"));
            }
        }
        if let Some(bounce) = &self.bounce_address {
            match parse_mailbox(bounce) {
                Ok((Some(_), _)) => bad(
                    "bounce_address",
                    "must be a bare address (user@domain), not a mailbox with a name".into(),
                ),
                Ok(_) => {}
                Err(e) => bad("bounce_address", format!("is not an address: {e}")),
            }
        }
        if !is_list_id(&self.list_id) {
            bad(
                "list_id",
                "must be a dotted name like `announce.city.example.jp` (RFC 2919)".into(),
            );
        }
        if let Some(name) = &self.list_name {
            if name.contains(['\r', '\n', '<', '>']) {
                bad("list_name", "must be one line without `<` or `>`".into());
            }
        }
        if let Some(domain) = &self.unsubscribe_mailto_domain {
            if !is_domain(domain) {
                bad("unsubscribe_mailto_domain", "must be a domain name".into());
            }
        }
        if let Some(domain) = &self.message_id_domain {
            if !is_domain(domain) {
                bad("message_id_domain", "must be a domain name".into());
            }
        }
        if self.pool_size == 0 || self.pool_size > 64 {
            bad("pool_size", "must be between 1 and 64".into());
        }
        if self.disaster_connections == 0 || self.disaster_connections > 16 {
            bad("disaster_connections", "must be between 1 and 16".into());
        }
        if self.timeout_secs == 0 || self.timeout_secs > 600 {
            bad("timeout_secs", "must be between 1 and 600 seconds".into());
        }
        match (&self.username, &self.password) {
            (Some(_), None) => bad(
                "password",
                "is required when `username` is set (password_env or password_file)".into(),
            ),
            (None, Some(_)) => bad("username", "is required when a password is set".into()),
            (Some(user), Some(_)) if user.is_empty() => bad("username", "must not be empty".into()),
            _ => {}
        }
        if self.username.is_some()
            && self.tls == TlsMode::None
            && !is_loopback_host(&self.smtp_host)
        {
            bad(
                "tls",
                "`none` would send the SMTP password in clear text to a remote host; use starttls or tls"
                    .into(),
            );
        }
        if let Some(target) = &self.exercise_target {
            if let Err(e) = crate::address::validate_address(target) {
                bad(
                    "exercise_target",
                    format!("is not a deliverable address: {e}"),
                );
            }
        }
        problems
    }

    /// The `Message-ID` right-hand side: configured, or the `from` address's domain.
    pub(crate) fn message_id_domain(&self) -> String {
        self.message_id_domain.clone().unwrap_or_else(|| {
            parse_mailbox(&self.from)
                .map(|(_, addr)| addr.domain().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }
}

fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_list_id(s: &str) -> bool {
    // RFC 2919: a dot-atom-text list-label "." list-id-namespace; any dotted atext works.
    s.contains('.')
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
