//! Subscriber routes: create, list, delete, CSV import; the unsubscribe page and the
//! RFC 8058 one-click POST.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Role};
use super::problem::{parse_json, ApiResult, Problem};
use super::SharedState;
use crate::store::subscribers::{self as store, NewSubscriber, Subscriber};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriberBody {
    pub email: String,
    /// Language of the mails they get (default `ja`).
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
}

fn check(
    field_prefix: &str,
    email: &str,
    lang: &str,
    topics: &[String],
) -> ApiResult<NewSubscriber> {
    super::problem::check_text(&format!("{field_prefix}email"), email)?;
    super::problem::check_text(&format!("{field_prefix}lang"), lang)?;
    let email = email.trim();
    noroshi_email::validate_address(email)
        .map_err(|e| Problem::invalid(format!("{field_prefix}email"), e))?;
    crate::accept::check_lang(&format!("{field_prefix}lang"), lang)?;
    for (i, t) in topics.iter().enumerate() {
        super::problem::check_text(&format!("{field_prefix}topics[{i}]"), t)?;
        if t.trim().is_empty() || t.chars().count() > 64 {
            return Err(Problem::invalid(
                format!("{field_prefix}topics[{i}]"),
                "must be 1 to 64 characters",
            ));
        }
    }
    Ok(NewSubscriber {
        email: email.to_string(),
        lang: lang.to_string(),
        topics: topics.to_vec(),
    })
}

/// Add one email subscriber (admin).
///
/// Role: admin.
#[utoipa::path(post, path = "/api/v1/subscribers", operation_id = "createSubscriber", tag = "subscribers", request_body = NewSubscriberBody,
    responses((status = 201, body = Subscriber), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let b: NewSubscriberBody = parse_json(&body)?;
    let new = check("", &b.email, b.lang.as_deref().unwrap_or("ja"), &b.topics)?;
    match store::create(&state.db, &new).await {
        Ok(s) => Ok((StatusCode::CREATED, Json(s)).into_response()),
        Err(e) if e.is_unique_violation() => {
            Err(Problem::conflict("email: this address is already subscribed").field("email"))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubscriberQuery {
    /// Only subscribers in this state.
    #[param(schema_with = super::schema::subscriber_status)]
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SubscriberPage {
    pub items: Vec<Subscriber>,
    pub next_cursor: Option<i64>,
    /// Active subscribers in all.
    pub active: i64,
}

/// List subscribers by id, cursor-paged (admin).
///
/// Role: admin.
#[utoipa::path(get, path = "/api/v1/subscribers", operation_id = "listSubscribers", tag = "subscribers", params(SubscriberQuery),
    responses((status = 200, body = SubscriberPage)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    query: Result<Query<SubscriberQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SubscriberPage>> {
    caller.require(Role::Admin)?;
    let Query(q) = query.map_err(|e| Problem::invalid("query", e.body_text()))?;
    if let Some(s) = &q.status {
        if s != "active" && s != "unsubscribed" {
            return Err(Problem::invalid("status", "must be active or unsubscribed"));
        }
    }
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => return Err(Problem::invalid("limit", "must be between 1 and 1000")),
    };
    let items = store::list(&state.db, q.status.as_deref(), q.cursor.unwrap_or(0), limit).await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|s| s.id)
    } else {
        None
    };
    let active = store::count_active(&state.db).await?;
    Ok(Json(SubscriberPage {
        items,
        next_cursor,
        active,
    }))
}

/// Remove a subscriber and their address for good (admin).
///
/// Role: admin.
#[utoipa::path(delete, path = "/api/v1/subscribers/{id}", operation_id = "deleteSubscriber", tag = "subscribers", params(("id" = i64, Path, description = "The subscriber's id")),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let id: i64 = id
        .parse()
        .map_err(|_| Problem::invalid("id", "must be a subscriber id (a number)"))?;
    if store::delete(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("subscriber"))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub created: u64,
    /// Addresses already subscribed, left as they were.
    pub existing: u64,
}

/// Bulk import from `text/csv` with the header row `email,lang,topics` (topics separated by
/// `;`). All rows are checked first; one bad row refuses the whole file, naming its line.
///
/// Role: admin.
#[utoipa::path(post, path = "/api/v1/subscribers/import", operation_id = "importSubscribers", tag = "subscribers", request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportResult), (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ImportResult>> {
    caller.require(Role::Admin)?;
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("text/csv") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be text/csv",
        )
        .field("Content-Type"));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::invalid("body", "the CSV must be UTF-8"))?;
    let rows = parse_csv(text)?;
    let (created, existing) = store::import(&state.db, &rows).await?;
    tracing::info!(created, existing, "Subscribers imported");
    Ok(Json(ImportResult { created, existing }))
}

