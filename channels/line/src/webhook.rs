//! Inbound webhook helpers (CHANNELS.md §1.8): signature check and follow/unfollow events.
//! The daemon mounts the HTTP route; these functions never touch the network.

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The header LINE signs with (match its name case-insensitively).
pub const SIGNATURE_HEADER: &str = "x-line-signature";

/// Whether `header` is `base64(HMAC-SHA256(channel_secret, raw_body))`.
///
/// Computed over the bytes as received, before any JSON parsing: re-serialised JSON (or a
/// trailing newline) gives another signature. The comparison is constant-time.
pub fn verify_signature(channel_secret: &str, raw_body: &[u8], header: &str) -> bool {
    let Ok(claimed) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(channel_secret.as_bytes()) else {
        return false;
    };
    mac.update(raw_body);
    // `verify_slice` compares in constant time (subtle) and rejects other lengths.
    mac.verify_slice(&claimed).is_ok()
}

/// The signature LINE would send for `raw_body` (for fakes and tests).
pub fn sign(channel_secret: &str, raw_body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(channel_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(raw_body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What happened, for the events Noroshi acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEventKind {
    /// A user added the account as a friend (or unblocked it).
    Follow { is_unblocked: bool },
    /// A user blocked the account.
    Unfollow,
    /// A message to the account; `text` for text messages.
    Message { text: Option<String> },
    /// Any other type, by LINE's name (`postback`, `join`, …).
    Other(String),
}

/// One webhook event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    pub kind: WebhookEventKind,
    /// `source.userId`, when the source is a user who consented to share it.
    pub user_id: Option<String>,
    /// When the event happened (`timestamp`, milliseconds).
    pub timestamp: DateTime<Utc>,
    /// A ULID to deduplicate redeliveries by.
    pub webhook_event_id: Option<String>,
    /// `deliveryContext.isRedelivery`.
    pub is_redelivery: bool,
    /// `active`, or `standby` (another channel owns the chat: send nothing).
    pub mode: Option<String>,
}

/// A body that is not a LINE webhook callback.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook body is not valid JSON for a LINE callback: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event {index} has an invalid timestamp {timestamp}")]
    Timestamp { index: usize, timestamp: i64 },
}

#[derive(Deserialize)]
struct Callback {
    #[allow(dead_code)]
    destination: Option<String>,
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    timestamp: i64,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    webhook_event_id: Option<String>,
    #[serde(default)]
    delivery_context: Option<RawDeliveryContext>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    follow: Option<RawFollow>,
    #[serde(default)]
    message: Option<RawMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSource {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDeliveryContext {
    #[serde(default)]
    is_redelivery: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFollow {
    #[serde(default)]
    is_unblocked: bool,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// Parses a callback body (`{"destination", "events": […]}`). An empty `events` array is
/// LINE's connectivity check: `Ok(vec![])`. Verify the signature first.
pub fn parse_events(raw_body: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    let callback: Callback = serde_json::from_slice(raw_body)?;
    callback
        .events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let timestamp =
                DateTime::from_timestamp_millis(e.timestamp).ok_or(WebhookError::Timestamp {
                    index,
                    timestamp: e.timestamp,
                })?;
            let kind = match e.kind.as_str() {
                "follow" => WebhookEventKind::Follow {
                    is_unblocked: e.follow.is_some_and(|f| f.is_unblocked),
                },
                "unfollow" => WebhookEventKind::Unfollow,
                "message" => WebhookEventKind::Message {
                    text: e.message.filter(|m| m.kind == "text").and_then(|m| m.text),
                },
                other => WebhookEventKind::Other(other.to_string()),
            };
            Ok(WebhookEvent {
                kind,
                user_id: e.source.and_then(|s| s.user_id),
                timestamp,
                webhook_event_id: e.webhook_event_id,
                is_redelivery: e.delivery_context.is_some_and(|d| d.is_redelivery),
                mode: e.mode,
            })
        })
        .collect()
}
