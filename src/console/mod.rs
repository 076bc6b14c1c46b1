//! The web console, in Japanese by default with English switchable: server-rendered pages
//! (minijinja) for PR staff, the disaster desk, campaign planners, managers and admins.
//!
//! One file per screen family: [`sign_in`] (sessions, CSRF, lock-out), [`compose`] (compose
//! once, the approval step), [`announcements`] (list, detail with live status, retry,
//! cancel, the delivery log), [`desk`] (the disaster desk), [`schedules`], [`channels`]
//! (channels and subscribers), [`reach`] (charts and KPIs), [`admin`] (people, API tokens,
//! the audit log). Every action goes through the API's own handler as the signed-in user
//! ([`act`]), so the console can do nothing the API would refuse, and is audited the same.
//!
//! Pages work without script; `console.js` (served by the daemon, no CDN) only adds live
//! status and live preview counters.

pub mod admin;
pub mod announcements;
pub mod channels;
pub mod compose;
pub mod desk;
pub mod reach;
pub mod schedules;
pub mod sign_in;

use axum::extract::FromRequestParts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use minijinja::context;

use crate::api::auth::{sha256, Caller, Role, Via};
use crate::api::problem::Problem;
use crate::api::SharedState;
use crate::store::people;

pub use sign_in::{hash_password, password_is_acceptable};

pub(crate) const SESSION_COOKIE: &str = "noroshi_session";
pub(crate) const SIGN_IN_COOKIE: &str = "noroshi_signin";
const LANG_COOKIE: &str = "noroshi_lang";
pub(crate) const IDLE_MS: i64 = 30 * 60_000;
pub(crate) const ABSOLUTE_MS: i64 = 12 * 3_600_000;

/// The content security policy of console pages: the website's, plus the console's own
/// script and its polling of the console's own routes. Nothing inline, nothing elsewhere.
pub const CONSOLE_CSP: &str = "default-src 'none'; img-src 'self' https:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Every route of the console.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/", get(home))
        .route("/console.css", get(stylesheet))
        .route("/console.js", get(script))
        .route("/language", axum::routing::post(language))
        .merge(sign_in::routes())
        .merge(compose::routes())
        .merge(announcements::routes())
        .merge(desk::routes())
        .merge(schedules::routes())
        .merge(channels::routes())
        .merge(reach::routes())
        .merge(admin::routes())
}

/// The console's languages. Japanese is the default; English is switched per browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }
    /// The text in this language, from a Japanese–English pair.
    pub fn pick<'a>(self, ja: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }
    fn of(headers: &HeaderMap) -> Lang {
        match cookie(headers, LANG_COOKIE).as_deref() {
            Some("en") => Lang::En,
            _ => Lang::Ja,
        }
    }
}

pub(crate) fn random_token() -> String {
    crate::api::auth::new_token()
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub(crate) fn set_cookie(
    state: &SharedState,
    name: &str,
    value: &str,
    max_age: Option<i64>,
) -> HeaderValue {
    let secure = if state.hsts { "; Secure" } else { "" };
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .expect("cookie values are URL-safe")
}

/// Every page template of the console, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("message.html", include_str!("templates/message.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("home.html", include_str!("templates/home.html")),
    ("compose.html", include_str!("templates/compose.html")),
    (
        "announcement.html",
        include_str!("templates/announcement.html"),
    ),
    (
        "announcements.html",
        include_str!("templates/announcements.html"),
    ),
    ("desk.html", include_str!("templates/desk.html")),
    ("schedules.html", include_str!("templates/schedules.html")),
    ("schedule.html", include_str!("templates/schedule.html")),
    ("channels.html", include_str!("templates/channels.html")),
    (
        "subscribers.html",
        include_str!("templates/subscribers.html"),
    ),
    ("reach.html", include_str!("templates/reach.html")),
    ("people.html", include_str!("templates/people.html")),
    ("tokens.html", include_str!("templates/tokens.html")),
    ("audit.html", include_str!("templates/audit.html")),
];

/// `tr("日本語", "English")` in a template: the text in the page's language.
fn tr(state: &minijinja::State, ja: String, en: String) -> String {
    match state.lookup("lang").as_ref().and_then(|v| v.as_str()) {
        Some("en") => en,
        _ => ja,
    }
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_function("tr", tr);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env
}

thread_local! {
    static ENV: minijinja::Environment<'static> = environment();
}

/// A page in the console's layout, in `lang`, with the console's security policy.
pub fn page(name: &str, lang: Lang, ctx: minijinja::Value) -> Response {
    let ctx = context! { lang => lang.code(), ..ctx };
    let rendered = ENV.with(|env| env.get_template(name).and_then(|t| t.render(ctx)));
    match rendered {
        Ok(html) => {
            let mut r = Html(html).into_response();
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONSOLE_CSP),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => Problem::internal(e).into_response(),
    }
}