/// The rows an import stores: every row checked, the first refusal refuses the file.
fn parse_csv(text: &str) -> ApiResult<Vec<NewSubscriber>> {
    check_csv(text)?
        .rows
        .into_iter()
        .map(|r| r.checked)
        .collect()
}

/// An import file checked row by row, nothing stored ([`check_csv`]).
pub struct CsvCheck {
    /// The header row as written.
    pub header: String,
    pub rows: Vec<CsvRow>,
}

/// One data row of an import file and what the import makes of it.
pub struct CsvRow {
    /// Its line in the file (the header is line 1).
    pub line: usize,
    /// The row as written.
    pub text: String,
    /// The subscriber it adds, or why it is refused (the field is `line N: email`).
    pub checked: ApiResult<NewSubscriber>,
}

/// Checks an import file by the import's own rules without storing anything: the import
/// uses it, and so does the console's preview of errors. A small CSV reader for a
/// three-column file (quoted fields with doubled quotes are understood; that is all a
/// subscriber list needs). `Err` only when the file as a whole is unusable (empty, no
/// header row).
pub fn check_csv(text: &str) -> ApiResult<CsvCheck> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // Excel writes a BOM
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header_line) = lines
        .next()
        .ok_or_else(|| Problem::invalid("body", "the CSV is empty"))?;
    let header: Vec<String> = split_csv_line(header_line)
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if header.first().map(String::as_str) != Some("email") {
        return Err(Problem::invalid(
            "line 1",
            "the header row must be `email,lang,topics`",
        ));
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let (lang_col, topics_col) = (col("lang"), col("topics"));
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines {
        let fields = split_csv_line(line);
        let prefix = format!("line {}: ", i + 1);
        let email = fields.first().map(|s| s.trim()).unwrap_or("");
        let lang = lang_col
            .and_then(|c| fields.get(c))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .unwrap_or("ja");
        let topics: Vec<String> = topics_col
            .and_then(|c| fields.get(c))
            .map(|s| {
                s.split(';')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let checked = check(&prefix, email, lang, &topics).and_then(|new| {
            if seen.insert(new.email.to_lowercase()) {
                Ok(new)
            } else {
                Err(Problem::invalid(
                    format!("{prefix}email"),
                    "this address appears twice in the file",
                ))
            }
        });
        rows.push(CsvRow {
            line: i + 1,
            text: line.to_string(),
            checked,
        });
    }
    Ok(CsvCheck {
        header: header_line.to_string(),
        rows,
    })
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The subscriber's unsubscribe token from the mail.
    pub t: Option<String>,
}

fn page(title: &str, message: &str, form: Option<&str>) -> Html<String> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let form = form
        .map(|t| format!(
            "<form method=\"post\" action=\"/unsubscribe?t={}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">配信を停止する (Unsubscribe)</button></form>", esc(t)))
        .unwrap_or_default();
    Html(format!(
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title></head><body><main><h1>{t}</h1><p>{m}</p>{form}</main></body></html>",
        t = esc(title), m = esc(message)
    ))
}

/// The page every unsubscribe answer is, with its status.
fn answer(status: StatusCode, message: &str, form_token: Option<&str>) -> Response {
    (status, page("配信停止", message, form_token)).into_response()
}

const BAD_LINK: &str = "リンクが正しくありません。The link is not valid.";
const UNKNOWN_TOKEN: &str = "このリンクは無効です。This link is no longer valid.";
const DONE: &str = "配信を停止しました。You are unsubscribed.";
const TOO_MANY: &str =
    "しばらくしてからもう一度お試しください。Too many requests; please try again in a minute.";

/// The confirmation page. It changes nothing: mail scanners prefetch links.
#[utoipa::path(get, path = "/unsubscribe", operation_id = "showUnsubscribePage", tag = "public", params(TokenQuery), responses(
    (status = 200, description = "The confirmation page (Japanese and English), with a one-click button", body = String, content_type = "text/html"),
    (status = 400, description = "The link has no token", body = String, content_type = "text/html"),
    (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
    (status = 429, description = "Too many from this address (`server.site_per_minute`); see Retry-After", body = Problem)))]
pub async fn unsubscribe_page(
    State(state): State<SharedState>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    let Some(t) = q.t.filter(|t| !t.is_empty()) else {
        return Ok(answer(StatusCode::BAD_REQUEST, BAD_LINK, None));
    };
    Ok(match store::by_token(&state.db, &t).await? {
        None => answer(StatusCode::NOT_FOUND, UNKNOWN_TOKEN, None),
        Some((_, status)) if status == "unsubscribed" => answer(StatusCode::OK, DONE, None),
        Some(_) => answer(
            StatusCode::OK,
            "お知らせメールの配信を停止しますか。Stop receiving these mails?",
            Some(&t),
        ),
    })
}

/// RFC 8058 one-click: unsubscribes, answers 200 (never a redirect), idempotent.
#[utoipa::path(post, path = "/unsubscribe", operation_id = "unsubscribe", tag = "public", params(TokenQuery), responses(
    (status = 200, description = "Unsubscribed (also when already unsubscribed)", body = String, content_type = "text/html"),
    (status = 400, description = "The link has no token", body = String, content_type = "text/html"),
    (status = 404, description = "Unknown token", body = String, content_type = "text/html"),
    (status = 429, description = "Too many from this address (`server.unsubscribe_per_minute`, `server.site_per_minute`); see Retry-After", body = String, content_type = "text/html")))]
