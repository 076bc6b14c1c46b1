//! Pure rendering: an announcement becomes one `{subject, text, html}` unit; the
//! per-recipient unsubscribe footer is added at delivery time.

use noroshi_channel_core::text::escape_html;
use noroshi_channel_core::{Announcement, Preview, RenderError, Rendering};
use serde::{Deserialize, Serialize};

/// Where `deliver` puts the recipient's unsubscribe link in the HTML part.
const UNSUBSCRIBE_MARK: &str = "<!--noroshi:unsubscribe-->";

/// One rendered unit, stored in the queue and sent to every subscriber.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailPayload {
    /// The `Subject:` text (the announcement's title, on one line).
    pub subject: String,
    /// The `text/plain` part without the unsubscribe footer.
    pub text: String,
    /// The `text/html` part, with a mark where the unsubscribe footer goes.
    pub html: String,
    /// The announcement's language, for `lang=` and the labels.
    #[serde(default = "default_lang")]
    pub lang: String,
    /// The same message in the announcement's other languages: each subscriber gets the
    /// one of their language, else this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<EmailPayload>,
    /// A drill routed to `exercise_target`: the only address it goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise_to: Option<String>,
}

impl EmailPayload {
    /// The message for a subscriber who reads `lang`: that language's variant (or its
    /// primary subtag's: `en` for `en-US`), else the announcement's own.
    pub fn for_lang(&self, lang: &str) -> &EmailPayload {
        let primary = lang.split('-').next().unwrap_or(lang);
        self.variants
            .iter()
            .find(|v| v.lang.eq_ignore_ascii_case(lang))
            .or_else(|| {
                self.variants
                    .iter()
                    .find(|v| v.lang.eq_ignore_ascii_case(primary))
            })
            .unwrap_or(self)
    }
}

fn default_lang() -> String {
    "ja".into()
}

struct Labels {
    details: &'static str,
    details_link: &'static str,
    page: &'static str,
    footer_why: &'static str,
    footer_unsubscribe: &'static str,
}

fn labels(lang: &str) -> Labels {
    if lang.is_empty() || lang.starts_with("ja") {
        Labels {
            details: "詳細",
            details_link: "詳細ページ",
            page: "市のウェブサイト",
            footer_why: "このメールは、お知らせメールに登録された方にお送りしています。",
            footer_unsubscribe: "配信停止（登録解除）",
        }
    } else {
        Labels {
            details: "Details",
            details_link: "details page",
            page: "On the city website",
            footer_why: "You receive this message because you subscribed to these announcements.",
            footer_unsubscribe: "Unsubscribe",
        }
    }
}

/// Renders the single email unit. Pure. A drill with an `exercise_target` goes to that
/// address alone.
pub fn render(
    announcement: &Announcement,
    exercise_target: Option<&str>,
) -> Result<Rendering, RenderError> {
    let mut payload = render_payload(announcement)?;
    let mut warnings = Vec::new();
    if announcement.exercise {
        if let Some(target) = exercise_target {
            payload.exercise_to = Some(target.to_string());
            warnings.push(format!(
                "a drill: sent to the test address {target} only, not to the subscribers"
            ));
        }
    }
    if !announcement.images.is_empty() {
        warnings.push(
            "images are not attached to email (attachments are discouraged); link to the page instead"
                .to_string(),
        );
    }
    let text = personal_text(&payload, "https://…/unsubscribe?t=…", &payload.lang);
    if !payload.variants.is_empty() {
        let langs: Vec<&str> = payload.variants.iter().map(|v| v.lang.as_str()).collect();
        warnings.push(format!(
            "subscribers whose language is {} get that version; everyone else this one",
            langs.join(", ")
        ));
    }
    let preview = Preview {
        length: text.chars().count(),
        text,
        limit: None,
        length_rule: "characters".into(),
        warnings,
    };
    let unit =
        serde_json::to_value(&payload).map_err(|e| RenderError::new("encode", e.to_string()))?;
    Ok(Rendering {
        units: vec![unit],
        preview,
    })
}

pub(crate) fn render_payload(a: &Announcement) -> Result<EmailPayload, RenderError> {
    let mut payload = render_one(a)?;
    for v in &a.variants {
        let mut other = a.clone();
        other.title = v.title.clone();
        other.body = v.body.clone();
        other.lang = v.lang.clone();
        // A per-channel override is written in the primary language only.
        other.text_override = None;
        other.variants = Vec::new();
        payload.variants.push(render_one(&other)?);
    }
    Ok(payload)
}

