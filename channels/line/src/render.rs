//! Pure rendering: an announcement to LINE message objects and request bodies (CHANNELS.md §1.3).

use noroshi_channel_core::{Announcement, Preview, Priority, RenderError, Rendering};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Config, Mode, VariantMode};

/// LINE counts a text message's length in UTF-16 code units (🍎 = 2, 👋🏻 = 4).
pub const MAX_TEXT_UTF16: usize = 5000;
/// A Flex message's `altText` (what lock screens and non-Flex clients show).
pub const MAX_ALT_TEXT: usize = 1500;
/// Message objects per request.
pub const MAX_MESSAGES: usize = 5;
/// User ids per multicast request.
pub const MULTICAST_CHUNK: usize = 500;
/// A bubble's JSON.
pub const MAX_BUBBLE_BYTES: usize = 30 * 1024;
/// Image URLs (both `originalContentUrl` and `previewImageUrl`).
pub const MAX_IMAGE_URL: usize = 2000;
/// A URI action's `uri`.
const MAX_ACTION_URI: usize = 1000;

/// Header colours for the disaster card: white on a deep red is 7.6:1 (WCAG AAA).
const ALERT_RED: &str = "#B71C1C";
const WHITE: &str = "#FFFFFF";

/// One delivery unit as stored in the queue: which endpoint, and the exact body to send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// `broadcast`, `multicast`, `narrowcast` or `push`.
    pub endpoint: String,
    /// The request body, sent as-is (so a retry under the same retry key is byte-identical).
    pub body: Value,
}

pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Cuts `s` to at most `max` UTF-16 units, ending in `…` when cut, never splitting a
/// surrogate pair.
fn cut_utf16(s: &str, max: usize) -> String {
    if utf16_len(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + c.len_utf16() > max - 1 {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

fn is_japanese(lang: &str) -> bool {
    lang.is_empty() || lang == "ja" || lang.starts_with("ja-")
}

/// The announcement as one plain text: override, else title, body and link.
fn plain_text(a: &Announcement) -> String {
    if let Some(text) = &a.text_override {
        return text.clone();
    }
    let mut text = a.title.trim().to_string();
    let body = a.body.trim();
    if !body.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(body);
    }
    if let Some(link) = a.link.as_deref().filter(|l| !l.is_empty()) {
        text.push_str("\n\n");
        text.push_str(link);
    }
    text
}

fn length_error(len: usize, overridden: bool) -> RenderError {
    let mut e = RenderError::too_long("max_length", len, MAX_TEXT_UTF16, "UTF-16 code units");
    e.message = if overridden {
        format!(
            "the LINE override is {len} UTF-16 code units, over LINE's limit of {MAX_TEXT_UTF16} per text message"
        )
    } else {
        format!(
            "the text is {len} UTF-16 code units, over LINE's limit of {MAX_TEXT_UTF16}; shorten it or give overrides.line.text"
        )
    };
    e
}

fn alert_header(a: &Announcement) -> &'static str {
    match (is_japanese(&a.lang), a.exercise) {
        (true, false) => "緊急 災害情報",
        (true, true) => "【訓練】災害情報（訓練）",
        (false, false) => "EMERGENCY ALERT",
        (false, true) => "[EXERCISE] Emergency information drill",
    }
}

fn text_component(text: &str, extra: Value) -> Value {
    let mut v = json!({"type": "text", "text": text, "wrap": true});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// The disaster card: a red header that reads at a glance, the title large, the body, and
/// a button to the city's page. Returns the message and the text a reader sees.
fn disaster_flex(a: &Announcement) -> Result<(Value, String), RenderError> {
    let header = alert_header(a);
    let link = a.link.as_deref().filter(|l| {
        (l.starts_with("https://") || l.starts_with("http://")) && l.len() <= MAX_ACTION_URI
    });
    let mut body_contents = Vec::new();
    let (shown, alt_source) = match &a.text_override {
        Some(text) => {
            body_contents.push(text_component(
                text,
                json!({"size": "md", "color": "#111111"}),
            ));
            (format!("{header}\n{text}"), format!("{header}: {text}"))
        }
        None => {
            body_contents.push(text_component(
                a.title.trim(),
                json!({"size": "xl", "weight": "bold", "color": "#000000"}),
            ));
            if !a.body.trim().is_empty() {
                body_contents.push(text_component(
                    a.body.trim(),
                    json!({"size": "md", "color": "#111111"}),
                ));
            }
            let mut shown = format!("{header}\n{}", a.title.trim());
            if !a.body.trim().is_empty() {
                shown.push_str("\n\n");
                shown.push_str(a.body.trim());
            }
            if let Some(l) = a.link.as_deref().filter(|l| !l.is_empty()) {
                shown.push_str("\n\n");
                shown.push_str(l);
                if link.is_none() {
                    // Not a usable button target: show it as text so it is not lost.
                    body_contents
                        .push(text_component(l, json!({"size": "sm", "color": "#0D47A1"})));
                }
            }
            (
                shown,
                format!("{header}: {}\n{}", a.title.trim(), a.body.trim()),
            )
        }
    };
    let mut bubble = json!({
        "type": "bubble",
        "size": "giga",
        "styles": {"header": {"backgroundColor": ALERT_RED}},
        "header": {
            "type": "box",
            "layout": "vertical",
            "paddingAll": "16px",
            "backgroundColor": ALERT_RED,
            "contents": [text_component(header, json!({"size": "xl", "weight": "bold", "color": WHITE}))]
        },
        "body": {"type": "box", "layout": "vertical", "spacing": "md", "contents": body_contents}
    });
    if let Some(link) = link {
        let label = if is_japanese(&a.lang) {
            "詳しくはこちら"
        } else {
            "Details"
        };
        bubble["footer"] = json!({
            "type": "box",
            "layout": "vertical",
            "contents": [{
                "type": "button",
                "style": "primary",
                "color": ALERT_RED,
                "action": {"type": "uri", "label": label, "uri": link}
            }]
        });
    }
    let size = serde_json::to_vec(&bubble)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_BUBBLE_BYTES {
        let mut e = RenderError::too_long("max_flex_size", size, MAX_BUBBLE_BYTES, "bytes of JSON");
        e.message = format!(
            "the disaster card is {size} bytes of JSON, over LINE's {MAX_BUBBLE_BYTES} per bubble; shorten the body"
        );
        return Err(e);
    }
    let message = json!({
        "type": "flex",
        "altText": cut_utf16(alt_source.trim(), MAX_ALT_TEXT),
        "contents": bubble
    });
    Ok((message, shown))
}

/// The image messages that fit: HTTPS, at most 2,000 characters, and room left in the five
/// message objects a request may carry.
fn image_messages(a: &Announcement, room: usize, warnings: &mut Vec<String>) -> Vec<Value> {
    let mut out = Vec::new();
    for url in &a.images {
        if !url.starts_with("https://") || url.len() > MAX_IMAGE_URL {
            warnings.push(format!(
                "image {url:?} dropped: LINE needs an HTTPS URL of at most {MAX_IMAGE_URL} characters"
            ));
        } else if out.len() >= room {
            warnings.push(format!(
                "image {url:?} dropped: at most {MAX_MESSAGES} message objects per request"
            ));
        } else {
            out.push(json!({"type": "image", "originalContentUrl": url, "previewImageUrl": url}));
        }
    }
    out
}

/// The request bodies for this channel's mode, one per delivery unit.
fn bodies(config: &Config, messages: &[Value], warnings: &mut Vec<String>) -> Vec<Unit> {
    let unit = |endpoint: &str, body: Value| Unit {
        endpoint: endpoint.to_string(),
        body,
    };
    match config.mode {
        Mode::Broadcast => vec![unit("broadcast", json!({"messages": messages}))],
        Mode::Multicast => {
            let chunks: Vec<Unit> = config
                .to
                .chunks(MULTICAST_CHUNK)
                .map(|ids| unit("multicast", json!({"to": ids, "messages": messages})))
                .collect();
            if chunks.len() > 1 {
                warnings.push(format!(
                    "{} user ids sent as {} multicast requests of at most {MULTICAST_CHUNK}",
                    config.to.len(),
                    chunks.len()
                ));
            }
            chunks
        }
        Mode::Push => config
            .to
            .iter()
            .map(|to| unit("push", json!({"to": to, "messages": messages})))
            .collect(),
        Mode::Narrowcast => {
            let n = &config.narrowcast;
            let mut body = json!({"messages": messages});
            if let Some(id) = n.audience_group_id {
                body["recipient"] = json!({"type": "audience", "audienceGroupId": id});
            }
            if !n.areas.is_empty() {
                body["filter"] = json!({"demographic": {"type": "area", "oneOf": n.areas}});
            }
            if let Some(max) = n.max {
                body["limit"] = json!({"max": max});
            }
            warnings.push(
                "narrowcast is asynchronous: LINE accepts it with 202 and sends it afterwards"
                    .into(),
            );
            vec![unit("narrowcast", body)]
        }
    }
}

/// Renders an announcement for LINE. Pure: no I/O.
pub fn render(config: &Config, a: &Announcement) -> Result<Rendering, RenderError> {
    let mut warnings = Vec::new();
    let overridden = a.text_override.is_some();
    if a.title.trim().is_empty() && a.body.trim().is_empty() && !overridden {
        return Err(RenderError::new(
            "empty_text",
            "title and body are both empty",
        ));
    }
    let (first, text, length) = if a.priority == Priority::Disaster {
        let (flex, shown) = disaster_flex(a)?;
        // The card's longest text component carries the body (or the override); it is held
        // to the same limit as a text message.
        let longest = a.text_override.as_deref().unwrap_or(a.body.as_str()).trim();
        let len = utf16_len(longest);
        if len > MAX_TEXT_UTF16 {
            return Err(length_error(len, overridden));
        }
        warnings.push(
            "sent as a Flex card with a red alert header; lock screens and older clients show its altText"
                .into(),
        );
        (flex, shown, len)
    } else {
        let text = plain_text(a);
        if text.trim().is_empty() {
            return Err(RenderError::new("empty_text", "the LINE override is empty"));
        }
        let len = utf16_len(&text);
        if len > MAX_TEXT_UTF16 {
            return Err(length_error(len, overridden));
        }
        (json!({"type": "text", "text": text}), text, len)
    };
    let mut messages = vec![first];
    // Other languages: in the same request (before images: words matter more), or each to
    // its language's audience.
    let mut extra_units = Vec::new();
    for v in &a.variants {
        let mut other = a.clone();
        other.title = v.title.clone();
        other.body = v.body.clone();
        other.text_override = None;
        let text = plain_text(&other);
        let len = utf16_len(&text);
        if len > MAX_TEXT_UTF16 {
            let mut e = length_error(len, false);
            e.message = format!("the {} version: {}", v.lang, e.message);
            return Err(e);
        }
        let message = json!({"type": "text", "text": text});
        match config.variants {
            VariantMode::PrimaryOnly => {
                warnings.push(format!(
                    "the {} version is not sent to LINE (variants = \"primary_only\")",
                    v.lang
                ));
            }
            VariantMode::Together if messages.len() < MAX_MESSAGES => messages.push(message),
            VariantMode::Together => warnings.push(format!(
                "the {} version dropped: at most {MAX_MESSAGES} message objects per request",
                v.lang
            )),
            VariantMode::Audiences => match config.language_audiences.get(&v.lang) {
                Some(id) => extra_units.push(Unit {
                    endpoint: "narrowcast".into(),
                    body: json!({
                        "messages": [message],
                        "recipient": {"type": "audience", "audienceGroupId": id},
                    }),
                }),
                None => warnings.push(format!(
                    "the {} version is not sent: no audience group for it in language_audiences",
                    v.lang
                )),
            },
        }
    }
    messages.extend(image_messages(
        a,
        MAX_MESSAGES - messages.len(),
        &mut warnings,
    ));
    let units = match (&config.exercise_target, a.exercise) {
        // A drill with a test target is pushed to it alone: never a broadcast, never an
        // audience of residents.
        (Some(target), true) => {
            warnings.push(format!(
                "a drill: pushed to the test target {target} only, not to the friends"
            ));
            let mut all = messages.clone();
            for u in &extra_units {
                if let Some(m) = u.body["messages"].as_array() {
                    all.extend(m.iter().cloned());
                }
            }
            all.truncate(MAX_MESSAGES);
            vec![Unit {
                endpoint: "push".into(),
                body: json!({"to": target, "messages": all}),
            }]
        }
        _ => {
            let mut units = bodies(config, &messages, &mut warnings);
            if !units.is_empty() {
                units.extend(extra_units);
            }
            units
        }
    };
    if units.is_empty() {
        return Err(RenderError::new(
            "no_recipients",
            format!("mode {:?} has no recipients in `to`", config.mode),
        ));
    }
    Ok(Rendering {
        units: units
            .into_iter()
            .map(|u| serde_json::to_value(u).expect("a unit is plain JSON"))
            .collect(),
        preview: Preview {
            text,
            length,
            limit: Some(MAX_TEXT_UTF16),
            length_rule: "UTF-16 code units".into(),
            warnings,
        },
    })
}
