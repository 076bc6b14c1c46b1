//! The disaster desk: the active alerts (disaster mode), the second-person confirmation
//! queue, a template in the official wording with its parameters and previews, an explicit
//! confirmation step before anything is sent, and the all-clear and correction. Live or
//! drill is chosen on purpose every time (no default), and a drill says so in words at
//! every step, never only by colour.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::context;
use serde::Deserialize;

use super::{channel_label, local_time, page, refused, status_label, Signed};
use crate::api::auth::Role;
use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/desk", get(desk))
        .route("/desk/new", get(new_form).post(new_alert))
        .route("/desk/{id}", get(follow_up_form))
        .route("/desk/{id}/confirm", post(confirm))
        .route("/desk/{id}/follow-up", post(follow_up))
}

/// `GET /desk` (disaster+): disaster mode and the live alerts, what waits for a second
/// person, the templates, and the latest disaster announcements and drills.
pub async fn desk(State(state): State<SharedState>, signed: Signed) -> Response {
    if let Err(r) = signed.require(Role::Disaster) {
        return r;
    }
    let lang = signed.lang;
    let now = crate::clock::now_ms();
    let active = crate::store::alerts::active(&state.db, now)
        .await
        .unwrap_or_default();
    let active: Vec<minijinja::Value> = active
        .iter()
        .map(|a| {
            context! {
                id => a.announcement_id, title => a.title, since => local_time(a.created_at, lang),
                by => a.created_by, confirmed_by => a.confirmed_by,
            }
        })
        .collect();
    let filter = |status: Option<&str>, priority: Option<&str>, limit: i64| {
        crate::store::announcements::ListFilter {
            status: status.map(str::to_string),
            priority: priority.map(str::to_string),
            limit,
            ..Default::default()
        }
    };
    let row = |a: &crate::store::announcements::AnnouncementRow| {
        context! {
            id => a.id, title => a.title, exercise => a.exercise, by => a.created_by,
            mine => a.created_by == signed.caller.name,
            at => local_time(a.created_at, lang), status => status_label(&a.status, lang),
        }
    };
    let waiting: Vec<minijinja::Value> = crate::store::announcements::list(
        &state.db,
        &filter(Some("awaiting_confirmation"), None, 50),
    )
    .await
    .unwrap_or_default()
    .iter()
    .map(row)
    .collect();
    let recent: Vec<minijinja::Value> =
        crate::store::announcements::list(&state.db, &filter(None, Some("disaster"), 20))
            .await
            .unwrap_or_default()
            .iter()
            .map(row)
            .collect();
    let templates: Vec<minijinja::Value> = state
        .templates
        .iter()
        .map(|t| context! { name => t.name, description => t.description, disaster => t.priority == noroshi_channel_core::Priority::Disaster })
        .collect();
    page(
        "desk.html",
        lang,
        context! {
            me => signed.header(), view => "desk", active => active, waiting => waiting,
            recent => recent, templates => templates,
            pause_channels => state.pause_channels.iter().map(|c| channel_label(c, lang)).collect::<Vec<_>>(),
            second_person => state.confirm_second_person,
        },
    )
}

#[derive(Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    template: String,
}

/// The alert form as sent.
#[derive(Default)]
struct AlertForm {
    csrf: String,
    template: String,
    /// `live` | `drill`; empty until chosen.
    mode: String,
    params: Vec<(String, String)>,
    channels: Vec<String>,
    action: String,
}

impl AlertForm {
    fn parse(body: &[u8]) -> AlertForm {
        let mut f = AlertForm::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = v,
                "template" => f.template = v,
                "mode" => f.mode = v,
                "channels" => f.channels.push(v),
                "action" => f.action = v,
                other => {
                    if let Some(p) = other.strip_prefix("param.") {
                        f.params.push((p.to_string(), v));
                    }
                }
            }
        }
        f
    }

    fn submission(&self) -> Result<crate::accept::Submission, serde_json::Error> {
        let params: serde_json::Map<String, serde_json::Value> = self
            .params
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.trim().to_string())))
            .collect();
        serde_json::from_value(serde_json::json!({
            "template": self.template,
            "params": params,
            "channels": self.channels,
            "exercise": self.mode == "drill",
        }))
    }
}

struct FormView<'a> {
    form: &'a AlertForm,
    previews: Vec<minijinja::Value>,
    error: Option<(String, String)>,
    /// The confirmation step: everything shown once more, with the one button that sends.
    review: bool,
}

