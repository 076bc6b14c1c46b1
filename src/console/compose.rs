//! Compose once: title, body, link, images with their alternative text, tags, the
//! channels; each channel's exact text with its counter against the platform's limit (the
//! preview API's own plan); post now or at a time. With `[console] approval = "staff"` a
//! staff post waits in `awaiting_approval` for a second person (see [`approve`]).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::context;
use reqwest::StatusCode;

use super::{channel_label, page, Signed};
use crate::api::auth::Role;
use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/compose", get(compose_form).post(compose))
        .route("/announcements/{id}/approve", post(approve))
        .route("/announcements/{id}/return", post(return_to_author))
}

/// How many image rows the form offers.
const IMAGE_ROWS: usize = 4;

/// The compose form as sent (repeated fields read by hand: the form's shape is small).
#[derive(Default)]
pub struct Compose {
    csrf: String,
    title: String,
    body: String,
    link: String,
    tags: String,
    channels: Vec<String>,
    images: Vec<(String, String)>,
    /// `datetime-local` in the city's time; empty = now.
    scheduled_at: String,
    exercise: bool,
    action: String,
}

impl Compose {
    fn parse(body: &[u8]) -> Compose {
        let mut f = Compose::default();
        let mut urls = Vec::new();
        let mut alts = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = v,
                "title" => f.title = v,
                "body" => f.body = v,
                "link" => f.link = v,
                "tags" => f.tags = v,
                "channels" => f.channels.push(v),
                "image_url" => urls.push(v),
                "image_alt" => alts.push(v),
                "scheduled_at" => f.scheduled_at = v,
                "exercise" => f.exercise = !v.is_empty(),
                "action" => f.action = v,
                _ => {}
            }
        }
        f.images = urls
            .into_iter()
            .zip(alts.into_iter().chain(std::iter::repeat(String::new())))
            .collect();
        f
    }

    /// The submission the API would receive, or the field at fault. The console asks for
    /// every image's alternative text (the API leaves it optional).
    fn submission(&self, lang: super::Lang) -> Result<crate::accept::Submission, (String, String)> {
        if let Some(i) = self
            .images
            .iter()
            .position(|(u, a)| !u.trim().is_empty() && a.trim().is_empty())
        {
            return Err((
                format!("images[{i}].alt"),
                lang.pick(
                    "画像の内容を説明する代替テキストを入力してください（画面読み上げを使う方に伝えるためです）。",
                    "Describe the image in its alternative text (for people using screen readers).",
                )
                .to_string(),
            ));
        }
        let images: Vec<_> = self
            .images
            .iter()
            .filter(|(u, _)| !u.trim().is_empty())
            .map(|(u, a)| serde_json::json!({ "url": u.trim(), "alt": a.trim() }))
            .collect();
        let scheduled_at = if self.scheduled_at.trim().is_empty() {
            None
        } else {
            // The form's local time is the city's (Asia/Tokyo).
            let t = self.scheduled_at.trim();
            let t = if t.len() == 16 {
                format!("{t}:00")
            } else {
                t.to_string()
            };
            Some(format!("{t}+09:00"))
        };
        let tags: Vec<&str> = self
            .tags
            .split([',', '、', '，'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        serde_json::from_value(serde_json::json!({
            "title": self.title,
            "body": self.body,
            "link": if self.link.trim().is_empty() { None } else { Some(self.link.trim()) },
            "channels": self.channels,
            "images": images,
            "tags": tags,
            "scheduled_at": scheduled_at,
            "exercise": self.exercise,
        }))
        .map_err(|e| ("images".to_string(), e.to_string()))
    }
}

fn compose_page(
    state: &SharedState,
    signed: &Signed,
    f: &Compose,
    previews: Vec<minijinja::Value>,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let channels: Vec<minijinja::Value> = state
        .channels
        .iter()
        .map(|c| {
            let name = c.name().to_string();
            let checked = f.channels.is_empty() || f.channels.contains(&name);
            context! { name => name.clone(), label => channel_label(&name, signed.lang), checked => checked }
        })
        .collect();
    let mut images: Vec<minijinja::Value> = f
        .images
        .iter()
        .map(|(u, a)| context! { url => u, alt => a })
        .collect();
    while images.len() < IMAGE_ROWS {
        images.push(context! { url => "", alt => "" });
    }
    let (error_field, error) = error
        .map(|(f, m)| (Some(f), Some(m)))
        .unwrap_or((None, None));
    let mut r = page(
        "compose.html",
        signed.lang,
        context! {
            me => signed.header(),
            title => f.title, body => f.body, link => f.link, tags => f.tags,
            scheduled_at => f.scheduled_at, exercise => f.exercise,
            channels => channels, images => images,
            previews => previews, error => error, error_field => error_field,
            approval => state.approval_staff && signed.caller.role == Role::Staff,
        },
    );
    *r.status_mut() = status;
    r
}

/// `GET /compose`: one form for every channel (staff and above).
pub async fn compose_form(State(state): State<SharedState>, signed: Signed) -> Response {
    if let Err(r) = signed.require(Role::Staff) {
        return r;
    }
    compose_page(
        &state,
        &signed,
        &Compose::default(),
        Vec::new(),
        None,
        StatusCode::OK,
    )
}

/// `POST /compose`: the per-channel previews (`action=preview`), or the announcement sent
/// through the same acceptance as the API's, as the signed-in user.
pub async fn compose(
    State(state): State<SharedState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = signed.require(Role::Staff) {
        return r;
    }
    let f = Compose::parse(&body);
    if let Err(r) = signed.check_csrf(&f.csrf) {
        return r;
    }
    let unprocessable = |field: String, detail: String| {
        compose_page(
            &state,
            &signed,
            &f,
            Vec::new(),
            Some((field, detail)),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let submission = match f.submission(signed.lang) {
        Ok(s) => s,
        Err((field, detail)) => return unprocessable(field, detail),
    };
    let plan = match preview_plan(&state, &signed, &submission) {
        Ok(p) => p,
        Err((field, detail)) => return unprocessable(field, detail),
    };
    if f.action != "send" {
        let previews = previews(&plan, signed.lang);
        return compose_page(&state, &signed, &f, previews, None, StatusCode::OK);
    }
    let desk = crate::api::announcements::DeskContext {
        approval: state.approval_staff && signed.caller.role == Role::Staff,
        ..Default::default()
    };
    match crate::api::announcements::accept_and_store(
        &state,
        &signed.caller,
        &submission,
        None,
        None,
        desk,
    )
    .await
    {
        Ok(a) => {
            signed.audit(&state, "/compose", 303);
            Redirect::to(&format!("/announcements/{}", a.id)).into_response()
        }
        Err(p) => unprocessable(p.field.clone().unwrap_or_default(), p.detail),
    }
}

/// The plan the preview API would show for a submission (nothing stored), or the field at
/// fault and why.
pub(crate) fn preview_plan(
    state: &SharedState,
    signed: &Signed,
    submission: &crate::accept::Submission,
) -> Result<crate::accept::Plan, (String, String)> {
    let ctx = crate::api::announcements::context(state, signed.caller.role);
    crate::accept::plan(
        submission,
        &ctx,
        "preview".into(),
        &signed.caller.name,
        None,
        None,
        crate::clock::now(),
    )
    .map_err(|r| {
        let p = crate::api::problem::Problem::from(r);
        (p.field.clone().unwrap_or_default(), p.detail)
    })
}

/// Each channel's exact text, with its counter against the platform's limit.
pub(crate) fn previews(plan: &crate::accept::Plan, lang: super::Lang) -> Vec<minijinja::Value> {
    plan.channels
        .iter()
        .map(|c| {
            let over = c.preview.limit.is_some_and(|l| c.preview.length > l);
            context! {
                channel => c.channel.clone(), label => channel_label(&c.channel, lang),
                text => c.preview.text.clone(), length => c.preview.length, limit => c.preview.limit,
                rule => c.preview.length_rule.clone(), warnings => c.preview.warnings.clone(),
                over => over,
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
pub struct Review {
    csrf: String,
    #[serde(default)]
    comment: String,
}

/// `POST /announcements/{id}/approve`: a second person (staff or above, not the author)
/// releases a post waiting for approval.
pub async fn approve(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<Review>,
) -> Response {
    if let Err(r) = signed.require(Role::Staff).and(signed.check_csrf(&f.csrf)) {
        return r;
    }
    let result = review(&state, &signed, &id, None).await;
    let then = format!("/announcements/{id}");
    super::act(&state, &signed, &format!("{then}/approve"), result, &then)
}

/// `POST /announcements/{id}/return`: the approver sends it back with a comment; nothing
/// goes out, and the author sees the comment on the announcement's page.
pub async fn return_to_author(
    State(state): State<SharedState>,
    signed: Signed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<Review>,
) -> Response {
    if let Err(r) = signed.require(Role::Staff).and(signed.check_csrf(&f.csrf)) {
        return r;
    }
    if f.comment.trim().is_empty() {
        return super::refused(
            signed.lang,
            &crate::api::problem::Problem::invalid(
                "comment",
                signed.lang.pick(
                    "差し戻しの理由を入力してください。",
                    "Say why it is returned.",
                ),
            ),
        );
    }
    let result = review(&state, &signed, &id, Some(f.comment.trim())).await;
    let then = format!("/announcements/{id}");
    super::act(&state, &signed, &format!("{then}/return"), result, &then)
}

async fn review(
    state: &SharedState,
    signed: &Signed,
    id: &str,
    returned_with: Option<&str>,
) -> Result<(), crate::api::problem::Problem> {
    use crate::api::problem::Problem;
    use crate::store::announcements::Reviewed;
    let lang = signed.lang;
    match crate::store::announcements::review(&state.db, id, &signed.caller.name, returned_with)
        .await?
    {
        Reviewed::NotFound => Err(Problem::not_found("announcement")),
        Reviewed::NotWaiting(status) => Err(Problem::conflict(format!(
            "{} ({})",
            lang.pick(
                "このお知らせは承認待ちではありません",
                "This announcement is not waiting for approval"
            ),
            super::status_label(&status, lang)
        ))),
        Reviewed::OwnAnnouncement => Err(Problem::forbidden(lang.pick(
            "自分が作成したお知らせは承認できません。別の担当者に承認を依頼してください。",
            "You wrote this announcement; another person must approve it.",
        ))),
        Reviewed::Released(_) => {
            if returned_with.is_none() {
                for (channel, _) in
                    crate::store::announcements::channel_plans(&state.db, id).await?
                {
                    state
                        .dispatcher
                        .wake(&channel, noroshi_channel_core::Priority::Normal);
                }
            }
            Ok(())
        }
    }
}
