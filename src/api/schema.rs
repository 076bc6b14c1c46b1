//! The OpenAPI document's conventions, in one place: the enumerations the query parameters
//! take (from the same lists the handlers check), and the answers every API operation can
//! give (problem+json for errors, `401`, `429`, `503`, and `408`/`413` where a body is sent).

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, OpenApi, RefOr, Response, ResponseBuilder, Schema};

use crate::status::{AnnouncementStatus, ChannelState, DeliveryStatus};

/// The outcomes a delivery attempt is recorded with.
pub const OUTCOMES: &[&str] = &[
    "sent",
    "already_sent",
    "reconciled",
    "transient",
    "uncertain",
    "rate_limited",
    "quota",
    "auth",
    "permanent",
    "retry_key_expired",
    "internal",
    "cancelled",
];

pub const PRIORITIES: &[&str] = &["normal", "urgent", "disaster"];
pub const SUBSCRIBER_STATUSES: &[&str] = &["active", "unsubscribed"];

fn string_enum<'a>(description: &str, values: impl IntoIterator<Item = &'a str>) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .enum_values(Some(values))
            .build(),
    )
}

pub fn announcement_status() -> Schema {
    string_enum(
        "An announcement's state: (awaiting_approval | awaiting_confirmation →) scheduled → queued → sending → sent | partially_failed | failed; or cancelled.",
        AnnouncementStatus::ALL.iter().map(|s| s.as_str()),
    )
}
pub fn delivery_status() -> Schema {
    string_enum(
        "A delivery's state: pending → in_flight → sent | retrying | failed; or cancelled.",
        DeliveryStatus::ALL.iter().map(|s| s.as_str()),
    )
}
pub fn channel_state() -> Schema {
    string_enum(
        "ok | degraded (working, with a reason) | paused (credentials refused; an operator resumes it).",
        ChannelState::ALL.iter().map(|s| s.as_str()),
    )
}
pub fn priority() -> Schema {
    string_enum(
        "normal | urgent | disaster (the disaster lane; sending one needs the disaster or admin role).",
        PRIORITIES.iter().copied(),
    )
}
pub fn outcome() -> Schema {
    string_enum("What one attempt came to.", OUTCOMES.iter().copied())
}
pub fn subscriber_status() -> Schema {
    string_enum("A subscriber's state.", SUBSCRIBER_STATUSES.iter().copied())
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Applies the conventions to every operation of the document.
pub struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/api/v1/");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                problems_as_problem_json(op);
                if api && op.security.is_some() {
                    common_answers(op);
                }
            }
        }
    }
}

/// Error answers carry `application/problem+json`, not `application/json`.
fn problems_as_problem_json(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_problem = response.content.get("application/json").is_some_and(
            |c| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")),
        );
        if is_problem {
            if let Some(content) = response.content.shift_remove("application/json") {
                response.content.insert(PROBLEM_JSON.to_string(), content);
            }
        }
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Problem",
            )))),
        )
        .build()
}

/// What any API operation may answer besides its own outcomes.
fn common_answers(op: &mut Operation) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(problem(description)));
    };
    add(
        "400",
        "The path or query holds a control character (such as %00)",
    );
    add("401", "No valid bearer token (`WWW-Authenticate: Bearer`)");
    add(
        "403",
        "The token's role is below what this operation needs (see Role above)",
    );
    add(
        "429",
        "This token (or, without one, this address) used its share of `server.api_per_minute`; `Retry-After` says when to try again; nothing was done",
    );
    add(
        "503",
        "Storage is full or unavailable (`storage-full`, `storage-unavailable`); nothing was stored; `Retry-After` says when to try again",
    );
    if op.request_body.is_some() {
        add(
            "408",
            "The request was not received within `server.request_timeout_secs`; nothing was stored",
        );
        add(
            "413",
            "The body is larger than `server.body_limit_bytes`; nothing was stored",
        );
    }
}
