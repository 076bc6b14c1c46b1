//! Pure rendering for X: post texts, twitter-text weighted length, and the long-text policies.

use noroshi_channel_core::{Announcement, Preview, RenderError, Rendering};
use serde::{Deserialize, Serialize};
use twitter_text::extractor::{Extractor, ValidatingExtractor};
use twitter_text_config::Configuration;

use crate::config::LongText;

/// X's limit in weighted characters (CHANNELS.md §2.5); Premium's longer posts are ignored.
pub const MAX_WEIGHTED_LENGTH: usize = 280;
/// X accepts at most four images on a post (CHANNELS.md §2.6).
pub const MAX_IMAGES: usize = 4;
/// How [`Preview::length`] is counted.
pub const LENGTH_RULE: &str = "twitter-text weighted (config v3: CJK 2, URL 23, NFC, emoji)";

/// One delivery unit for X. A thread is one unit holding all its posts: post n replies to
/// post n-1's id, which only exists once post n-1 is created, so the parts cannot be
/// independent queue rows. `deliver` posts them in order and remembers what landed;
/// `reconcile` and the duplicate-content rule find posted parts after a crash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct XPayload {
    /// The post texts in order: one for a plain post, several for a thread.
    pub posts: Vec<String>,
    /// Image URLs fetched and uploaded at delivery, attached to the first post (≤ 4).
    #[serde(default)]
    pub images: Vec<String>,
    /// A thread only: what to post instead of the remaining replies if X refuses one.
    /// Absent for a single post, and for a thread with no page URL or link to point at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<ThreadFallback>,
}

/// Shorten-and-link for a thread whose reply X refuses (a 403 since 2026-02-23 for
/// self-serve apps, CHANNELS.md §9). Computed at render time, so the stored unit carries
/// it. Replies already posted cannot be edited or taken back by the adapter; instead:
/// - if the thread's first post already contains `url`, nothing more is posted;
/// - otherwise one standalone post (not a reply) with `text` goes out.
///
/// Either way residents who see the first post can reach the full text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadFallback {
    /// The full announcement: the website page, else the announcement's link.
    pub url: String,
    /// The whole text cut to fit with `… {url}`, as the `shorten` policy renders it.
    pub text: String,
}

/// The twitter-text configuration Noroshi counts with (v3, the current default).
pub fn config() -> &'static Configuration {
    twitter_text_config::config_v3()
}

/// What twitter-text's `parseTweet` reports; ranges are inclusive UTF-16 indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub weighted_length: usize,
    pub valid: bool,
    pub permillage: usize,
    pub display_range: (i32, i32),
    pub valid_range: (i32, i32),
}

/// `text` made safe for twitter-text 0.3's parser, with the same weights and byte offsets.
/// Its legacy-retweet check slices the two or three bytes before every `@` / `＠` as if
/// they were ASCII, and panics when a Japanese character stands there (`連絡先@…`, found
/// by `accept::properties`). Such a mark is replaced by one of the same UTF-8 length and
/// weight that starts no mention (`%`, `％`): mentions do not change the weighted length,
/// and an `@` that belongs to a URL (`https://user@host`) has ASCII before it and is kept.
fn parser_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_at = |p: usize| {
        p >= 2
            && (!text.is_char_boundary(p - 2)
                || (text[..p].ends_with(':') && p >= 3 && !text.is_char_boundary(p - 3)))
    };
    let risky: Vec<usize> = text
        .char_indices()
        .filter(|(p, c)| matches!(c, '@' | '＠') && unsafe_at(*p))
        .map(|(p, _)| p)
        .collect();
    if risky.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.char_indices()
            .map(|(p, c)| match c {
                '@' if risky.contains(&p) => '%',
                '＠' if risky.contains(&p) => '％',
                other => other,
            })
            .collect(),
    )
}

/// Counts `text` under `config` exactly as twitter-text's `parseTweet` does.
pub fn count_with(text: &str, config: &Configuration) -> Counted {
    let r = twitter_text::parse(&parser_safe(text), config, true);
    Counted {
        weighted_length: r.weighted_length.max(0) as usize,
        valid: r.is_valid,
        permillage: r.permillage.max(0) as usize,
        display_range: (r.display_text_range.start(), r.display_text_range.end()),
        valid_range: (r.valid_text_range.start(), r.valid_text_range.end()),
    }
}

/// The weighted length X counts for `text` (config v3).
pub fn weighted_length(text: &str) -> usize {
    count_with(text, config()).weighted_length
}

/// `text` in Unicode NFC, as X stores it.
pub fn nfc(text: &str) -> String {
    ValidatingExtractor::new(config()).prep_input(text)
}

/// Byte ranges of the URLs twitter-text recognises in `text` (each counts 23).
pub fn url_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    let stable = parser_safe(text);
    for url in Extractor::new().extract_urls(&stable) {
        if let Some(pos) = stable[from..].find(url.as_str()) {
            let start = from + pos;
            spans.push((start, start + url.len()));
            from = start + url.len();
        }
    }
    spans
}

