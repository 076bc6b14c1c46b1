//! The message built once per announcement and language, personalised per recipient.
//!
//! Every copy of an announcement differs from the next only in a few header lines (`To`,
//! `Message-ID`, `Date`, `List-Unsubscribe`) and in the unsubscribe link at the end of
//! each part. So lettre builds the message once, with a mark where the copy's header lines
//! go and a mark for each part's body; the built text is cut at the marks, and a copy is
//! those pieces with its own header lines (encoded by lettre) and its own part bodies in
//! between. A part body is base64 in lines of 76 characters, each line 57 input bytes: the
//! whole lines of the part's fixed beginning are encoded once, and per copy only the rest
//! (the last partial line, the link, what follows it) is encoded. The result is the same
//! bytes lettre would write for the whole message (`tests::a_spliced_copy_is_what_lettre_builds`).
//!
//! The pieces are also the copy's SMTP `DATA` text: no line of a lettre header, a boundary
//! or base64 starts with a dot, so nothing needs dot-stuffing (checked once per template;
//! a template that would need it falls back to stuffing each copy).

use std::fmt::Write as _;
use std::sync::OnceLock;

use lettre::message::header::{HeaderValue, Headers};

use crate::render::{html_parts, text_parts, EmailPayload};
use noroshi_channel_core::text::escape_html;

/// Input bytes per base64 line (76 characters).
const LINE_BYTES: usize = 57;

/// One part's body, base64: the fixed beginning's whole lines, and what is encoded per copy.
#[derive(Debug)]
struct Part64 {
    /// The whole 57-byte lines of the part's fixed beginning, encoded, without a final CRLF.
    lines: String,
    /// The fixed beginning's last bytes, fewer than a line, encoded with each copy's link.
    carry: Vec<u8>,
    /// What follows the link (CRLF line ends).
    after: Vec<u8>,
}

impl Part64 {
    fn new(before: &str, after: &str) -> Part64 {
        let before = crlf(before);
        let whole = before.len() / LINE_BYTES * LINE_BYTES;
        let mut lines = String::with_capacity(whole / 3 * 4 + whole / LINE_BYTES * 2);
        email_encoding::body::base64::encode(&before.as_bytes()[..whole], &mut lines)
            .expect("writing to a String cannot fail");
        Part64 {
            lines,
            carry: before.as_bytes()[whole..].to_vec(),
            after: crlf(after).into_bytes(),
        }
    }

    /// The part's body with `link` (no line breaks) between its beginning and its end.
    fn write(&self, link: &str, out: &mut String) {
        out.push_str(&self.lines);
        let mut rest = Vec::with_capacity(self.carry.len() + link.len() + self.after.len());
        rest.extend_from_slice(&self.carry);
        rest.extend_from_slice(link.as_bytes());
        rest.extend_from_slice(&self.after);
        if !self.lines.is_empty() && !rest.is_empty() {
            out.push_str("\r\n");
        }
        email_encoding::body::base64::encode(&rest, out).expect("writing to a String cannot fail");
    }
}

/// lettre's line-end rule for text bodies: a `\n` not after a `\r` becomes `\r\n`. With a
/// link that has no line break, the rule gives the same for the pieces as for the whole.
fn crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut previous = '\0';
    for c in s.chars() {
        if c == '\n' && previous != '\r' {
            out.push('\r');
        }
        out.push(c);
        previous = c;
    }
    out
}

/// One announcement's message in one language, ready to be personalised.
#[derive(Debug)]
pub(crate) struct Template {
    /// The text before the copy's header lines, between them and the plain body, between
    /// the plain and the HTML body, and after the HTML body.
    pieces: [String; 4],
    text: Part64,
    html: Part64,
    /// The multipart boundary (one per template; it never occurs in base64 or headers).
    #[cfg_attr(not(test), allow(dead_code))] // the tests build lettre's message with it
    pub(crate) boundary: String,
    /// The pieces have no line starting with a dot (always so with lettre's output; when
    /// not, each copy is dot-stuffed as a whole).
    dot_safe: bool,
}

