//! X status codes and problem bodies mapped to delivery outcomes (CHANNELS.md §2.8), as data.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use noroshi_channel_core::http::{header_i64, snippet};
use noroshi_channel_core::DeliveryError;
use reqwest::header::HeaderMap;
use serde::Deserialize;

/// Which kind of call failed: it decides what a 5xx means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `POST /2/tweets`: no idempotency key, so a 5xx may hide a created post.
    CreatePost,
    /// Media upload: a lost upload only leaves an orphan media id behind.
    Upload,
    /// Any read (lookups, timeline, users/me) and the token endpoint.
    Read,
}

/// What a failed response means before it becomes a [`DeliveryError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 403 "duplicate content": the same text was posted before (reconcile to find it).
    Duplicate,
    /// 403 "Reply to this conversation is not allowed": since 2026-02-23 a self-serve app
    /// may reply only where the author mentioned or quoted its account (CHANNELS.md §9).
    /// A thread falls back to shorten-and-link (see `XChannel::deliver`).
    ReplyRefused,
    Error(ClassKind),
}

/// The outcome class without its wait time, for the rule table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassKind {
    Transient,
    Uncertain,
    RateLimited,
    Quota,
    Auth,
    Permanent,
}

/// A problem-details body (RFC 7807), lenient: every field optional; also the v1.1-style
/// `errors[].message` and the token endpoint's `error` / `error_description`.
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    pub title: Option<String>,
    pub detail: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub reason: Option<String>,
    #[serde(default)]
    pub errors: Vec<ProblemError>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProblemError {
    pub message: Option<String>,
    pub code: Option<i64>,
}

impl Problem {
    pub fn parse(body: &str) -> Problem {
        serde_json::from_str(body).unwrap_or_default()
    }
    /// The problem type without its `https://api.(twitter|x).com/2/problems/` prefix.
    pub fn type_suffix(&self) -> &str {
        let t = self.kind.as_deref().unwrap_or("");
        t.rsplit('/').next().unwrap_or(t)
    }
    fn text(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        parts.extend(self.title.as_deref());
        parts.extend(self.detail.as_deref());
        parts.extend(self.errors.iter().filter_map(|e| e.message.as_deref()));
        parts.extend(self.error.as_deref());
        parts.extend(self.error_description.as_deref());
        parts.join(" ").to_ascii_lowercase()
    }
}

