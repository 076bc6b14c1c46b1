//! HTTP status → `DeliveryError` for a generic endpoint: the endpoint is someone's CMS or
//! chat bridge, so only HTTP's own semantics apply (the table is
//! [`noroshi_channel_core::http::classify_status`]).

use std::time::Duration;

use noroshi_channel_core::http::classify_status;
use noroshi_channel_core::{DeliveryError, ErrorClass};

pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> DeliveryError {
    let class = classify_status(status, retry_after);
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
