//! The announcements: the list with filters, one announcement with its state on every
//! channel (refreshed live by `console.js` from `/announcements/{id}/status`), retry of
//! failed deliveries, cancel of what has not gone yet, the approval step's buttons, and the
//! delivery log with its CSV export. Reads and actions go through the API's own handlers.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minijinja::context;
use serde::Deserialize;

use super::{channel_label, local_rfc3339, page, refused, status_label, Signed};
use crate::api::announcements as api;
use crate::api::auth::Role;
use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/announcements", get(list))
        .route("/announcements/{id}", get(detail))
        .route("/announcements/{id}/status", get(status))
        .route("/announcements/{id}/cancel", post(cancel))
        .route("/announcements/{id}/retry", post(retry))
        .route("/announcements/{id}/deliveries.csv", get(deliveries_csv))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

fn priority_label(p: &str, lang: super::Lang) -> &'static str {
    match p {
        "disaster" => lang.pick("災害", "disaster"),
        "urgent" => lang.pick("緊急", "urgent"),
        _ => lang.pick("通常", "normal"),
    }
}

/// `GET /announcements`: fifty at a time, newest first, filtered by state, channel and
/// priority; drills marked as drills in words.
pub async fn list(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<ListQuery>,
) -> Response {
    let lang = signed.lang;
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let query = api::ListQuery {
        status: nonempty(q.status.clone()),
        channel: nonempty(q.channel.clone()),
        priority: nonempty(q.priority.clone()),
        since: None,
        until: None,
        cursor: nonempty(q.cursor.clone()),
        limit: Some(50),
    };
    let found = match api::list(
        State(state.clone()),
        signed.caller.clone(),
        Ok(Query(query)),
    )
    .await
    {
        Ok(Json(p)) => p,
        Err(p) => return refused(lang, &p),
    };
    let items: Vec<minijinja::Value> = found
        .items
        .iter()
        .map(|a| {
            context! {
                id => a.id, title => a.title, exercise => a.exercise,
                priority => priority_label(&a.priority, lang), disaster => a.priority == "disaster",
                status => status_label(&a.status, lang),
                created_at => local_rfc3339(&a.created_at, lang),
                channels => a.deliveries.iter().map(|d| format!("{}：{}", channel_label(&d.channel, lang), status_label(&d.status, lang))).collect::<Vec<_>>(),
            }
        })
        .collect();
    let statuses: Vec<minijinja::Value> = crate::status::AnnouncementStatus::ALL
        .iter()
        .map(|st| context! { value => st.as_str(), label => status_label(st.as_str(), lang) })
        .collect();
    let channels: Vec<minijinja::Value> = state
        .known_channels
        .iter()
        .map(|c| context! { value => c, label => channel_label(c, lang) })
        .collect();
    let priorities: Vec<minijinja::Value> = ["normal", "urgent", "disaster"]
        .iter()
        .map(|p| context! { value => p, label => priority_label(p, lang) })
        .collect();
    let next = found.next_cursor.map(|c| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &q.status),
            ("channel", &q.channel),
            ("priority", &q.priority),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                u.append_pair(k, v);
            }
        }
        u.append_pair("cursor", &c);
        format!("/announcements?{}", u.finish())
    });
    page(
        "announcements.html",
        lang,
        context! {
            me => signed.header(), items => items, statuses => statuses, channels => channels,
            priorities => priorities, status => q.status.unwrap_or_default(),
            channel => q.channel.unwrap_or_default(), priority => q.priority.unwrap_or_default(),
            next => next,
        },
    )
}

