//! The API reference page: `/api/v1/docs`, drawn on the server from the same OpenAPI
//! document that `/api/v1/openapi.json` serves. No script, no CDN: HTML and one stylesheet
//! from the daemon, under the same content security policy as every other page.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::problem::Problem;

#[derive(Serialize)]
struct TagView {
    name: String,
    description: String,
    operations: Vec<OperationView>,
}

#[derive(Serialize)]
struct OperationView {
    id: String,
    method: String,
    path: String,
    summary: String,
    description: String,
    token: bool,
    parameters: Vec<ParameterView>,
    body: Vec<ContentView>,
    responses: Vec<ResponseView>,
}

#[derive(Serialize)]
struct ParameterView {
    name: String,
    location: String,
    required: bool,
    schema: String,
    description: String,
}

#[derive(Serialize)]
struct ContentView {
    media_type: String,
    /// A component's name when the schema is a reference to one.
    schema_ref: Option<String>,
    /// Otherwise the schema itself, as JSON.
    schema: Option<String>,
    example: Option<String>,
}

#[derive(Serialize)]
struct ResponseView {
    status: String,
    description: String,
    content: Vec<ContentView>,
}

#[derive(Serialize)]
struct SchemaView {
    name: String,
    json: String,
}

const TEMPLATE: &str = include_str!("reference/page.html");
const STYLE: &str = include_str!("reference/style.css");

/// The API reference, drawn from this daemon's OpenAPI document. No token needed.
#[utoipa::path(get, path = "/api/v1/docs", operation_id = "showApiReference", tag = "reference",
    responses((status = 200, description = "The reference page (HTML)", content_type = "text/html")))]
pub async fn page() -> Result<Html<String>, Problem> {
    let doc = serde_json::to_value(super::document()).map_err(Problem::internal)?;
    render(&doc).map(Html).map_err(Problem::internal)
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A schema in a line: `Submission`, `string (date-time)`, `integer, 1–200, default 50`,
/// `one of: sent, failed`.
fn schema_line(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    let ty = match s.get("type") {
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        Some(Value::String(t)) => t.clone(),
        _ => "any".into(),
    };
    let mut parts = vec![match s.get("format").and_then(Value::as_str) {
        Some(f) => format!("{ty} ({f})"),
        None => ty,
    }];
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        parts.push(format!("one of: {}", values.join(", ")));
    }
    match (s.get("minimum"), s.get("maximum")) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo}–{hi}")),
        (Some(lo), None) => parts.push(format!("≥ {lo}")),
        _ => {}
    }
    if let Some(d) = s.get("default") {
        parts.push(format!("default {d}"));
    }
    parts.join(", ")
}

fn contents(v: Option<&Value>) -> Vec<ContentView> {
    let Some(Value::Object(map)) = v else {
        return Vec::new();
    };
    map.iter()
        .map(|(media_type, c)| {
            let schema = c.get("schema");
            ContentView {
                media_type: media_type.clone(),
                schema_ref: schema
                    .and_then(|s| s.get("$ref"))
                    .and_then(Value::as_str)
                    .map(|r| r.rsplit('/').next().unwrap_or(r).to_string()),
                schema: schema.filter(|s| s.get("$ref").is_none()).map(schema_line),
                example: c.get("example").map(pretty),
            }
        })
        .collect()
}

fn render(doc: &Value) -> Result<String, minijinja::Error> {
    let mut tags: Vec<TagView> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| TagView {
            name: text(t, "name"),
            description: text(t, "description"),
            operations: Vec::new(),
        })
        .collect();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                let view = OperationView {
                    id: text(op, "operationId"),
                    method: method.to_uppercase(),
                    path: path.clone(),
                    summary: text(op, "summary"),
                    description: text(op, "description"),
                    token: op.get("security").is_some(),
                    parameters: op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| ParameterView {
                            name: text(p, "name"),
                            location: text(p, "in"),
                            required: p["required"].as_bool().unwrap_or(false),
                            schema: p.get("schema").map(schema_line).unwrap_or_default(),
                            description: text(p, "description"),
                        })
                        .collect(),
                    body: contents(op.pointer("/requestBody/content")),
                    responses: op["responses"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(status, r)| ResponseView {
                            status: status.clone(),
                            description: text(r, "description"),
                            content: contents(r.get("content")),
                        })
                        .collect(),
                };
                match tags.iter_mut().find(|t| t.name == tag) {
                    Some(t) => t.operations.push(view),
                    None => tags.push(TagView {
                        name: tag,
                        description: String::new(),
                        operations: vec![view],
                    }),
                }
            }
        }
    }
    let schemas: Vec<SchemaView> = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, s)| SchemaView {
            name: name.clone(),
            json: pretty(s),
        })
        .collect();
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    // As the website's pages: `& < > " '` escaped, `/` left readable in paths.
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(s) if state.auto_escape() == minijinja::AutoEscape::Html && !value.is_safe() => {
            out.write_str(&noroshi_channel_core::text::escape_html(s))?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    env.add_template("page.html", TEMPLATE)?;
    env.get_template("page.html")?.render(minijinja::context! {
        title => text(&doc["info"], "title"),
        version => text(&doc["info"], "version"),
        description => text(&doc["info"], "description"),
        openapi => text(doc, "openapi"),
        tags => tags.into_iter().filter(|t| !t.operations.is_empty()).collect::<Vec<_>>(),
        schemas => schemas,
    })
}