/// What a rule looks at besides the status.
enum Match {
    Any,
    /// The problem `type` ends with this.
    Type(&'static str),
    /// The title, detail or messages contain this (lowercase).
    Text(&'static str),
}

struct Rule {
    status: Option<u16>,
    matches: Match,
    verdict: fn(Call) -> Verdict,
}

const fn rule(status: Option<u16>, matches: Match, verdict: fn(Call) -> Verdict) -> Rule {
    Rule {
        status,
        matches,
        verdict,
    }
}

fn duplicate(_: Call) -> Verdict {
    Verdict::Duplicate
}
fn reply_refused(_: Call) -> Verdict {
    Verdict::ReplyRefused
}
fn auth(_: Call) -> Verdict {
    Verdict::Error(ClassKind::Auth)
}
fn quota(_: Call) -> Verdict {
    Verdict::Error(ClassKind::Quota)
}
fn rate_limited(_: Call) -> Verdict {
    Verdict::Error(ClassKind::RateLimited)
}
fn permanent(_: Call) -> Verdict {
    Verdict::Error(ClassKind::Permanent)
}
fn server_error(call: Call) -> Verdict {
    Verdict::Error(match call {
        Call::CreatePost => ClassKind::Uncertain,
        Call::Upload | Call::Read => ClassKind::Transient,
    })
}

/// First match wins. Statuses not listed: other 4xx permanent, 5xx by [`server_error`].
const RULES: &[Rule] = &[
    rule(Some(403), Match::Text("duplicate content"), duplicate),
    rule(
        Some(403),
        Match::Text("reply to this conversation is not allowed"),
        reply_refused,
    ),
    rule(
        Some(403),
        Match::Text("not been mentioned or otherwise engaged"),
        reply_refused,
    ),
    rule(None, Match::Type("usage-capped"), quota),
    rule(Some(401), Match::Any, auth),
    rule(Some(402), Match::Any, quota),
    rule(Some(403), Match::Type("client-forbidden"), auth),
    rule(Some(403), Match::Type("unsupported-authentication"), auth),
    rule(Some(403), Match::Text("oauth1 app permissions"), auth),
    rule(
        Some(403),
        Match::Text("not configured with the appropriate"),
        auth,
    ),
    rule(Some(429), Match::Any, rate_limited),
    rule(Some(408), Match::Any, server_error),
];

/// The verdict for a non-2xx answer to `call`.
pub fn verdict(call: Call, status: u16, problem: &Problem) -> Verdict {
    let text = problem.text();
    for r in RULES {
        if r.status.is_some_and(|s| s != status) {
            continue;
        }
        let hit = match r.matches {
            Match::Any => true,
            Match::Type(t) => problem.type_suffix() == t,
            Match::Text(t) => text.contains(t),
        };
        if hit {
            return (r.verdict)(call);
        }
    }
    if status >= 500 {
        server_error(call)
    } else {
        permanent(call)
    }
}

/// `x-rate-limit-reset` and the 24-hour resets are Unix seconds.
pub fn reset_header(headers: &HeaderMap, name: &str) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(header_i64(headers, name)?, 0).single()
}

/// The 24-hour cap a 429 ran into, if its `remaining` header is 0: (scope, reset).
pub fn exhausted_daily_cap(headers: &HeaderMap) -> Option<(&'static str, Option<DateTime<Utc>>)> {
    for (scope, prefix) in [
        ("user", "x-user-limit-24hour"),
        ("app", "x-app-limit-24hour"),
    ] {
        if header_i64(headers, &format!("{prefix}-remaining")) == Some(0) {
            return Some((scope, reset_header(headers, &format!("{prefix}-reset"))));
        }
    }
    None
}

/// A non-2xx answer as the [`DeliveryError`] the queue acts on. The message is built from
/// the status and X's body only: never from the request, so no credential can leak into it.
pub fn classify(
    call: Call,
    status: u16,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
) -> DeliveryError {
    let problem = Problem::parse(body);
    let message = format!("X answered {status}: {}", snippet(body));
    let error = match verdict(call, status, &problem) {
        Verdict::Duplicate => DeliveryError::permanent(format!(
            "{message} (duplicate content: the same text was posted before)"
        )),
        Verdict::ReplyRefused => DeliveryError::permanent(format!(
            "{message} (X refused a reply: self-serve apps may reply only where the author \
             mentioned or quoted the account)"
        )),
        Verdict::Error(kind) => match kind {
            ClassKind::Transient => DeliveryError::transient(message),
            ClassKind::Uncertain => DeliveryError::uncertain(format!(
                "{message} (the post may have been created; reconcile before resending)"
            )),
            ClassKind::Auth => DeliveryError::auth(message),
            ClassKind::Permanent => DeliveryError::permanent(message),
            ClassKind::Quota => {
                let until = exhausted_daily_cap(headers).and_then(|(_, r)| r);
                DeliveryError::quota(until, message)
            }
            ClassKind::RateLimited => match exhausted_daily_cap(headers) {
                Some((scope, until)) => DeliveryError::quota(
                    until,
                    format!("{message} (24-hour {scope} post cap exhausted)"),
                ),
                None => {
                    let retry_after = reset_header(headers, "x-rate-limit-reset")
                        .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO));
                    DeliveryError::rate_limited(retry_after, message)
                }
            },
        },
    };
    error.with_status(status)
}

/// Whether a failed response is X's duplicate-content refusal.
pub fn is_duplicate(status: u16, body: &str) -> bool {
    verdict(Call::CreatePost, status, &Problem::parse(body)) == Verdict::Duplicate
}

/// Whether a failed response is X's refusal of a reply (the 2026 self-serve restriction).
pub fn is_reply_refused(status: u16, body: &str) -> bool {
    verdict(Call::CreatePost, status, &Problem::parse(body)) == Verdict::ReplyRefused
}