fn alert_page(
    state: &SharedState,
    signed: &Signed,
    v: FormView<'_>,
    status: StatusCode,
) -> Response {
    let lang = signed.lang;
    let f = v.form;
    let Some(t) = state.templates.get(&f.template) else {
        return refused(
            lang,
            &crate::api::problem::Problem::not_found("template").field("template"),
        );
    };
    let params: Vec<minijinja::Value> = t
        .params
        .iter()
        .map(|(name, spec)| {
            let value = f
                .params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            context! { name => name, description => spec.description, example => spec.example, value => value }
        })
        .collect();
    let channels: Vec<minijinja::Value> = state
        .channels
        .iter()
        .map(|c| {
            let name = c.name().to_string();
            let checked = f.channels.is_empty() || f.channels.contains(&name);
            context! { name => name.clone(), label => channel_label(&name, lang), checked => checked }
        })
        .collect();
    let chosen: Vec<String> = state
        .channels
        .iter()
        .map(|c| c.name().to_string())
        .filter(|c| f.channels.is_empty() || f.channels.contains(c))
        .map(|c| channel_label(&c, lang))
        .collect();
    let (error_field, error) = v
        .error
        .map(|(f, m)| (Some(f), Some(m)))
        .unwrap_or((None, None));
    let mut r = page(
        "desk.html",
        lang,
        context! {
            me => signed.header(), view => if v.review { "review" } else { "new" },
            template => t.name, description => t.description, params => params,
            channels => channels, chosen => chosen, mode => f.mode,
            previews => v.previews, error => error, error_field => error_field,
            second_person => state.confirm_second_person,
        },
    );
    *r.status_mut() = status;
    r
}

/// `GET /desk/new?template=NAME`: the template's parameters, live or drill, the channels.
pub async fn new_form(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<NewQuery>,
) -> Response {
    if let Err(r) = signed.require(Role::Disaster) {
        return r;
    }
    let form = AlertForm {
        template: q.template,
        ..Default::default()
    };
    alert_page(
        &state,
        &signed,
        FormView {
            form: &form,
            previews: Vec::new(),
            error: None,
            review: false,
        },
        StatusCode::OK,
    )
}

