//! Errors that cross the channel boundary, with the class the queue's retry policy hangs off.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What the queue should do about a failed attempt (CHANNELS.md §0.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// 5xx, connection refused or reset before a response: retry with backoff and jitter.
    Transient,
    /// A write may have been applied (timeout after the request was sent, no idempotency
    /// key): reconcile before sending again.
    Uncertain,
    /// 429 and the like: wait until `retry_after` (or backoff when unknown); the attempt is
    /// not counted against the delivery's maximum.
    RateLimited { retry_after: Option<Duration> },
    /// A monthly or daily budget is exhausted until `until`.
    Quota { until: Option<DateTime<Utc>> },
    /// Credentials refused or revoked: pause the channel until an operator resumes it.
    Auth,
    /// The platform refused this content or recipient for good: fail this delivery.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Uncertain => "uncertain",
            ErrorClass::RateLimited { .. } => "rate_limited",
            ErrorClass::Quota { .. } => "quota",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A failed delivery attempt. `message` is shown to operators: it must never contain a
/// credential (adapters build it from status codes and platform error bodies only).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{class_name}: {message}", class_name = self.class.as_str())]
pub struct DeliveryError {
    pub class: ErrorClass,
    pub message: String,
    /// The HTTP status or SMTP reply code, when there was one.
    pub status: Option<u16>,
}

impl DeliveryError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        DeliveryError {
            class,
            message: message.into(),
            status: None,
        }
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }
    pub fn uncertain(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Uncertain, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Auth, message)
    }
    pub fn rate_limited(retry_after: Option<Duration>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::RateLimited { retry_after }, message)
    }
    pub fn quota(until: Option<DateTime<Utc>>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Quota { until }, message)
    }
}

/// An announcement this channel cannot carry: becomes a `422` naming the channel and rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{rule}: {message}")]
pub struct RenderError {
    /// The rule that refused it, short and stable: `max_weighted_length`, `max_length`,
    /// `empty_title`, `missing_link`.
    pub rule: String,
    /// A sentence for the person who wrote the announcement.
    pub message: String,
    /// The measured length by the channel's rule, when the rule is a length.
    pub length: Option<usize>,
    pub limit: Option<usize>,
}

impl RenderError {
    pub fn new(rule: impl Into<String>, message: impl Into<String>) -> Self {
        RenderError {
            rule: rule.into(),
            message: message.into(),
            length: None,
            limit: None,
        }
    }
    pub fn too_long(rule: impl Into<String>, length: usize, limit: usize, unit: &str) -> Self {
        RenderError {
            rule: rule.into(),
            message: format!("the text is {length} {unit}, over the limit of {limit}"),
            length: Some(length),
            limit: Some(limit),
        }
    }
}

/// One problem found in a channel's config section, for `check-config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key relative to the channel's section, e.g. `page_id`.
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}
