//! LINE status codes and error bodies to outcome classes, as a table (CHANNELS.md §1.6).

use noroshi_channel_core::http::snippet;
use serde::Deserialize;

/// The body of a 409 for an already accepted retry key.
pub const RETRY_KEY_ACCEPTED: &str = "The retry key is already accepted";
/// The 429 that means the month's message quota is used up (documented).
pub const MONTHLY_LIMIT: &str = "You have reached your monthly limit.";
/// The 429 that means a per-endpoint rate window is full (observed).
pub const RATE_LIMIT_EXCEEDED: &str = "The API rate limit has been exceeded. Try again later.";

/// `{"message", "details"?: [{"message"?, "property"?}], "sentMessages"?}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
    #[serde(default)]
    pub sent_messages: Vec<SentMessage>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub property: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub id: String,
    #[serde(default)]
    pub quote_token: Option<String>,
}

/// What a non-2xx answer means for the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 409 on a retry key: the first attempt was accepted; not an error.
    AlreadySent,
    Quota,
    RateLimited,
    Auth,
    Permanent,
    Transient,
}

enum MessageIs {
    Any,
    /// Case-insensitive substring of `message`.
    Containing(&'static str),
}

struct Rule {
    statuses: std::ops::RangeInclusive<u16>,
    message: MessageIs,
    outcome: Outcome,
}

/// First match wins.
const RULES: &[Rule] = &[
    Rule {
        statuses: 409..=409,
        message: MessageIs::Any,
        outcome: Outcome::AlreadySent,
    },
    Rule {
        statuses: 429..=429,
        message: MessageIs::Containing("monthly limit"),
        outcome: Outcome::Quota,
    },
    // The rate-limit text is observed, not documented: any other 429 is a rate limit.
    Rule {
        statuses: 429..=429,
        message: MessageIs::Any,
        outcome: Outcome::RateLimited,
    },
    Rule {
        statuses: 401..=401,
        message: MessageIs::Any,
        outcome: Outcome::Auth,
    },
    // "Access to this API is not available for your account": a plan or permission problem
    // that no retry fixes; the channel pauses until an operator looks.
    Rule {
        statuses: 403..=403,
        message: MessageIs::Any,
        outcome: Outcome::Auth,
    },
    Rule {
        statuses: 400..=499,
        message: MessageIs::Any,
        outcome: Outcome::Permanent,
    },
    Rule {
        statuses: 500..=599,
        message: MessageIs::Any,
        outcome: Outcome::Transient,
    },
];

/// Classifies a non-2xx status and its parsed body.
pub fn classify(status: u16, body: &ErrorBody) -> Outcome {
    let message = body.message.to_ascii_lowercase();
    RULES
        .iter()
        .find(|r| {
            r.statuses.contains(&status)
                && match r.message {
                    MessageIs::Any => true,
                    MessageIs::Containing(s) => message.contains(s),
                }
        })
        .map(|r| r.outcome)
        // 1xx/3xx: the client follows no redirects for a POST we cannot replay safely.
        .unwrap_or(Outcome::Permanent)
}

/// Parses an error body leniently: LINE's 500s may have none.
pub fn parse_body(raw: &[u8]) -> ErrorBody {
    serde_json::from_slice(raw).unwrap_or_else(|_| ErrorBody {
        message: snippet(&String::from_utf8_lossy(raw)),
        ..ErrorBody::default()
    })
}

/// A line for operators: status, LINE's message and its details. Built only from the
/// response, so it cannot carry the token.
pub fn describe(status: u16, body: &ErrorBody) -> String {
    let mut out = format!("LINE answered {status}");
    if !body.message.is_empty() {
        out.push_str(": ");
        out.push_str(&snippet(&body.message));
    }
    let details: Vec<String> = body
        .details
        .iter()
        .take(5)
        .map(|d| {
            format!(
                "{}: {}",
                d.property.as_deref().unwrap_or("?"),
                d.message.as_deref().unwrap_or("")
            )
        })
        .collect();
    if !details.is_empty() {
        out.push_str(" (");
        out.push_str(&details.join("; "));
        out.push(')');
    }
    out
}