fn render_one(a: &Announcement) -> Result<EmailPayload, RenderError> {
    let subject = one_line(&a.title);
    if subject.is_empty() {
        return Err(RenderError::new(
            "empty_title",
            "an email needs a subject: the title is empty",
        ));
    }
    let body = a
        .text_override
        .as_deref()
        .unwrap_or(&a.body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let body = body.trim();
    let lang = if a.lang.trim().is_empty() {
        "ja".to_string()
    } else {
        a.lang.trim().to_string()
    };
    let l = labels(&lang);
    let link = a.link.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let page = a
        .page_url
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty() && Some(*p) != link);

    let mut text = format!("{subject}\n\n");
    if !body.is_empty() {
        text.push_str(body);
        text.push_str("\n\n");
    }
    if let Some(link) = link {
        text.push_str(&format!("{}: {link}\n", l.details));
    }
    if let Some(page) = page {
        text.push_str(&format!("{}: {page}\n", l.page));
    }

    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"UTF-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n",
        lang = escape_html(&lang),
        title = escape_html(&subject),
    );
    for paragraph in body.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let lines: Vec<String> = paragraph.lines().map(escape_html).collect();
        html.push_str(&format!("<p>{}</p>\n", lines.join("<br>\n")));
    }
    for (label, url) in [(l.details, link), (l.page, page)] {
        let Some(url) = url else { continue };
        html.push_str(&format!(
            "<p>{}: {}</p>\n",
            escape_html(label),
            html_link(url, &subject, &l)
        ));
    }
    html.push_str(UNSUBSCRIBE_MARK);
    html.push_str("\n</body>\n</html>\n");

    Ok(EmailPayload {
        subject,
        text,
        html,
        lang,
        variants: Vec::new(),
        exercise_to: None,
    })
}

/// A link whose text names where it goes (screen readers list links out of context).
fn html_link(url: &str, subject: &str, l: &Labels) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        format!(
            "<a href=\"{}\">{}（{}）</a>",
            escape_html(url),
            escape_html(subject),
            escape_html(l.details_link)
        )
    } else {
        // Not a web link (e.g. `javascript:`): show it, never make it clickable.
        escape_html(url)
    }
}

/// The plain part for one recipient: everything important, then the unsubscribe link.
pub(crate) fn personal_text(payload: &EmailPayload, unsubscribe_url: &str, lang: &str) -> String {
    let (before, after) = text_parts(payload, lang);
    format!("{before}{unsubscribe_url}{after}")
}

/// The plain part around the recipient's unsubscribe URL: what comes before it and after.
pub(crate) fn text_parts(payload: &EmailPayload, lang: &str) -> (String, String) {
    let l = labels(lang);
    let before = format!(
        "{}\n\n-- \n{}\n{}: ",
        payload.text.trim_end_matches('\n'),
        l.footer_why,
        l.footer_unsubscribe,
    );
    (before, "\n".into())
}

/// The HTML part for one recipient (deliveries splice it from `html_parts`).
#[cfg(test)]
pub(crate) fn personal_html(payload: &EmailPayload, unsubscribe_url: &str, lang: &str) -> String {
    let (before, after) = html_parts(payload, lang);
    format!("{before}{}{after}", escape_html(unsubscribe_url))
}

/// The HTML part around the recipient's unsubscribe URL (HTML-escaped when it goes in):
/// the footer at the mark, else before `</body>`, else at the end.
pub(crate) fn html_parts(payload: &EmailPayload, lang: &str) -> (String, String) {
    let l = labels(lang);
    let footer_before = format!(
        "<hr>\n<footer>\n<p>{}</p>\n<p><a href=\"",
        escape_html(l.footer_why)
    );
    let footer_after = format!(
        "\">{}</a></p>\n</footer>",
        escape_html(l.footer_unsubscribe)
    );
    let html = payload.html.as_str();
    let (head, tail) = if let Some(at) = html.find(UNSUBSCRIBE_MARK) {
        (&html[..at], &html[at + UNSUBSCRIBE_MARK.len()..])
    } else if let Some(at) = html.rfind("</body>") {
        (&html[..at], &html[at..])
    } else {
        (html, "")
    };
    (
        format!("{head}{footer_before}"),
        format!("{footer_after}{tail}"),
    )
}

fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .filter(|p| !p.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}