pub async fn unsubscribe_post(
    State(state): State<SharedState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    // Unauthenticated and writing: a client may not flood the database's write turns.
    let client = super::client_address(peer.ip(), &headers, &state.trusted_proxies);
    if let Err(wait) = state.limits.unsubscribe.check(&client) {
        let mut r = answer(StatusCode::TOO_MANY_REQUESTS, TOO_MANY, None);
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, wait.into());
        return Ok(r);
    }
    let Some(t) = q.t.filter(|t| !t.is_empty()) else {
        return Ok(answer(StatusCode::BAD_REQUEST, BAD_LINK, None));
    };
    if store::unsubscribe(&state.db, &t).await? {
        tracing::info!("A subscriber unsubscribed");
        Ok(answer(StatusCode::OK, DONE, None))
    } else {
        Ok(answer(StatusCode::NOT_FOUND, UNKNOWN_TOKEN, None))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_with_quotes() {
        assert_eq!(
            super::split_csv_line(r#"a@b.jp,ja,"x;y""#),
            vec!["a@b.jp", "ja", "x;y"]
        );
        assert_eq!(
            super::split_csv_line(r#""say ""hi""",b"#),
            vec![r#"say "hi""#, "b"]
        );
    }

    #[test]
    fn a_check_names_every_bad_row_and_the_import_refuses_on_the_first() {
        let csv = "\u{feff}email,lang,topics\r\na@example.jp,ja,\r\nnot-an-address,ja,\r\n\r\nA@example.jp,en,\r\nb@example.jp,ja,x;y\r\n";
        let c = super::check_csv(csv).unwrap();
        assert_eq!(c.header, "email,lang,topics");
        let lines: Vec<(usize, bool)> =
            c.rows.iter().map(|r| (r.line, r.checked.is_ok())).collect();
        assert_eq!(lines, vec![(2, true), (3, false), (5, false), (6, true)]);
        let bad = c.rows[1].checked.as_ref().unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("line 3: email"));
        let twice = c.rows[2].checked.as_ref().unwrap_err();
        assert!(twice.detail.contains("appears twice"), "{}", twice.detail);
        assert_eq!(c.rows[3].checked.as_ref().unwrap().topics, vec!["x", "y"]);
        let refused = super::parse_csv(csv).unwrap_err();
        assert_eq!(refused.field.as_deref(), Some("line 3: email"));
        assert!(super::check_csv("").is_err());
        assert!(super::check_csv("lang,email\n").is_err());
    }
}