/// The marks lettre builds the skeleton with: random, so no announcement text can hold one.
pub(crate) struct Marks {
    pub(crate) header_name: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

impl Marks {
    pub(crate) fn new() -> Marks {
        let token = uuid::Uuid::new_v4().simple().to_string();
        Marks {
            header_name: format!("X-Noroshi-Copy-{token}"),
            text: format!("NOROSHITEXT{token}"),
            html: format!("NOROSHIHTML{token}"),
        }
    }
}

impl Template {
    /// Cuts lettre's skeleton (built with `marks`) into pieces; `None` when a mark is not
    /// found exactly once (never with lettre's output; the caller reports it).
    pub(crate) fn new(
        payload: &EmailPayload,
        skeleton: &str,
        marks: &Marks,
        boundary: String,
    ) -> Option<Template> {
        let header_line = format!("{}: x\r\n", marks.header_name);
        let cut = |s: &str, mark: &str| -> Option<(String, String)> {
            let mut parts = s.split(mark);
            let (a, b) = (parts.next()?, parts.next()?);
            parts
                .next()
                .is_none()
                .then(|| (a.to_string(), b.to_string()))
        };
        let (head, rest) = cut(skeleton, &header_line)?;
        let (middle, rest) = cut(&rest, &marks.text)?;
        let (between, end) = cut(&rest, &marks.html)?;
        let lang = payload.lang.as_str();
        let (text_before, text_after) = text_parts(payload, lang);
        let (html_before, html_after) = html_parts(payload, lang);
        let pieces = [head, middle, between, end];
        let dot_safe = pieces
            .iter()
            .all(|p| !p.starts_with('.') && !p.contains("\n."));
        Some(Template {
            pieces,
            text: Part64::new(&text_before, &text_after),
            html: Part64::new(&html_before, &html_after),
            boundary,
            dot_safe,
        })
    }

    /// One copy as SMTP `DATA` text, terminated by `CRLF . CRLF`: the template with the
    /// copy's header lines and its unsubscribe link in both parts.
    pub(crate) fn data(&self, copy_headers: Vec<HeaderValue>, unsubscribe_url: &str) -> String {
        let mut headers = Headers::new();
        for h in copy_headers {
            headers.insert_raw(h);
        }
        let size = self.pieces.iter().map(String::len).sum::<usize>()
            + self.text.lines.len()
            + self.html.lines.len()
            + 1024;
        let mut out = String::with_capacity(size);
        out.push_str(&self.pieces[0]);
        write!(out, "{headers}").expect("writing to a String cannot fail");
        out.push_str(&self.pieces[1]);
        self.text.write(unsubscribe_url, &mut out);
        out.push_str(&self.pieces[2]);
        self.html.write(&escape_html(unsubscribe_url), &mut out);
        out.push_str(&self.pieces[3]);
        if self.dot_safe {
            out.push_str(".\r\n");
            out
        } else {
            crate::client::dot_stuffed(out.as_bytes())
        }
    }
}

/// A parsed payload and its templates, one per language variant, built when first used.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) payload: EmailPayload,
    /// Index 0: the announcement's own language; i + 1: `payload.variants[i]`.
    templates: Vec<OnceLock<Result<Template, String>>>,
}

impl Prepared {
    pub(crate) fn new(payload: EmailPayload) -> Prepared {
        let templates = (0..=payload.variants.len())
            .map(|_| OnceLock::new())
            .collect();
        Prepared { payload, templates }
    }

    /// The message for a subscriber who reads `lang` (see `EmailPayload::for_lang`), and
    /// its template, built by `build` the first time.
    pub(crate) fn for_lang(
        &self,
        lang: &str,
        build: impl FnOnce(&EmailPayload) -> Result<Template, String>,
    ) -> (&EmailPayload, &Result<Template, String>) {
        let chosen = self.payload.for_lang(lang);
        let at = if std::ptr::eq(chosen, &self.payload) {
            0
        } else {
            self.payload
                .variants
                .iter()
                .position(|v| std::ptr::eq(v, chosen))
                .map_or(0, |i| i + 1)
        };
        (chosen, self.templates[at].get_or_init(|| build(chosen)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_follows_lettres_rule() {
        assert_eq!(crlf("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf("\n"), "\r\n");
        assert_eq!(crlf("須坂\n"), "須坂\r\n");
    }

    /// The whole-line prefix and the per-copy rest give lettre's encoding of the whole, for
    /// every length of the fixed beginning around a line's 57 bytes.
    #[test]
    fn a_part_split_at_whole_lines_encodes_as_the_whole() {
        for n in [0, 1, 56, 57, 58, 113, 114, 115, 400] {
            let before = "あ".repeat(n / 3) + &"x".repeat(n % 3);
            let part = Part64::new(&before, "\n</p>");
            let mut spliced = String::new();
            part.write("https://city.example.jp/u?t=1", &mut spliced);
            let mut whole = String::new();
            let text = crlf(&format!("{before}https://city.example.jp/u?t=1\n</p>"));
            email_encoding::body::base64::encode(text.as_bytes(), &mut whole).unwrap();
            assert_eq!(spliced, whole, "{n} bytes before the link");
        }
    }
}