/// A page that only says something (a refusal, an error), with `status`.
pub fn message(lang: Lang, status: StatusCode, title: &str, text: &str) -> Response {
    let mut r = page(
        "message.html",
        lang,
        context! { heading => title, text => text },
    );
    *r.status_mut() = status;
    r
}

pub(crate) fn csrf_refused(lang: Lang) -> Response {
    message(
        lang,
        StatusCode::FORBIDDEN,
        lang.pick("送信できませんでした", "Not sent"),
        lang.pick(
            "フォームの有効期限が切れたか、正しくない送信です。画面を読み込み直してから、もう一度操作してください。",
            "The form has expired or was not sent from this console. Reload the page and try again.",
        ),
    )
}

/// A signed-in console user: the session, the caller it acts as, and the page language.
/// A request without a live session is sent to the sign-in page.
pub struct Signed {
    pub session: people::Session,
    pub caller: Caller,
    pub lang: Lang,
    /// The page asked for (path and query), for the language switch's way back.
    pub path: String,
}

impl FromRequestParts<SharedState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SharedState,
    ) -> Result<Signed, Response> {
        let lang = Lang::of(&parts.headers);
        let Some(session) = session(state, &parts.headers).await else {
            return Err(Redirect::to("/sign-in").into_response());
        };
        let client = crate::api::auth::connect_ip(parts)
            .map(|peer| crate::api::client_address(peer, &parts.headers, &state.trusted_proxies));
        let caller = Caller {
            name: session.user.name.clone(),
            role: Role::parse(&session.user.role).unwrap_or(Role::Viewer),
            via: Via::Session,
            client,
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Signed {
            session,
            caller,
            lang,
            path,
        })
    }
}

impl Signed {
    /// Refuses a form without this session's CSRF token.
    pub fn check_csrf(&self, csrf: &str) -> Result<(), Response> {
        if csrf.is_empty() || csrf != self.session.csrf {
            return Err(csrf_refused(self.lang));
        }
        Ok(())
    }

    /// Refuses (403, in words) a user below `min`.
    pub fn require(&self, min: Role) -> Result<(), Response> {
        if self.caller.role >= min {
            return Ok(());
        }
        let needed = role_label(min.as_str(), self.lang);
        let text = match self.lang {
            Lang::Ja => format!("この画面・操作は「{needed}」以上の権限で使えます。管理者に権限の変更を依頼してください。"),
            Lang::En => format!("This needs the {needed} role or higher. Ask an administrator to change your role."),
        };
        Err(message(
            self.lang,
            StatusCode::FORBIDDEN,
            self.lang.pick("権限がありません", "Not permitted"),
            &text,
        ))
    }

    /// What every page's header shows.
    pub fn header(&self) -> minijinja::Value {
        context! {
            user => self.session.user.name,
            role => role_label(&self.session.user.role, self.lang),
            role_level => self.caller.role as u8,
            csrf => self.session.csrf,
            path => self.path,
        }
    }

    /// Records a console action in the audit log, as the API's hook records API writes.
    pub fn audit(&self, state: &SharedState, path: &str, status: u16) {
        state.audit.record(crate::api::audit::Entry {
            at: crate::clock::now_ms(),
            who: self.caller.name.clone(),
            role: self.caller.role.as_str(),
            via: "session",
            client: self.caller.client.map(|c| c.to_string()),
            method: "POST".into(),
            route: path.to_string(),
            path: path.to_string(),
            status,
        });
    }
}

/// The end of a console action done through an API handler: on success the action is
/// audited and the browser goes to `then` (303); a refusal is shown in the user's words
/// with the API's own status and detail.
pub fn act<T>(
    state: &SharedState,
    signed: &Signed,
    path: &str,
    result: Result<T, Problem>,
    then: &str,
) -> Response {
    match result {
        Ok(_) => {
            signed.audit(state, path, 303);
            Redirect::to(then).into_response()
        }
        Err(p) => refused(signed.lang, &p),
    }
}

/// A problem from the API, as a page.
pub fn refused(lang: Lang, p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let title = match status {
        StatusCode::FORBIDDEN => lang.pick("権限がありません", "Not permitted"),
        StatusCode::NOT_FOUND => lang.pick("見つかりません", "Not found"),
        StatusCode::CONFLICT => lang.pick("この操作はできません", "Not possible now"),
        s if s.is_server_error() => lang.pick("処理できませんでした", "Something went wrong"),
        _ => lang.pick("入力を確認してください", "Please check the input"),
    };
    let detail = match &p.field {
        Some(f) => format!("{} ({f})", p.detail),
        None => p.detail.clone(),
    };
    message(lang, status, title, &detail)
}

/// The signed-in session of a request, if any.
pub async fn session(state: &SharedState, headers: &HeaderMap) -> Option<people::Session> {
    let token = cookie(headers, SESSION_COOKIE)?;
    people::session(
        &state.db,
        &hex::encode(sha256(&token)),
        IDLE_MS,
        ABSOLUTE_MS,
    )
    .await
    .ok()
    .flatten()
}

