//! Pure rendering of an announcement into one Page post, with Facebook's length rules.

use noroshi_channel_core::{Announcement, Preview, RenderError, Rendering};
use serde::{Deserialize, Serialize};

/// Facebook's post limit as commonly given (not stated in the Graph API reference).
pub const MAX_CHARS: usize = 63_206;
/// About this many characters show on mobile before "See more" (CHANNELS.md §3.2).
pub const MOBILE_VISIBLE_CHARS: usize = 125;

/// Which Graph edge a unit goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostKind {
    /// `POST /{page-id}/feed` with `message` and optional `link`.
    Feed,
    /// `POST /{page-id}/photos` with `url` and `caption`.
    Photo,
}

/// The stored unit: exactly what `deliver` sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostPayload {
    pub kind: PostKind,
    /// `message` of a feed post, `caption` of a photo post.
    pub message: String,
    /// `link` of a feed post (a photo post carries its link inside the caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `url` of a photo post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// Characters as Facebook counts them for the informal limit: Unicode scalar values.
pub fn length(text: &str) -> usize {
    text.chars().count()
}

pub fn render(a: &Announcement) -> Result<Rendering, RenderError> {
    let mut warnings = Vec::new();
    let mut message = match &a.text_override {
        Some(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => {
            let title = a.title.trim();
            let body = a.body.trim();
            match (title.is_empty(), body.is_empty()) {
                (true, true) => String::new(),
                (false, true) => title.to_string(),
                (true, false) => body.to_string(),
                (false, false) => format!("{title}\n\n{body}"),
            }
        }
    };
    if message.is_empty() {
        return Err(RenderError::new(
            "empty_message",
            "the post has no text: give a title, a body or a Facebook override",
        ));
    }
    let link = a
        .link
        .as_deref()
        .or(a.page_url.as_deref())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string);

    let payload = match a.images.first() {
        Some(image) => {
            if a.images.len() > 1 {
                warnings.push(format!(
                    "only the first of {} images is posted (one photo per post)",
                    a.images.len()
                ));
            }
            if let Some(link) = &link {
                // `/photos` has no `link` parameter: the caption carries it as plain text.
                if !message.contains(link.as_str()) {
                    message = format!("{message}\n\n{link}");
                    warnings.push(
                        "a photo post shows no link card; the link is added to the caption"
                            .to_string(),
                    );
                }
            }
            PostPayload {
                kind: PostKind::Photo,
                message,
                link: None,
                image_url: Some(image.clone()),
            }
        }
        None => PostPayload {
            kind: PostKind::Feed,
            message,
            link,
            image_url: None,
        },
    };

    let len = length(&payload.message);
    if len > MAX_CHARS {
        return Err(RenderError::too_long(
            "max_length",
            len,
            MAX_CHARS,
            "characters",
        ));
    }
    if len > MOBILE_VISIBLE_CHARS {
        warnings.push(format!(
            "only about the first {MOBILE_VISIBLE_CHARS} characters show on mobile before \
             \"See more\": put the essential sentence first"
        ));
    }
    let preview = Preview {
        text: payload.message.clone(),
        length: len,
        limit: Some(MAX_CHARS),
        length_rule: "characters".to_string(),
        warnings,
    };
    let unit = serde_json::to_value(&payload).expect("a payload always serializes");
    Ok(Rendering {
        units: vec![unit],
        preview,
    })
}
