//! Pure rendering: the body template filled with JSON-escaped values, checked to be JSON.

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use noroshi_channel_core::{Announcement, Preview, RenderError, Rendering};
use serde::{Deserialize, Serialize};

/// Every field, as JSON literals.
pub const DEFAULT_TEMPLATE: &str = r#"{"id": {{ id }}, "title": {{ title }}, "body": {{ body }}, "text": {{ text }}, "link": {{ link }}, "priority": {{ priority }}, "page_url": {{ page_url }}, "published_at": {{ published_at }}, "tags": {{ tags }}, "exercise": {{ exercise }}, "lang": {{ lang }}}"#;

/// The stored unit: the exact body bytes `deliver` sends (and signs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPayload {
    pub body: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt placeholder is a config error, not an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Every value prints as a JSON literal (a string with its quotes), so no value can
    // break out of its place in the document: `{"title": {{ title }}}`. Text is joined
    // with `~` inside one placeholder: `{"text": {{ title ~ "\n" ~ body }}}`.
    env.set_formatter(|out, _state, value| {
        let text = if value.is_safe() {
            // The `json` filter's output: already a JSON literal.
            value.as_str().unwrap_or_default().to_string()
        } else {
            serde_json::to_string(value).map_err(json_error)?
        };
        out.write_str(&text)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write"))
    });
    env.add_filter("json", |value: Value| -> Result<Value, Error> {
        let s = serde_json::to_string(&value).map_err(json_error)?;
        Ok(Value::from_safe_string(s))
    });
    env
}

fn json_error(e: serde_json::Error) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("not JSON-encodable: {e}"),
    )
}

/// The text of the announcement: the override, else title and body.
pub fn text_of(a: &Announcement) -> String {
    match &a.text_override {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => [a.title.trim(), a.body.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// Fills `template` for `a` and proves the result is JSON.
pub fn render_body(template: &str, a: &Announcement) -> Result<String, RenderError> {
    let ctx = serde_json::json!({
        "id": a.id,
        "title": a.title,
        "body": a.body,
        "text": text_of(a),
        "link": a.link,
        "priority": a.priority.as_str(),
        "page_url": a.page_url,
        "published_at": a.published_at.to_rfc3339(),
        "tags": a.tags,
        "exercise": a.exercise,
        "lang": a.lang,
    });
    let body = environment()
        .render_str(template, ctx)
        .map_err(|e| RenderError::new("body_template", format!("the body template failed: {e}")))?;
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&body) {
        return Err(RenderError::new(
            "invalid_json",
            format!(
                "the body template does not give JSON ({e}); a placeholder prints a JSON \
                 value with its quotes, so write {{\"title\": {{{{ title }}}}}}, not \
                 \"{{{{ title }}}}\", and join text with ~"
            ),
        ));
    }
    Ok(body)
}

/// What `validate()` runs: the template on a sample announcement full of awkward characters.
pub(crate) fn check_template(template: &str) -> Result<(), RenderError> {
    let sample = Announcement {
        id: "0193b1e2-0000-7000-8000-000000000000".to_string(),
        title: "「避難所」\"開設\"\\ のお知らせ".to_string(),
        body: "本日15時、\n市役所に</script>避難所を開設しました。\t".to_string(),
        link: Some("https://www.city.example.jp/a?b=1&c=2".to_string()),
        priority: noroshi_channel_core::Priority::Disaster,
        lang: "ja".to_string(),
        tags: vec!["防災".to_string(), "\"quoted\"".to_string()],
        exercise: true,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: None,
        // A fixed time: validation is pure and reads no clock.
        published_at: chrono::DateTime::UNIX_EPOCH,
        variants: Vec::new(),
        cap: None,
        replaces: None,
    };
    render_body(template, &sample).map(|_| ())
}

pub fn render(
    template: &str,
    max_length: Option<usize>,
    a: &Announcement,
) -> Result<Rendering, RenderError> {
    let text = text_of(a);
    if text.is_empty() {
        return Err(RenderError::new(
            "empty_message",
            "the announcement has no text: give a title, a body or an override",
        ));
    }
    let length = text.chars().count();
    if let Some(limit) = max_length {
        if length > limit {
            return Err(RenderError::too_long(
                "max_length",
                length,
                limit,
                "characters",
            ));
        }
    }
    let body = render_body(template, a)?;
    let mut warnings = Vec::new();
    if !a.images.is_empty() && !template.contains("images") {
        warnings.push("images are not sent: the body template has no place for them".to_string());
    }
    let unit = serde_json::to_value(WebhookPayload { body: body.clone() })
        .expect("a payload always serializes");
    Ok(Rendering {
        units: vec![unit],
        preview: Preview {
            text: body,
            length,
            limit: max_length,
            length_rule: "characters".to_string(),
            warnings,
        },
    })
}
