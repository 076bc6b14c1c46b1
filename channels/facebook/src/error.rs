//! Graph API error bodies → `DeliveryError`, by `error.code` / `error_subcode` (CHANNELS.md §3.3).
//!
//! Graph answers `400` for almost everything, so the HTTP status says little; the table below
//! is the whole policy, kept as data so it reads like the reference it follows.

use std::ops::RangeInclusive;
use std::time::Duration;

use noroshi_channel_core::http::snippet;
use noroshi_channel_core::{DeliveryError, ErrorClass};
use serde::Deserialize;

/// `{"error":{…}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct GraphErrorBody {
    pub error: GraphError,
}

/// The fields of a Graph error the adapter uses.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GraphError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub is_transient: Option<bool>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    pub fn parse(body: &str) -> Option<GraphError> {
        serde_json::from_str::<GraphErrorBody>(body)
            .ok()
            .map(|b| b.error)
    }
}

/// What a Graph error code means to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Transient,
    RateLimited,
    /// Credentials or permissions: pause the channel until an operator resumes it.
    Auth,
    Permanent,
    /// 368, blocked for policy violations: stop posting, an operator decides.
    Blocked,
}

struct Rule {
    codes: RangeInclusive<i64>,
    kind: Kind,
    reason: &'static str,
}

const fn rule(codes: RangeInclusive<i64>, kind: Kind, reason: &'static str) -> Rule {
    Rule {
        codes,
        kind,
        reason,
    }
}

/// CHANNELS.md §3.3, top to bottom. The first matching rule wins.
const RULES: &[Rule] = &[
    rule(1..=1, Kind::Transient, "Graph API unknown error"),
    rule(2..=2, Kind::Transient, "Graph API service error"),
    rule(
        4..=4,
        Kind::RateLimited,
        "application request limit reached",
    ),
    rule(17..=17, Kind::RateLimited, "user request limit reached"),
    rule(32..=32, Kind::RateLimited, "page request limit reached"),
    rule(613..=613, Kind::RateLimited, "API call rate limit exceeded"),
    rule(
        80001..=80001,
        Kind::RateLimited,
        "too many calls to this Page account",
    ),
    rule(341..=341, Kind::RateLimited, "application limit reached"),
    rule(190..=190, Kind::Auth, "page token invalid"),
    rule(102..=102, Kind::Auth, "API session invalid"),
    rule(104..=104, Kind::Auth, "no access token was sent"),
    rule(10..=10, Kind::Auth, "permission denied"),
    rule(200..=299, Kind::Auth, "missing permission"),
    rule(3..=3, Kind::Auth, "the app lacks this capability"),
    // Not in CHANNELS.md's table: what Graph answers for a version it no longer serves. It
    // is configuration (raise `api_version`), so it pauses like an auth problem.
    rule(
        2635..=2635,
        Kind::Auth,
        "Graph API version no longer served",
    ),
    rule(100..=100, Kind::Permanent, "invalid parameter"),
    rule(
        368..=368,
        Kind::Blocked,
        "Page temporarily blocked for policy violations",
    ),
    rule(506..=506, Kind::Permanent, "duplicate post"),
    rule(
        1609005..=1609005,
        Kind::Permanent,
        "the link could not be scraped",
    ),
];

/// Code 190's subcodes, so an operator reads "page token expired", not a number.
const TOKEN_SUBCODES: &[(i64, &str)] = &[
    (458, "the app is not installed for the token's user"),
    (459, "the token's user is checkpointed"),
    (460, "the token's user changed their password"),
    (463, "page token expired"),
    (464, "the token's user is unconfirmed"),
    (467, "page token invalid"),
    (492, "page token session invalid"),
];

pub(crate) fn kind_of(code: i64, is_transient: bool) -> (Kind, &'static str) {
    let found = RULES.iter().find(|r| r.codes.contains(&code));
    match found {
        // Throttling stays throttling even when flagged transient: it has a wait to honour.
        Some(r) if r.kind == Kind::RateLimited => (r.kind, r.reason),
        _ if is_transient => (Kind::Transient, "Graph says this error is transient"),
        Some(r) => (r.kind, r.reason),
        None => (Kind::Permanent, "Graph API error"),
    }
}

fn reason_for(err: &GraphError, code: i64, fallback: &'static str) -> &'static str {
    if code == 190 {
        if let Some(sub) = err.error_subcode {
            if let Some((_, reason)) = TOKEN_SUBCODES.iter().find(|(s, _)| *s == sub) {
                return reason;
            }
        }
    }
    fallback
}

/// Classifies a non-2xx Graph answer. `retry_after` is what the usage headers or
/// `Retry-After` said; `scrub` removes credentials from anything the platform echoed.
pub(crate) fn classify(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    scrub: &dyn Fn(&str) -> String,
) -> DeliveryError {
    let Some(err) = GraphError::parse(body).filter(|e| e.code.is_some()) else {
        return classify_without_body(status, body, retry_after, scrub);
    };
    let code = err.code.unwrap_or_default();
    let (kind, fallback) = kind_of(code, err.is_transient.unwrap_or(false));
    let reason = reason_for(&err, code, fallback);
    let numbers = match err.error_subcode {
        Some(sub) => format!("{code}/{sub}"),
        None => code.to_string(),
    };
    let trace = err
        .fbtrace_id
        .as_deref()
        .map(|t| format!(" (fbtrace_id {t})"))
        .unwrap_or_default();
    let message = format!(
        "{reason} ({numbers}): {}{trace}",
        scrub(&snippet(&err.message))
    );
    let class = match kind {
        Kind::Transient => ErrorClass::Transient,
        Kind::RateLimited => ErrorClass::RateLimited {
            retry_after: retry_after.or(Some(DEFAULT_THROTTLE_WAIT)),
        },
        Kind::Auth => ErrorClass::Auth,
        Kind::Permanent => ErrorClass::Permanent,
        Kind::Blocked => ErrorClass::Quota { until: None },
    };
    DeliveryError::new(class, message).with_status(status)
}

/// CHANNELS.md §3.4: without `estimated_time_to_regain_access`, back off from 60 s.
pub(crate) const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(60);

/// A proxy's HTML page or an empty body: only the status is left to go on.
fn classify_without_body(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    scrub: &dyn Fn(&str) -> String,
) -> DeliveryError {
    let message = format!(
        "HTTP {status} without a Graph error: {}",
        scrub(&snippet(body))
    );
    let err = match status {
        429 => DeliveryError::rate_limited(retry_after.or(Some(DEFAULT_THROTTLE_WAIT)), message),
        401 | 403 => DeliveryError::auth(message),
        500..=599 => DeliveryError::transient(message),
        _ => DeliveryError::permanent(message),
    };
    err.with_status(status)
}
