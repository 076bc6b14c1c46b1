//! Helpers shared by the HTTP adapters: `Retry-After`, transport failures, HTTP's own
//! status semantics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::{DeliveryError, ErrorClass};

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A header as an integer, for `x-rate-limit-remaining` and friends.
pub fn header_i64(headers: &HeaderMap, name: &str) -> Option<i64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Classifies a transport failure (no HTTP response was read).
///
/// `write` says whether the request changes state on a platform without an idempotency
/// key: a timeout or reset after such a request may have been sent is `Uncertain` (the
/// queue reconciles before resending); before it was sent (connect failure) it is
/// `Transient`. The URL is stripped from the message: credentials never travel in URLs,
/// but paths are noise to operators.
pub fn transport_error(err: reqwest::Error, write: bool) -> DeliveryError {
    let err = err.without_url();
    let message = format!("request failed: {err}");
    if err.is_connect() || !write {
        DeliveryError::transient(message)
    } else if err.is_timeout() || err.is_request() || err.is_body() || err.is_decode() {
        DeliveryError::uncertain(message)
    } else {
        DeliveryError::transient(message)
    }
}

/// What an HTTP status means by HTTP's own semantics alone, for an endpoint that says
/// nothing more (a generic webhook, a proxy's page in front of a platform). `retry_after`
/// is what the response's `Retry-After` said.
///
/// Platforms with their own error bodies classify by their own tables first.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> ErrorClass {
    match status {
        408 | 429 => ErrorClass::RateLimited { retry_after },
        401 | 403 => ErrorClass::Auth,
        500..=599 => ErrorClass::Transient,
        // 3xx is left here only when redirects were not followed: a config problem.
        _ => ErrorClass::Permanent,
    }
}

/// Cuts a platform's error body to a length fit for a log line.
pub fn snippet(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    if body.chars().count() <= MAX {
        body.to_string()
    } else {
        let cut: String = body.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Mon, 23 Nov 2026 06:00:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn statuses_are_classified_by_http_semantics() {
        let wait = Some(Duration::from_secs(7));
        let table = [
            (408, ErrorClass::RateLimited { retry_after: wait }),
            (429, ErrorClass::RateLimited { retry_after: wait }),
            (401, ErrorClass::Auth),
            (403, ErrorClass::Auth),
            (500, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (599, ErrorClass::Transient),
            (302, ErrorClass::Permanent),
            (400, ErrorClass::Permanent),
            (404, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
        ];
        for (status, class) in table {
            assert_eq!(classify_status(status, wait), class, "{status}");
        }
    }

    #[test]
    fn snippet_cuts_long_bodies() {
        assert_eq!(snippet(" ok "), "ok");
        let long = "あ".repeat(400);
        assert_eq!(snippet(&long).chars().count(), 301);
    }
}