/// The text of a post before any long-text policy: the override as written, else the title,
/// a newline, the body and (unless the body already has it) the link on its own line.
pub fn compose(a: &Announcement) -> String {
    if let Some(t) = a.text_override.as_deref().filter(|t| !t.trim().is_empty()) {
        return t.trim_end().to_string();
    }
    let mut text = a.title.trim().to_string();
    let body = a.body.trim();
    if !body.is_empty() {
        text.push('\n');
        text.push_str(body);
    }
    if let Some(link) = a.link.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        if !body.contains(link) {
            text.push('\n');
            text.push_str(link);
        }
    }
    text
}

/// Renders an announcement into one unit (a post, or a thread held as one unit).
pub fn render(a: &Announcement, policy: LongText) -> Result<Rendering, RenderError> {
    let text = compose(a);
    if text.trim().is_empty() {
        return Err(RenderError::new("empty_text", "the post has no text"));
    }
    if text.contains(['\u{FFFE}', '\u{FEFF}', '\u{FFFF}']) {
        return Err(RenderError::new(
            "invalid_character",
            "the text contains U+FFFE, U+FEFF or U+FFFF, which X refuses",
        ));
    }
    let mut warnings = Vec::new();
    let mut fallback = None;
    let mut images: Vec<String> = a.images.clone();
    if images.len() > MAX_IMAGES {
        warnings.push(format!(
            "X carries at most {MAX_IMAGES} images: {} dropped",
            images.len() - MAX_IMAGES
        ));
        images.truncate(MAX_IMAGES);
    }
    let length = weighted_length(&text);
    let posts = if length <= MAX_WEIGHTED_LENGTH {
        vec![text]
    } else {
        match policy {
            LongText::Refuse => return Err(too_long(length, None)),
            LongText::Shorten => {
                let Some(url) = a.page_url.as_deref().or(a.link.as_deref()) else {
                    return Err(too_long(
                        length,
                        Some(
                            "shortening needs a page URL or a link to point at, and there is none",
                        ),
                    ));
                };
                let short = shorten(&text, url).ok_or_else(|| {
                    too_long(
                        length,
                        Some("the text cannot be shortened to fit with its link"),
                    )
                })?;
                warnings.push(format!(
                    "shortened from {length} to {} weighted characters, linking to {url}",
                    weighted_length(&short)
                ));
                vec![short]
            }
            LongText::Thread => {
                let parts = split_thread(&text)
                    .ok_or_else(|| too_long(length, Some("the text cannot be split into posts")))?;
                let lengths: Vec<String> = parts
                    .iter()
                    .map(|p| weighted_length(p).to_string())
                    .collect();
                warnings.push(format!(
                    "split into a thread of {} posts (weighted lengths {})",
                    parts.len(),
                    lengths.join(", ")
                ));
                fallback = a.page_url.as_deref().or(a.link.as_deref()).and_then(|url| {
                    shorten(&text, url).map(|short| ThreadFallback {
                        url: url.to_string(),
                        text: short,
                    })
                });
                if fallback.is_none() {
                    warnings.push(
                        "X may refuse a thread's replies (self-serve apps, since 2026-02), and \
                         there is no page URL or link to fall back to: the thread could stop \
                         after its first post"
                            .to_string(),
                    );
                }
                parts
            }
        }
    };
    let longest = posts.iter().map(|p| weighted_length(p)).max().unwrap_or(0);
    let preview = Preview {
        text: posts.join("\n\n"),
        length: longest,
        limit: Some(MAX_WEIGHTED_LENGTH),
        length_rule: LENGTH_RULE.to_string(),
        warnings,
    };
    let payload = XPayload {
        posts,
        images,
        fallback,
    };
    Ok(Rendering {
        units: vec![serde_json::to_value(payload).expect("payload serialises")],
        preview,
    })
}

fn too_long(length: usize, why: Option<&str>) -> RenderError {
    let mut e = RenderError::too_long(
        "max_weighted_length",
        length,
        MAX_WEIGHTED_LENGTH,
        "weighted characters (CJK counts 2, each URL 23)",
    );
    if let Some(why) = why {
        e.message = format!("{}; {why}", e.message);
    }
    e
}

/// Byte offsets where `text` may be cut: char boundaries outside URLs that do not split a
/// base character from its combining mark, variation selector, skin tone or ZWJ sequence.
fn cut_points(text: &str) -> Vec<usize> {
    let urls = url_spans(text);
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut points = Vec::with_capacity(chars.len() + 1);
    let mut ri_run = 0usize;
    for (i, &(at, c)) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p].1);
        let safe = i > 0
            && !urls.iter().any(|&(s, e)| at > s && at < e)
            && !is_extender(c)
            && prev != Some('\u{200D}')
            && !(is_regional_indicator(c) && ri_run % 2 == 1);
        if safe {
            points.push(at);
        }
        ri_run = if is_regional_indicator(c) {
            ri_run + 1
        } else {
            0
        };
    }
    points.push(text.len());
    points
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_extender(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}' | '\u{FE00}'..='\u{FE0F}' | '\u{FE20}'..='\u{FE2F}'
        | '\u{3099}'..='\u{309A}' | '\u{200D}' | '\u{1F3FB}'..='\u{1F3FF}'
        | '\u{E0020}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// The largest cut point `p` (by index into `points`) for which `fits(&text[..p])`.