/// `GET /announcements/{id}`: its state on every channel, what can be done with it, and
/// its delivery log.
pub async fn detail(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let lang = signed.lang;
    let v = match api::view_of(&state, &signed.caller, &id).await {
        Ok(Json(v)) => v,
        Err(p) => return refused(lang, &p),
    };
    let review = crate::store::announcements::review_of(&state.db, &id)
        .await
        .ok()
        .flatten();
    let attempts = crate::store::announcements::attempts(
        &state.db,
        &crate::store::announcements::AttemptFilter {
            announcement_id: Some(id.clone()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_default();
    let attempts: Vec<minijinja::Value> = attempts
        .iter()
        .map(|a| {
            context! {
                channel => channel_label(&a.channel, lang), attempt => a.attempt, outcome => a.outcome,
                status_code => a.status_code, error => a.error.clone().unwrap_or_default(),
                at => local_rfc3339(&a.started_at, lang),
            }
        })
        .collect();
    let failed = v.deliveries.iter().any(|d| d.failed > 0);
    let open = v
        .deliveries
        .iter()
        .any(|d| matches!(d.status.as_str(), "pending" | "retrying"));
    let returned = review.as_ref().and_then(|r| r.note.clone());
    let status_text = if returned.is_some() {
        status_label("returned", lang)
    } else {
        status_label(&v.status, lang)
    };
    let mine = v.created_by == signed.caller.name;
    page(
        "announcement.html",
        lang,
        context! {
            me => signed.header(), id => v.id, title => v.title, body => v.body, link => v.link,
            status => v.status, status_label => status_text,
            priority => priority_label(&v.priority, lang), disaster => v.priority == "disaster",
            created_by => v.created_by, created_at => local_rfc3339(&v.created_at, lang),
            scheduled_at => v.scheduled_at.as_deref().map(|t| local_rfc3339(t, lang)),
            exercise => v.exercise, tags => v.tags,
            deliveries => deliveries(&v, lang),
            attempts => attempts,
            can_retry => failed && signed.caller.role >= Role::Admin,
            can_cancel => open && v.status != "cancelled" && signed.caller.role >= Role::Staff
                && (v.priority != "disaster" || signed.caller.role >= Role::Disaster),
            can_review => v.status == "awaiting_approval" && !mine && signed.caller.role >= Role::Staff,
            can_confirm => v.status == "awaiting_confirmation" && !mine && signed.caller.role >= Role::Disaster,
            waiting_own => (v.status == "awaiting_approval" || v.status == "awaiting_confirmation") && mine,
            returned => returned, reviewed_by => review.and_then(|r| r.by),
        },
    )
}

fn deliveries(v: &api::AnnouncementView, lang: super::Lang) -> Vec<minijinja::Value> {
    v.deliveries
        .iter()
        .map(|d| {
            context! {
                channel => d.channel, label => channel_label(&d.channel, lang),
                status => d.status, status_label => status_label(&d.status, lang),
                sent => d.sent, total => d.total, failed => d.failed,
                last_error => d.last_error.clone().unwrap_or_default(),
            }
        })
        .collect()
}

/// `GET /announcements/{id}/status`: the state on every channel, as JSON, for the live
/// status on the announcement's page (the words already in the user's language).
pub async fn status(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let lang = signed.lang;
    match api::view_of(&state, &signed.caller, &id).await {
        Ok(Json(v)) => {
            let rows: Vec<serde_json::Value> = v
                .deliveries
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "channel": d.channel, "status": d.status,
                        "status_label": status_label(&d.status, lang),
                        "sent": d.sent, "total": d.total,
                        "last_error": d.last_error.clone().unwrap_or_default(),
                    })
                })
                .collect();
            let mut r = Json(serde_json::json!({
                "status": v.status, "status_label": status_label(&v.status, lang), "channels": rows,
            }))
            .into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(p) => p.into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
    #[serde(default)]
    channel: Option<String>,
}

/// `POST /announcements/{id}/cancel`.
pub async fn cancel(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let result = api::cancel(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
    )
    .await;
    let then = format!("/announcements/{id}");
    super::act(&state, &signed, &format!("{then}/cancel"), result, &then)
}

/// `POST /announcements/{id}/retry` (admin): failed deliveries get another round.
pub async fn retry(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let query = api::RetryQuery {
        channel: f.channel.filter(|c| !c.is_empty()),
    };
    let result = api::retry(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
        Ok(Query(query)),
    )
    .await;
    let then = format!("/announcements/{id}");
    super::act(&state, &signed, &format!("{then}/retry"), result, &then)
}

/// `GET /announcements/{id}/deliveries.csv`: this announcement's delivery log, as the API
/// exports it.
pub async fn deliveries_csv(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
    let query = api::DeliveriesQuery {
        announcement_id: Some(id.clone()),
        channel: None,
        outcome: None,
        cursor: None,
        limit: Some(200),
    };
    match api::deliveries(
        State(state),
        signed.caller.clone(),
        headers,
        Ok(Query(query)),
    )
    .await
    {
        Ok(mut r) => {
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"deliveries-{id}.csv\""))
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            );
            r
        }
        Err(p) => refused(signed.lang, &p),
    }
}