/// `POST /desk/new`: `action=preview` shows what each channel receives; `action=review`
/// is the confirmation step; `action=send` (only from that step) sends.
pub async fn new_alert(
    State(state): State<SharedState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = signed.require(Role::Disaster) {
        return r;
    }
    let f = AlertForm::parse(&body);
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let lang = signed.lang;
    let view = |previews, error, review, status| {
        alert_page(
            &state,
            &signed,
            FormView {
                form: &f,
                previews,
                error,
                review,
            },
            status,
        )
    };
    if f.mode != "live" && f.mode != "drill" {
        return view(
            Vec::new(),
            Some((
                "mode".to_string(),
                lang.pick(
                    "「実際の発信」か「訓練」かを選んでください。",
                    "Choose whether this is a live alert or a drill.",
                )
                .to_string(),
            )),
            false,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let submission = match f.submission() {
        Ok(s) => s,
        Err(e) => {
            return view(
                Vec::new(),
                Some(("params".into(), e.to_string())),
                false,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    };
    let plan = match super::compose::preview_plan(&state, &signed, &submission) {
        Ok(p) => p,
        Err(e) => return view(Vec::new(), Some(e), false, StatusCode::UNPROCESSABLE_ENTITY),
    };
    let previews = super::compose::previews(&plan, lang);
    match f.action.as_str() {
        "review" => view(previews, None, true, StatusCode::OK),
        "send" => {
            match crate::api::announcements::accept_and_store(
                &state,
                &signed.caller,
                &submission,
                None,
                None,
                crate::api::announcements::DeskContext::default(),
            )
            .await
            {
                Ok(a) => {
                    signed.audit(&state, "/desk/new", 303);
                    Redirect::to(&format!("/announcements/{}", a.id)).into_response()
                }
                Err(p) => view(
                    Vec::new(),
                    Some((p.field.clone().unwrap_or_default(), p.detail)),
                    false,
                    StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                ),
            }
        }
        _ => view(previews, None, false, StatusCode::OK),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /desk/{id}/confirm`: the second person releases a live alert.
pub async fn confirm(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let result = crate::api::desk::confirm(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
    )
    .await;
    let then = format!("/announcements/{id}");
    super::act(
        &state,
        &signed,
        &format!("/desk/{id}/confirm"),
        result,
        &then,
    )
}

/// `GET /desk/{id}`: the all-clear and the correction of one alert.
pub async fn follow_up_form(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = signed.require(Role::Disaster) {
        return r;
    }
    follow_up_page(&state, &signed, &id, None, StatusCode::OK).await
}

async fn follow_up_page(
    state: &SharedState,
    signed: &Signed,
    id: &str,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let lang = signed.lang;
    let v = match crate::api::announcements::view_of(state, &signed.caller, id).await {
        Ok(axum::Json(v)) => v,
        Err(p) => return refused(lang, &p),
    };
    let alert = crate::store::alerts::get(&state.db, id)
        .await
        .ok()
        .flatten();
    let channels: Vec<String> = v
        .deliveries
        .iter()
        .map(|d| channel_label(&d.channel, lang))
        .collect();
    let (error_field, error) = error
        .map(|(f, m)| (Some(f), Some(m)))
        .unwrap_or((None, None));
    let mut r = page(
        "desk.html",
        lang,
        context! {
            me => signed.header(), view => "follow_up", id => id, title => v.title, body => v.body,
            exercise => v.exercise, status => status_label(&v.status, lang),
            ended => alert.as_ref().and_then(|a| a.ended_by.clone()),
            is_alert => alert.as_ref().is_some_and(|a| a.kind != "all_clear"),
            channels => channels, error => error, error_field => error_field,
        },
    );
    *r.status_mut() = status;
    r
}

#[derive(Deserialize)]
pub struct FollowUpForm {
    csrf: String,
    /// all_clear | correction
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    /// The box that says every channel receives it again.
    #[serde(default)]
    rebroadcast: String,
}

/// `POST /desk/{id}/follow-up`: the all-clear or a correction, to every channel the alert
/// went to, through the disaster lane.
pub async fn follow_up(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<FollowUpForm>,
) -> Response {
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let lang = signed.lang;
    if f.rebroadcast.is_empty() {
        return follow_up_page(
            &state,
            &signed,
            &id,
            Some((
                "rebroadcast".into(),
                lang.pick(
                    "解除・訂正は元の発信と同じすべてのチャンネルへ再び発信されます。確認欄にチェックを入れてください。",
                    "The all-clear or correction goes to every channel the alert went to. Tick the box to confirm.",
                )
                .into(),
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let optional = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let body = serde_json::json!({
        "kind": if f.kind == "correction" { "correction" } else { "all_clear" },
        "title": optional(&f.title),
        "body": optional(&f.body),
    });
    let result = crate::api::desk::all_clear(
        State(state.clone()),
        signed.caller.clone(),
        Path(id.clone()),
        HeaderMap::new(),
        axum::body::Bytes::from(body.to_string()),
    )
    .await;
    match result {
        Ok(r) => {
            // The follow-up's own page: its address is the API's Location.
            let then = r
                .headers()
                .get(axum::http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.strip_prefix("/api/v1"))
                .map(str::to_string)
                .unwrap_or_else(|| format!("/announcements/{id}"));
            signed.audit(&state, &format!("/desk/{id}/follow-up"), 303);
            Redirect::to(&then).into_response()
        }
        Err(p) if p.status == 422 => {
            follow_up_page(
                &state,
                &signed,
                &id,
                Some((p.field.clone().unwrap_or_else(|| "body".into()), p.detail)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(p) => refused(lang, &p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alert_form_reads_parameters_and_the_mode() {
        let f = AlertForm::parse(
            "csrf=c&template=evacuation_level4&mode=drill&param.area=%E4%BA%95%E4%B8%8A&param.time=&channels=line&action=review"
                .as_bytes(),
        );
        assert_eq!(f.params.len(), 2);
        let s = f.submission().unwrap();
        assert!(s.exercise);
        assert_eq!(s.template.as_deref(), Some("evacuation_level4"));
        // An empty parameter is left out, so the template names it as missing.
        assert_eq!(s.params.len(), 1);
        assert_eq!(s.params["area"], "井上");
        let live = AlertForm::parse(b"mode=live");
        assert!(!live.submission().unwrap().exercise);
    }
}

#[cfg(test)]
mod page_tests {
    use minijinja::context;

    #[test]
    fn the_desk_page_renders_with_templates() {
        let html = super::super::ENV.with(|env| {
            env.get_template("desk.html").unwrap().render(context! {
                lang => "ja", view => "desk", me => context! { user => "a", role => "b", role_level => 2, csrf => "c", path => "/desk" },
                active => Vec::<i32>::new(), waiting => Vec::<i32>::new(), recent => Vec::<i32>::new(),
                templates => vec![context! { name => "evacuation_level4", description => "警戒レベル4 避難指示", disaster => true }],
                pause_channels => vec!["LINE"], second_person => true,
            })
        });
        let html = html.unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            html.contains("/desk/new?template=evacuation_level4"),
            "{html}"
        );
    }
}