/// Weighted length grows with the prefix once cuts inside URLs are excluded, so a binary
/// search finds it.
fn largest_fitting(text: &str, points: &[usize], fits: impl Fn(&str) -> bool) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, points.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fits(&text[..points[mid]]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut i = lo.checked_sub(1)?;
    // Guard against any non-monotone corner: walk down until it really fits.
    loop {
        if fits(&text[..points[i]]) {
            return Some(points[i]);
        }
        i = i.checked_sub(1)?;
    }
}

/// `text` cut so that `cut + "… " + url` fits 280; `None` when nothing of it fits.
pub fn shorten(text: &str, url: &str) -> Option<String> {
    let suffix = format!("… {url}");
    let points = cut_points(text);
    let fits = |p: &str| {
        let t = p.trim_end();
        !t.is_empty() && weighted_length(&format!("{t}{suffix}")) <= MAX_WEIGHTED_LENGTH
    };
    let at = largest_fitting(text, &points, fits)?;
    let out = format!("{}{suffix}", text[..at].trim_end());
    (weighted_length(&out) <= MAX_WEIGHTED_LENGTH).then_some(out)
}

/// Splits `text` into posts of at most 280 weighted characters each, numbered `(k/N)` on a
/// last line so readers see the thread continues. Breaks prefer a newline, then a sentence
/// end, then a comma, then a space, and never fall inside a URL.
pub fn split_thread(text: &str) -> Option<Vec<String>> {
    let mut estimate = 2usize;
    for _ in 0..4 {
        let reserve = weighted_length(&format!("\n({estimate}/{estimate})"));
        let chunks = split_chunks(text, MAX_WEIGHTED_LENGTH.checked_sub(reserve)?)?;
        let n = chunks.len();
        if n.to_string().len() <= estimate.to_string().len() {
            let posts: Vec<String> = chunks
                .iter()
                .enumerate()
                .map(|(k, c)| format!("{c}\n({}/{n})", k + 1))
                .collect();
            return posts
                .iter()
                .all(|p| weighted_length(p) <= MAX_WEIGHTED_LENGTH)
                .then_some(posts);
        }
        estimate = n;
    }
    None
}

fn split_chunks(text: &str, budget: usize) -> Option<Vec<String>> {
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if weighted_length(rest) <= budget {
            chunks.push(rest.to_string());
            break;
        }
        let points = cut_points(rest);
        let fits = |p: &str| {
            let t = p.trim_end();
            !t.is_empty() && weighted_length(t) <= budget
        };
        let hard = largest_fitting(rest, &points, fits)?;
        let at = nicer_break(rest, &points, hard).unwrap_or(hard);
        chunks.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
    Some(chunks)
}

/// The latest natural break at or before `hard` that keeps at least half of the chunk.
fn nicer_break(text: &str, points: &[usize], hard: usize) -> Option<usize> {
    let floor = hard / 2;
    let candidates: Vec<usize> = points
        .iter()
        .copied()
        .filter(|&p| p > floor && p <= hard)
        .collect();
    let ends_with = |p: usize, set: &[char]| text[..p].ends_with(set);
    let classes: [&[char]; 4] = [
        &['\n'],
        &['。', '！', '？', '!', '?', '．'],
        &['、', '，', ',', ';', '；'],
        &[' ', '\u{3000}', '\t'],
    ];
    for set in classes {
        if let Some(&p) = candidates.iter().rev().find(|&&p| ends_with(p, set)) {
            return Some(p);
        }
    }
    // A Latin sentence end: ". " — the break after the space is the same as a space break,
    // already covered above.
    None
}

#[cfg(test)]
mod parser_safety_tests {
    use super::*;

    /// twitter-text 0.3 panicked on a mention mark with a non-ASCII character one or two
    /// places before it (`連絡先@…`, `éV@`, `：@`); found by `accept::properties` with
    /// `…$xȺV@…`. Counting and URL spans must survive any text and count it as before.
    #[test]
    fn a_mention_mark_after_japanese_text_is_counted_without_panic() {
        for before in ["連絡先", "éV", "ろ:", "Ⱥ", "須坂市＠"] {
            for mark in ['@', '＠'] {
                let text = format!(
                    "{}\n{before}{mark}suzaka_city https://www.city.example.jp/a",
                    "ろ".repeat(50)
                );
                let counted = count_with(&text, config());
                assert!(counted.weighted_length > 100, "{text}");
                assert_eq!(url_spans(&text).len(), 1, "{text}");
            }
        }
        // The same weight as with a harmless neighbour.
        assert_eq!(
            weighted_length("連絡先@suzaka"),
            weighted_length("連絡先%suzaka")
        );
        // An @ inside a URL keeps the URL.
        assert_eq!(weighted_length("https://u@city.example.jp/x"), 23);
    }
}
