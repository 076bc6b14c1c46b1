//! LINE status codes and error bodies to outcome classes, as a table (CHANNELS.md §1.6, §9).

use noroshi_channel_core::http::snippet;
use serde::Deserialize;

/// The body of a 409 for an already accepted retry key.
pub const RETRY_KEY_ACCEPTED: &str = "The retry key is already accepted";

// LINE's four documented causes of `429` (CHANNELS.md §1.6 and §9), told apart only by the
// body's `message`. Only the first two texts are confirmed (the reference and observed
// answers); the exact wording of the concurrency and additional-message answers is not in
// the stored documentation, so classification matches them by a keyword ("concurrent",
// "additional message" / "target limit") rather than by the whole sentence.

/// 429, quota: the free monthly message count is used up (documented).
pub const MONTHLY_LIMIT: &str = "You have reached your monthly limit.";
/// 429, rate limited: a per-endpoint rate window is full (observed).
pub const RATE_LIMIT_EXCEEDED: &str = "The API rate limit has been exceeded. Try again later.";
/// 429, rate limited: too many operations at once (e.g. audience uploads per audience).
/// Wording unconfirmed; recognised by "concurrent".
pub const CONCURRENT_LIMIT: &str =
    "The number of concurrent operations has exceeded the limit. Try again later.";
/// 429, quota: the target limit for additional (paid) messages set in LINE Official
/// Account Manager is reached. Wording unconfirmed; recognised by "additional message".
pub const ADDITIONAL_MESSAGE_LIMIT: &str =
    "You have reached the target limit for additional messages.";

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
    /// For the delivery log: which of LINE's causes this is, when the status alone does
    /// not say (the four 429s).
    cause: Option<&'static str>,
}

const fn rule(
    statuses: std::ops::RangeInclusive<u16>,
    message: MessageIs,
    outcome: Outcome,
) -> Rule {
    Rule {
        statuses,
        message,
        outcome,
        cause: None,
    }
}

const fn too_many(message: MessageIs, outcome: Outcome, cause: &'static str) -> Rule {
    Rule {
        statuses: 429..=429,
        message,
        outcome,
        cause: Some(cause),
    }
}

/// First match wins.
///
/// The four documented 429s (CHANNELS.md §9) are told apart by `message` only: the rate
/// limit and the concurrent-operation limit clear by themselves (wait and retry: rate
/// limited); the free monthly messages and the additional-message target limit do not
/// (quota: the channel view shows it, until the month resets or the plan or limit is
/// raised). A 429 with any other message is a rate limit, as before.
const RULES: &[Rule] = &[
    rule(409..=409, MessageIs::Any, Outcome::AlreadySent),
    too_many(
        MessageIs::Containing("monthly limit"),
        Outcome::Quota,
        "free monthly messages used up (until the month resets at 00:00 JST on the 1st, \
         or a plan with more messages)",
    ),
    too_many(
        MessageIs::Containing("additional message"),
        Outcome::Quota,
        "additional-message target limit reached (raise it in LINE Official Account \
         Manager, or wait for the month to reset)",
    ),
    too_many(
        MessageIs::Containing("target limit"),
        Outcome::Quota,
        "additional-message target limit reached (raise it in LINE Official Account \
         Manager, or wait for the month to reset)",
    ),
    too_many(
        MessageIs::Containing("concurrent"),
        Outcome::RateLimited,
        "concurrent-operation limit (wait and retry)",
    ),
    too_many(
        MessageIs::Containing("rate limit"),
        Outcome::RateLimited,
        "rate limit (wait and retry)",
    ),
    too_many(
        MessageIs::Any,
        Outcome::RateLimited,
        "not one of LINE's documented 429s; treated as a rate limit (wait and retry)",
    ),
    rule(401..=401, MessageIs::Any, Outcome::Auth),
    // "Access to this API is not available for your account": a plan or permission problem
    // that no retry fixes; the channel pauses until an operator looks.
    rule(403..=403, MessageIs::Any, Outcome::Auth),
    rule(400..=499, MessageIs::Any, Outcome::Permanent),
    rule(500..=599, MessageIs::Any, Outcome::Transient),
];

fn find_rule(status: u16, body: &ErrorBody) -> Option<&'static Rule> {
    let message = body.message.to_ascii_lowercase();
    RULES.iter().find(|r| {
        r.statuses.contains(&status)
            && match r.message {
                MessageIs::Any => true,
                MessageIs::Containing(s) => message.contains(s),
            }
    })
}

/// Classifies a non-2xx status and its parsed body.
pub fn classify(status: u16, body: &ErrorBody) -> Outcome {
    find_rule(status, body)
        .map(|r| r.outcome)
        // 1xx/3xx: the client follows no redirects for a POST we cannot replay safely.
        .unwrap_or(Outcome::Permanent)
}

/// Which of LINE's causes a status and body stand for, when the status alone does not say
/// (the four 429s), worded for the delivery log and the channel view.
pub fn cause(status: u16, body: &ErrorBody) -> Option<&'static str> {
    find_rule(status, body).and_then(|r| r.cause)
}

/// Parses an error body leniently: LINE's 500s may have none.
pub fn parse_body(raw: &[u8]) -> ErrorBody {
    serde_json::from_slice(raw).unwrap_or_else(|_| ErrorBody {
        message: snippet(&String::from_utf8_lossy(raw)),
        ..ErrorBody::default()
    })
}

/// A line for operators: status, LINE's message, its details and, for a 429, which of
/// LINE's causes it is. Built only from the response, so it cannot carry the token.
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
    if let Some(cause) = cause(status, body) {
        out.push_str(" — cause: ");
        out.push_str(cause);
    }
    out
}
