//! Pure rendering: an announcement becomes one page unit; text clean-up; dates in Asia/Tokyo.

use chrono::{DateTime, SecondsFormat, Utc};
use noroshi_channel_core::{jst, Announcement, Preview, Priority, RenderError, Rendering};
use serde::{Deserialize, Serialize};

/// Everything `deliver` needs to write one announcement's page; stored as the queue row's
/// payload at accept time, so the page shows exactly what was previewed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageUnit {
    /// The announcement id (UUIDv7): the page's file name and its feed id `urn:uuid:{id}`.
    pub id: String,
    pub title: String,
    pub body: String,
    /// The city's own page about it (http or https only).
    pub link: Option<String>,
    pub priority: Priority,
    /// BCP 47 tag of title and body; the page's `<html lang>`.
    pub lang: String,
    pub tags: Vec<String>,
    /// A drill: the page carries a drill banner (the title already has the marker).
    pub exercise: bool,
    pub published_at: DateTime<Utc>,
    /// The same announcement in other languages: a page each (`a/{id}.{lang}.html`),
    /// linked from every version with `hreflang`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<PageVariant>,
    /// A disaster announcement's CAP 1.2 message, published under `cap/` with the feed
    /// of active alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<noroshi_channel_core::CapMessage>,
    /// Images shown on the page, each with its alternative text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PageImage>,
}

/// An image on a page: an https URL and what it shows, in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageImage {
    pub url: String,
    pub alt: String,
}

/// One other-language version of a page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageVariant {
    /// The page's BCP 47 tag (`en`; やさしい日本語 is `ja-x-easy`).
    pub lang: String,
    pub title: String,
    pub body: String,
}

/// The HTML language tag of a submission's language: `ja-easy` (the API's name for やさしい
/// 日本語, not a BCP 47 tag) becomes the private-use tag `ja-x-easy`, which readers and
/// screen readers take as Japanese.
pub fn page_lang(lang: &str) -> String {
    if lang.eq_ignore_ascii_case("ja-easy") {
        "ja-x-easy".to_string()
    } else {
        lang.to_string()
    }
}

/// Path of a language version's page relative to `output_dir`: `a/{id}.{lang}.html`.
pub(crate) fn variant_path(id: &str, lang: &str) -> String {
    format!("a/{id}.{lang}.html")
}

/// The address of an announcement's page: `{base_url}a/{id}.html`.
///
/// The daemon fills `Announcement::page_url` with it for other channels' "shorten and
/// link", so it must agree with the file `deliver` writes.
pub fn page_url(base_url: &str, id: &str) -> String {
    let sep = if base_url.ends_with('/') { "" } else { "/" };
    format!("{base_url}{sep}a/{id}.html")
}

/// Path of a page relative to `output_dir` (and to `base_url`).
pub(crate) fn page_path(id: &str) -> String {
    format!("a/{id}.html")
}