/// The console's stylesheet, served by the daemon (no CDN).
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// The console's one script: live status and live preview counters. Every page works
/// without it.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console.js"),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct LanguageForm {
    lang: String,
    #[serde(default)]
    back: String,
}

/// `POST /language`: 日本語 or English for this browser (a cookie), then back to the page.
pub async fn language(
    axum::extract::State(state): axum::extract::State<SharedState>,
    axum::Form(f): axum::Form<LanguageForm>,
) -> Response {
    let lang = if f.lang == "en" { "en" } else { "ja" };
    // Only a path on this console: never an open redirect.
    let back = if f.back.starts_with('/') && !f.back.starts_with("//") {
        f.back
    } else {
        "/".into()
    };
    let mut r = Redirect::to(&back).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LANG_COOKIE, lang, Some(365 * 86_400)),
    );
    r
}

pub fn role_label(role: &str, lang: Lang) -> &'static str {
    match (role, lang) {
        ("admin", Lang::Ja) => "管理者",
        ("admin", Lang::En) => "admin",
        ("disaster", Lang::Ja) => "防災担当",
        ("disaster", Lang::En) => "disaster desk",
        ("staff", Lang::Ja) => "広報担当",
        ("staff", Lang::En) => "staff",
        (_, Lang::Ja) => "閲覧",
        (_, Lang::En) => "viewer",
    }
}

pub fn channel_label(name: &str, lang: Lang) -> String {
    match (name, lang) {
        ("line", _) => "LINE".into(),
        ("x", Lang::Ja) => "X（旧Twitter）".into(),
        ("x", Lang::En) => "X (Twitter)".into(),
        ("facebook", Lang::Ja) => "Facebookページ".into(),
        ("facebook", Lang::En) => "Facebook Page".into(),
        ("email", Lang::Ja) => "メール配信".into(),
        ("email", Lang::En) => "Email".into(),
        ("website", Lang::Ja) => "市ホームページ".into(),
        ("website", Lang::En) => "City website".into(),
        (other, lang) => match other.strip_prefix("webhook.") {
            Some(name) => format!("{}（{name}）", lang.pick("連携先", "Webhook ")),
            None => other.to_string(),
        },
    }
}

pub fn status_label(status: &str, lang: Lang) -> &'static str {
    let (ja, en) = match status {
        "awaiting_approval" => ("承認待ち", "awaiting approval"),
        "awaiting_confirmation" => ("確認待ち", "awaiting confirmation"),
        "scheduled" => ("予約済み", "scheduled"),
        "queued" => ("発信待ち", "queued"),
        "sending" | "in_flight" | "pending" | "retrying" => ("発信中", "sending"),
        "sent" => ("発信済み", "sent"),
        "partially_failed" => ("一部失敗", "partly failed"),
        "failed" => ("失敗", "failed"),
        "cancelled" => ("取り消し", "cancelled"),
        "returned" => ("差し戻し", "returned"),
        "ok" => ("正常", "working"),
        "degraded" => ("不調", "degraded"),
        "paused" => ("停止中", "paused"),
        "disabled" => ("無効", "disabled"),
        _ => ("不明", "unknown"),
    };
    lang.pick(ja, en)
}

/// A time in the city's zone, as staff read it.
pub fn local_time(ms: i64, lang: Lang) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&noroshi_channel_core::jst());
    match lang {
        Lang::Ja => t.format("%Y年%-m月%-d日 %H:%M").to_string(),
        Lang::En => t.format("%-d %b %Y %H:%M JST").to_string(),
    }
}

/// An RFC 3339 time (as the API gives it) in the city's zone.
pub fn local_rfc3339(s: &str, lang: Lang) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| local_time(t.timestamp_millis(), lang))
        .unwrap_or_else(|_| s.to_string())
}

/// `GET /`: the console's front page, for a signed-in user.
pub async fn home(
    axum::extract::State(state): axum::extract::State<SharedState>,
    signed: Signed,
) -> Response {
    let alerts = crate::store::alerts::active(&state.db, crate::clock::now_ms())
        .await
        .map(|a| a.len())
        .unwrap_or(0);
    page(
        "home.html",
        signed.lang,
        context! { me => signed.header(), active_alerts => alerts },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_pages_follow_the_language() {
        let env = environment();
        assert_eq!(env.templates().count(), TEMPLATES.len());
        let render = |lang: &str| {
            env.get_template("sign_in.html")
                .unwrap()
                .render(context! { lang => lang, csrf => "t", error => "x" })
                .unwrap()
        };
        let ja = render("ja");
        assert!(ja.contains("<html lang=\"ja\">"), "{ja}");
        assert!(ja.contains("ログイン"), "{ja}");
        let en = render("en");
        assert!(en.contains("<html lang=\"en\">"), "{en}");
        assert!(en.contains("Sign in"), "{en}");
        assert!(!en.contains("パスワード"), "{en}");
    }
}
