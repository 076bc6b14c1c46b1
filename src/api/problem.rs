//! RFC 9457 problem details: the one error type at the HTTP edge.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API error, rendered as `application/problem+json`. `detail` names the offending
/// field; internal errors are logged, never shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field the problem is about (`title`, `channels[2]`, `overrides.x.text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem found, when there were several (one per refusing channel).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before trying again, sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
    /// The channel that refused, for rendering errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The channel's rule (`max_weighted_length`, `max_length`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

pub type ApiResult<T> = Result<T, Problem>;

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        let title = status.canonical_reason().unwrap_or("Error").to_string();
        Problem {
            kind: format!(
                "https://noroshi.invalid/problems/{}",
                title.to_lowercase().replace(' ', "-")
            ),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Problem {
        let field = field.into();
        let detail = detail.into();
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: {detail}"),
        )
        .field(field)
    }
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, detail)
    }
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required (Authorization: Bearer TOKEN)",
        )
    }
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }
    /// `429` with `Retry-After`: a rate limit was reached; nothing was done.
    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u32) -> Problem {
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail);
        p.retry_after = Some(retry_after_secs);
        p
    }
    /// Logs the cause and answers 500 without it: internals never reach the client.
    pub fn internal(cause: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %cause, "Request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the operator can find it in the daemon's log",
        )
    }
}

impl From<crate::accept::Refusal> for Problem {
    fn from(r: crate::accept::Refusal) -> Problem {
        use crate::accept::Refusal;
        match r {
            Refusal::Invalid { field, detail } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail).field(field)
            }
            Refusal::NotAllowed { field, detail } => Problem::forbidden(detail).field(field),
            Refusal::Channels(refusals) => {
                let detail = refusals
                    .iter()
                    .map(|r| r.detail.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
                p.field = refusals.first().map(|r| r.field.clone());
                p.errors = refusals
                    .into_iter()
                    .map(|r| FieldError {
                        field: r.field,
                        detail: r.detail,
                        channel: r.channel,
                        rule: r.rule,
                    })
                    .collect();
                p
            }
        }
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Problem {
        if let Some(fault) = e.storage_fault() {
            // The database did not take the write (full, busy, unreachable, read-only):
            // nothing was written, and trying again later is right. The first such error is
            // logged at error level by the storage health, not once per request.
            tracing::debug!(error = %e, "Storage fault; answered 503");
            let detail = match fault {
                crate::store::health::Fault::Full => {
                    "storage is full: nothing was stored; try again once the operator has freed space"
                }
                crate::store::health::Fault::Unavailable => {
                    "storage is unavailable or busy: nothing was stored; try again shortly"
                }
            };
            let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail);
            p.kind = format!("https://noroshi.invalid/problems/{}", fault.problem());
            p.retry_after = Some(fault.retry_after());
            return p;
        }
        Problem::internal(e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A control character no text field may hold: NUL and the other C0 controls except tab,
/// line feed and carriage return, DEL, and the C1 controls. PostgreSQL refuses NUL in text
/// and platforms refuse the others later, so they are refused before anything is stored.
pub fn control_character(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Refuses a text field holding a control character, naming the field and the character.
pub fn check_text(field: &str, text: &str) -> ApiResult<()> {
    match control_character(text) {
        None => Ok(()),
        Some(c) => Err(Problem::invalid(
            field,
            format!(
                "contains the control character U+{:04X}; remove it (tabs and line breaks are fine)",
                c as u32
            ),
        )),
    }
}

/// The first string (or key) in a JSON document holding a control character, by the path
/// `serde_path_to_error` would give (`tags[0]`, `overrides.website.text`).
fn find_control(value: &serde_json::Value, path: &str) -> Option<(String, char)> {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) => control_character(s).map(|c| (path.to_string(), c)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_control(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let field = join(k);
            match control_character(k) {
                Some(c) => Some((field, c)),
                None => find_control(v, &field),
            }
        }),
        _ => None,
    }
}

/// Parses a JSON body, naming the field serde stopped at. Text with a control character
/// is refused first, naming its field, whatever the body is for.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(Problem::bad_request("the request body is empty; send JSON"));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some((field, c)) = find_control(&value, "") {
            let field = if field.is_empty() { ".".into() } else { field };
            return Err(check_text(&field, &c.to_string()).unwrap_err());
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::bad_request(format!("the body is not valid JSON: {inner}"));
        }
        let message = inner.to_string();
        // "missing field `title`" is reported at the parent; name the field itself.
        let field = match message.split('`').nth(1) {
            Some(name) if message.starts_with("missing field") => {
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            }
            Some(name) if message.starts_with("unknown field") => {
                if path == "." {
                    name.to_string()
                } else {
                    path.clone()
                }
            }
            _ => path,
        };
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        Problem::invalid(field, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        title: String,
        inner: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn json_errors_name_the_field() {
        let p = parse_json::<Body>(br#"{"inner": {"n": 1}}"#).unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (422, Some("title")));
        let p = parse_json::<Body>(br#"{"title": "t", "inner": {"n": 300}}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("inner.n"));
        let p = parse_json::<Body>(br#"{"title": "t", "extra": 1}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("extra"));
        let p = parse_json::<Body>(br#"{"title": "#).unwrap_err();
        assert_eq!(p.status, 400);
        let p = parse_json::<Body>(b"").unwrap_err();
        assert_eq!(p.status, 400);
    }

    #[test]
    fn control_characters_are_named_by_their_field() {
        let p = parse_json::<serde_json::Value>(br#"{"a": {"b": ["ok", "x\u0000"]}}"#).unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (422, Some("a.b[1]")));
        assert!(p.detail.contains("U+0000"), "{}", p.detail);
        let p = parse_json::<serde_json::Value>(br#"{"k\u0007": 1}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("k\u{7}"));
        assert!(parse_json::<serde_json::Value>(br#"{"t": "a\tb\nc\r\nd"}"#).is_ok());
        assert_eq!(control_character("a\u{85}b"), Some('\u{85}'));
        assert_eq!(control_character("a\u{7f}"), Some('\u{7f}'));
        assert_eq!(control_character("防災 情報\n"), None);
    }
}