/// Renders one announcement into its single page unit.
pub fn render(announcement: &Announcement) -> Result<Rendering, RenderError> {
    if !is_safe_id(&announcement.id) {
        // The id becomes a file name: anything but letters, digits and `-` could escape
        // `a/` or collide with another page.
        return Err(RenderError::new(
            "invalid_id",
            "the announcement id must be letters, digits and `-` (a UUID)",
        ));
    }
    let title = clean_line(&announcement.title);
    if title.is_empty() {
        return Err(RenderError::new(
            "empty_title",
            "the website page needs a title",
        ));
    }
    // `overrides.website.text` replaces the body on the page, like on other channels.
    let body = clean_text(
        announcement
            .text_override
            .as_deref()
            .unwrap_or(&announcement.body),
    );
    let link = match announcement.link.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(link) if is_web_link(link) => Some(link.to_string()),
        Some(_) => {
            return Err(RenderError::new(
                "invalid_link",
                "the link must be an absolute http:// or https:// URL",
            ))
        }
    };
    let mut warnings = Vec::new();
    let lang = if is_lang_tag(&announcement.lang) {
        announcement.lang.clone()
    } else {
        warnings.push(format!(
            "`{}` is not a language tag; the page is marked as Japanese (ja)",
            announcement.lang
        ));
        "ja".to_string()
    };
    // An image is shown with its alternative text, or not at all: a page must not hand a
    // screen-reader user a picture without words.
    let mut images = Vec::new();
    for (i, url) in announcement.images.iter().enumerate() {
        let alt = announcement
            .image_alts
            .get(i)
            .map(|a| clean_line(a))
            .unwrap_or_default();
        if alt.is_empty() || !url.starts_with("https://") {
            warnings.push(format!(
                "image {} is not shown on the website page: it has no alternative text",
                i + 1
            ));
        } else {
            images.push(PageImage {
                url: url.clone(),
                alt,
            });
        }
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in &announcement.tags {
        let tag = clean_line(tag);
        if !tag.is_empty() && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    let mut variants = Vec::new();
    for v in &announcement.variants {
        let vlang = page_lang(&v.lang);
        let vtitle = clean_line(&v.title);
        if !is_lang_tag(&vlang) || vlang == lang || vtitle.is_empty() {
            warnings.push(format!(
                "the `{}` version is not published: its language tag or title is unusable",
                v.lang
            ));
            continue;
        }
        variants.push(PageVariant {
            lang: vlang,
            title: vtitle,
            body: clean_text(&v.body),
        });
    }
    if let Some(cap) = &announcement.cap {
        if !crate::cap_feed::is_safe_file_name(&cap.file_name) {
            return Err(RenderError::new(
                "invalid_cap_file_name",
                "the CAP message's file name is not a safe file name",
            ));
        }
        warnings.push(format!(
            "published as CAP 1.2 at cap/{} and listed in cap/alerts.atom",
            cap.file_name
        ));
    }
    if !variants.is_empty() {
        let langs: Vec<&str> = variants.iter().map(|v| v.lang.as_str()).collect();
        warnings.push(format!(
            "also published in {} (a page each, linked with hreflang)",
            langs.join(", ")
        ));
    }
    // An update edits the page of what it updates, in place.
    let page_id = announcement
        .replaces
        .clone()
        .unwrap_or_else(|| announcement.id.clone());
    if !is_safe_id(&page_id) {
        return Err(RenderError::new(
            "invalid_id",
            "the page to update must be letters, digits and `-` (a UUID)",
        ));
    }
    if announcement.replaces.is_some() {
        warnings.push(format!("updates the page a/{page_id}.html in place"));
    }
    let unit = PageUnit {
        id: page_id,
        title,
        body,
        link,
        priority: announcement.priority,
        lang,
        tags,
        exercise: announcement.exercise,
        published_at: announcement.published_at,
        variants,
        cap: announcement.cap.clone(),
        images,
    };
    let text = preview_text(&unit);
    let preview = Preview {
        length: text.chars().count(),
        text,
        limit: None,
        length_rule: "characters".to_string(),
        warnings,
    };
    let payload = serde_json::to_value(&unit).map_err(|e| {
        RenderError::new("internal", format!("could not encode the page unit: {e}"))
    })?;
    Ok(Rendering {
        units: vec![payload],
        preview,
    })
}

/// The page's text as a reader sees it: title, body, then the link.
fn preview_text(unit: &PageUnit) -> String {
    let mut text = unit.title.clone();
    if !unit.body.is_empty() {
        text.push_str("\n\n");
        text.push_str(&unit.body);
    }
    if let Some(link) = &unit.link {
        text.push_str("\n\n");
        text.push_str(link);
    }
    text
}

pub(crate) fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// An absolute http(s) URL: anything else (`javascript:`, `data:`) must never become an
/// `href` on the city's site.
pub(crate) fn is_web_link(link: &str) -> bool {
    url::Url::parse(link)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        && !link.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A plausible BCP 47 tag (`ja`, `en`, `zh-Hant`, `ja-x-easy`): alphanumeric subtags of at
/// most 8 characters, the first alphabetic.
pub(crate) fn is_lang_tag(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let Some(first) = subtags.next() else {
        return false;
    };
    (1..=8).contains(&first.len())
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Multi-line text with line ends normalised and characters XML 1.0 forbids removed (a
/// stray control character would make the feeds unreadable for every subscriber).
pub(crate) fn clean_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    text.chars()
        .filter(|&c| is_xml_char(c))
        .collect::<String>()
        .trim()
        .to_string()
}

/// One line: like [`clean_text`], with every run of whitespace folded to one space.
pub(crate) fn clean_line(text: &str) -> String {
    clean_text(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r')
        || (c >= '\u{20}'
            && c != '\u{FFFE}'
            && c != '\u{FFFF}'
            && !('\u{7F}'..='\u{9F}').contains(&c))
}

/// RFC 3339 in Asia/Tokyo: `2026-11-23T15:00:00+09:00` (Atom, `<time datetime>`).
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.with_timezone(&jst())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// RFC 822 with a four-digit year in Asia/Tokyo: `Mon, 23 Nov 2026 15:00:00 +0900` (RSS).
pub(crate) fn rfc822(at: DateTime<Utc>) -> String {
    at.with_timezone(&jst()).to_rfc2822()
}

/// The date as a reader of `lang` expects it, in Asia/Tokyo.
pub(crate) fn display_date(at: DateTime<Utc>, lang: &str) -> String {
    let local = at.with_timezone(&jst());
    if is_japanese(lang) {
        const WEEKDAYS: [&str; 7] = ["月", "火", "水", "木", "金", "土", "日"];
        let weekday = WEEKDAYS[chrono::Datelike::weekday(&local).num_days_from_monday() as usize];
        local
            .format(&format!("%Y年%-m月%-d日（{weekday}）%-H時%M分"))
            .to_string()
    } else {
        local.format("%-d %B %Y, %H:%M (JST)").to_string()
    }
}

pub(crate) fn is_japanese(lang: &str) -> bool {
    lang == "ja" || lang.starts_with("ja-")
}
