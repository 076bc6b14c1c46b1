//! HTTP status → `DeliveryError` class for a generic endpoint, as data.

use std::time::Duration;

use noroshi_channel_core::{DeliveryError, ErrorClass};

/// How a status is read. The endpoint is someone's CMS or chat bridge, so only HTTP's own
/// semantics apply.
pub(crate) fn class_of(status: u16, retry_after: Option<Duration>) -> ErrorClass {
    match status {
        408 | 429 => ErrorClass::RateLimited { retry_after },
        401 | 403 => ErrorClass::Auth,
        500..=599 => ErrorClass::Transient,
        // 3xx is left here only when redirects were not followed: a config problem.
        _ => ErrorClass::Permanent,
    }
}

pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> DeliveryError {
    let class = class_of(status, retry_after);
    let what = match class {
        ErrorClass::RateLimited { .. } => "endpoint asks to slow down",
        ErrorClass::Auth => "endpoint refused the credentials or signature",
        ErrorClass::Transient => "endpoint failed",
        _ => "endpoint refused the request",
    };
    let body = noroshi_channel_core::http::snippet(body);
    let message = if body.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {body}")
    };
    DeliveryError::new(class, message).with_status(status)
}
