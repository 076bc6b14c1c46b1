//! The web console (Japanese by default): sign-in with argon2id passwords, sessions kept in
//! the database (HttpOnly, SameSite=Strict, Secure over HTTPS; idle and absolute
//! timeouts), CSRF tokens on every form, lock-out after repeated failures per account and
//! per address, every sign-in and failure in the audit log. Pages are server-rendered
//! (minijinja), with no script.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use crate::api::auth::sha256;
use crate::api::SharedState;
use crate::store::people;

const SESSION_COOKIE: &str = "noroshi_session";
const SIGN_IN_COOKIE: &str = "noroshi_signin";
/// Failures in the window that lock an account, and an address.
const ACCOUNT_LIMIT: i64 = 5;
const ADDRESS_LIMIT: i64 = 20;
const LOCK_WINDOW_MS: i64 = 15 * 60_000;
const IDLE_MS: i64 = 30 * 60_000;
const ABSOLUTE_MS: i64 = 12 * 3_600_000;

/// At least 12 characters: a city account must not fall to a guess.
pub fn password_is_acceptable(p: &str) -> Result<(), String> {
    if p.chars().count() < 12 {
        return Err("the password must be at least 12 characters".into());
    }
    Ok(())
}

/// An argon2id hash in PHC form (the crate's default parameters, OWASP's minimum).
pub fn hash_password(p: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

fn verify(p: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(p.as_bytes(), &h)
            .is_ok()
    })
}

fn random_token() -> String {
    crate::api::auth::new_token()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(state: &SharedState, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
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
];

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env
}

fn page(name: &str, ctx: minijinja::Value) -> Response {
    match environment().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => crate::api::problem::Problem::internal(e).into_response(),
    }
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
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}

/// `GET /sign-in`: the form, with a fresh CSRF token (double-submitted: cookie and field).
pub async fn sign_in_page(State(state): State<SharedState>) -> Response {
    sign_in_form(&state, None, StatusCode::OK)
}

fn sign_in_form(state: &SharedState, error: Option<&str>, status: StatusCode) -> Response {
    let csrf = random_token();
    let mut r = page("sign_in.html", context! { csrf => csrf, error => error });
    *r.status_mut() = status;
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGN_IN_COOKIE, &csrf, Some(3600)),
    );
    r
}

#[derive(Deserialize)]
pub struct SignIn {
    name: String,
    password: String,
    csrf: String,
}

/// `POST /sign-in`.
pub async fn sign_in(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    let client = crate::api::client_address(peer.ip(), &headers, &state.trusted_proxies);
    if let Err(wait) = state.limits.site.check(&client) {
        let mut r = sign_in_form(
            &state,
            Some("アクセスが集中しています。しばらくしてからもう一度お試しください。"),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return r;
    }
    if cookie(&headers, SIGN_IN_COOKIE).as_deref() != Some(f.csrf.as_str()) || f.csrf.is_empty() {
        return csrf_refused();
    }
    let now = crate::clock::now_ms();
    let account_key = format!("account:{}", f.name);
    let address_key = format!("address:{client}");
    let locked = people::failures(&state.db, &account_key, now - LOCK_WINDOW_MS)
        .await
        .unwrap_or(0)
        >= ACCOUNT_LIMIT
        || people::failures(&state.db, &address_key, now - LOCK_WINDOW_MS)
            .await
            .unwrap_or(0)
            >= ADDRESS_LIMIT;
    let audit = |who: &str, status: u16| {
        state.audit.record(crate::api::audit::Entry {
            at: now,
            who: who.to_string(),
            role: "",
            via: "password",
            client: Some(client.to_string()),
            method: "POST".into(),
            route: "/sign-in".into(),
            path: "/sign-in".into(),
            status,
        });
    };
    if locked {
        audit(&f.name, 423);
        return sign_in_form(
            &state,
            Some("ログインに続けて失敗したため、このアカウントまたは接続元からのログインを15分間停止しています。時間をおいてからお試しください。"),
            StatusCode::LOCKED,
        );
    }
    let user = people::user(&state.db, &f.name).await.ok().flatten();
    // A missing user costs the same hash as a wrong password: the timing says nothing.
    let ok = match &user {
        Some(u) if !u.disabled => verify(&f.password, &u.password_hash),
        _ => {
            let _ = verify(&f.password, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$3QhMzZ0N8t6H8y1n1pW0p0oW5P9Xq9wQy4o3Jm0E7Xk");
            false
        }
    };
    if !ok {
        let _ = people::record_failure(&state.db, &[account_key, address_key]).await;
        audit(&f.name, 401);
        return sign_in_form(
            &state,
            Some("ユーザー名またはパスワードが違います。"),
            StatusCode::UNAUTHORIZED,
        );
    }
    let user = user.expect("verified");
    let _ = people::clear_failures(&state.db, &account_key).await;
    let token = random_token();
    if let Err(e) = people::create_session(
        &state.db,
        &hex::encode(sha256(&token)),
        &user.name,
        &random_token(),
    )
    .await
    {
        return crate::api::problem::Problem::from(e).into_response();
    }
    audit(&user.name, 303);
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, None),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SIGN_IN_COOKIE, "", Some(0)),
    );
    r
}

fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html("<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>送信できませんでした</title></head><body><main><h1>送信できませんでした</h1><p>フォームの有効期限が切れたか、正しくない送信です。画面を読み込み直してから、もう一度操作してください。</p><p><a href=\"/sign-in\">ログイン画面へ</a></p></main></body></html>"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
    #[serde(default)]
    everywhere: Option<String>,
}

/// `POST /sign-out` (`everywhere=1`: every session of the user).
pub async fn sign_out(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let Some(s) = session(&state, &headers).await else {
        return Redirect::to("/sign-in").into_response();
    };
    if s.csrf != f.csrf {
        return csrf_refused();
    }
    if f.everywhere.is_some() {
        let _ = people::end_sessions_of(&state.db, &s.user.name).await;
    } else if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let _ = people::end_session(&state.db, &hex::encode(sha256(&token))).await;
    }
    let mut r = Redirect::to("/sign-in").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    r
}

fn role_label(role: &str) -> &'static str {
    match role {
        "admin" => "管理者",
        "disaster" => "防災担当",
        "staff" => "広報担当",
        _ => "閲覧",
    }
}

fn channel_label(name: &str) -> String {
    match name {
        "line" => "LINE".into(),
        "x" => "X（旧Twitter）".into(),
        "facebook" => "Facebookページ".into(),
        "email" => "メール配信".into(),
        "website" => "市ホームページ".into(),
        other => other.to_string(),
    }
}

fn status_label(status: &str) -> &'static str {
    match status {
        "awaiting_confirmation" => "確認待ち",
        "scheduled" => "予約済み",
        "queued" => "発信待ち",
        "sending" | "in_flight" | "pending" | "retrying" => "発信中",
        "sent" => "発信済み",
        "partially_failed" => "一部失敗",
        "failed" => "失敗",
        "cancelled" => "取り消し",
        _ => "不明",
    }
}

/// The caller a console session acts as: its user, with the user's role.
fn caller_of(s: &people::Session) -> crate::api::auth::Caller {
    crate::api::auth::Caller {
        name: s.user.name.clone(),
        role: crate::api::auth::Role::parse(&s.user.role).unwrap_or(crate::api::auth::Role::Viewer),
        via: crate::api::auth::Via::Session,
        client: None,
    }
}

#[derive(Deserialize, Default)]
pub struct Compose {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    link: String,
    /// Repeated `channels=…` fields.
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    action: String,
}

fn compose_page(
    state: &SharedState,
    s: &people::Session,
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
            context! { name => name.clone(), label => channel_label(&name), checked => checked }
        })
        .collect();
    let (error_field, error) = error
        .map(|(f, m)| (Some(f), Some(m)))
        .unwrap_or((None, None));
    let mut r = page(
        "compose.html",
        context! {
            user => s.user.name, role => role_label(&s.user.role), csrf => s.csrf,
            title => f.title, body => f.body, link => f.link, channels => channels,
            previews => previews, error => error, error_field => error_field,
        },
    );
    *r.status_mut() = status;
    r
}

/// `GET /compose`: one form for every channel (staff and above).
pub async fn compose_form(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let Some(s) = session(&state, &headers).await else {
        return Redirect::to("/sign-in").into_response();
    };
    if caller_of(&s).role < crate::api::auth::Role::Staff {
        return forbidden_page();
    }
    compose_page(
        &state,
        &s,
        &Compose::default(),
        Vec::new(),
        None,
        StatusCode::OK,
    )
}

fn forbidden_page() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html("<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>権限がありません</title></head><body><main><h1>権限がありません</h1><p>この画面は広報担当以上の権限で使えます。管理者に権限の変更を依頼してください。</p><p><a href=\"/\">ホームへ戻る</a></p></main></body></html>"),
    )
        .into_response()
}

/// `POST /compose`: the per-channel previews, or the announcement sent (it goes through
/// the same acceptance as the API's, as the signed-in user).
pub async fn compose(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(s) = session(&state, &headers).await else {
        return Redirect::to("/sign-in").into_response();
    };
    let caller = caller_of(&s);
    if caller.role < crate::api::auth::Role::Staff {
        return forbidden_page();
    }
    // Repeated fields (`channels=a&channels=b`) read by hand: the form's shape is small.
    let mut f = Compose::default();
    for (k, v) in url::form_urlencoded::parse(&body) {
        match k.as_ref() {
            "csrf" => f.csrf = v.into_owned(),
            "title" => f.title = v.into_owned(),
            "body" => f.body = v.into_owned(),
            "link" => f.link = v.into_owned(),
            "channels" => f.channels.push(v.into_owned()),
            "action" => f.action = v.into_owned(),
            _ => {}
        }
    }
    if f.csrf != s.csrf {
        return csrf_refused();
    }
    let submission: crate::accept::Submission = match serde_json::from_value(serde_json::json!({
        "title": f.title,
        "body": f.body,
        "link": if f.link.trim().is_empty() { None } else { Some(f.link.trim()) },
        "channels": f.channels,
    })) {
        Ok(s) => s,
        Err(e) => return crate::api::problem::Problem::internal(e).into_response(),
    };
    let ctx = crate::api::announcements::context(&state, caller.role);
    let now = crate::clock::now();
    let plan = crate::accept::plan(
        &submission,
        &ctx,
        "preview".into(),
        &caller.name,
        None,
        None,
        now,
    );
    let refusal = |r: crate::accept::Refusal| {
        let p = crate::api::problem::Problem::from(r);
        (p.field.clone().unwrap_or_default(), p.detail)
    };
    if f.action != "send" {
        return match plan {
            Ok(p) => {
                let previews = p
                    .channels
                    .into_iter()
                    .map(|c| {
                        context! {
                            channel => c.channel.clone(), label => channel_label(&c.channel),
                            text => c.preview.text, length => c.preview.length, limit => c.preview.limit,
                            rule => c.preview.length_rule, warnings => c.preview.warnings,
                        }
                    })
                    .collect();
                compose_page(&state, &s, &f, previews, None, StatusCode::OK)
            }
            Err(r) => compose_page(
                &state,
                &s,
                &f,
                Vec::new(),
                Some(refusal(r)),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        };
    }
    if let Err(r) = plan {
        return compose_page(
            &state,
            &s,
            &f,
            Vec::new(),
            Some(refusal(r)),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    match crate::api::announcements::accept_and_store(
        &state,
        &caller,
        &submission,
        None,
        None,
        crate::api::announcements::DeskContext::default(),
    )
    .await
    {
        Ok(a) => {
            state.audit.record(crate::api::audit::Entry {
                at: crate::clock::now_ms(),
                who: caller.name.clone(),
                role: caller.role.as_str(),
                via: "session",
                client: None,
                method: "POST".into(),
                route: "/compose".into(),
                path: "/compose".into(),
                status: 303,
            });
            Redirect::to(&format!("/announcements/{}", a.id)).into_response()
        }
        Err(p) => compose_page(
            &state,
            &s,
            &f,
            Vec::new(),
            Some((p.field.clone().unwrap_or_default(), p.detail)),
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
        ),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

/// `GET /announcements`: the newest fifty, filtered by state; drills marked as drills.
pub async fn announcements(
    State(state): State<SharedState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Response {
    let Some(s) = session(&state, &headers).await else {
        return Redirect::to("/sign-in").into_response();
    };
    let statuses: Vec<minijinja::Value> = crate::status::AnnouncementStatus::ALL
        .iter()
        .map(|st| context! { value => st.as_str(), label => status_label(st.as_str()) })
        .collect();
    let status = q.status.filter(|v| {
        crate::status::AnnouncementStatus::ALL
            .iter()
            .any(|st| st.as_str() == v)
    });
    let filter = crate::store::announcements::ListFilter {
        status: status.clone(),
        limit: 50,
        ..Default::default()
    };
    let rows = match crate::store::announcements::list(&state.db, &filter).await {
        Ok(r) => r,
        Err(e) => return crate::api::problem::Problem::from(e).into_response(),
    };
    let items: Vec<minijinja::Value> = rows
        .iter()
        .map(|a| {
            let priority = match a.priority.as_str() {
                "disaster" => "災害",
                "urgent" => "緊急",
                _ => "通常",
            };
            context! {
                id => a.id, title => a.title, exercise => a.exercise, priority => priority,
                status => status_label(&a.status),
                created_at => chrono::DateTime::from_timestamp_millis(a.created_at)
                    .unwrap_or_default()
                    .with_timezone(&noroshi_channel_core::jst())
                    .format("%Y年%-m月%-d日 %H:%M")
                    .to_string(),
            }
        })
        .collect();
    page(
        "announcements.html",
        context! {
            user => s.user.name, role => role_label(&s.user.role), items => items,
            statuses => statuses, status => status.unwrap_or_default(),
        },
    )
}

/// `GET /announcements/{id}`: its state on every channel.
pub async fn announcement(
    State(state): State<SharedState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(s) = session(&state, &headers).await else {
        return Redirect::to("/sign-in").into_response();
    };
    let caller = caller_of(&s);
    match crate::api::announcements::view_of(&state, &caller, &id).await {
        Ok(v) => {
            let deliveries: Vec<minijinja::Value> = v
                .deliveries
                .iter()
                .map(|d| {
                    context! {
                        label => channel_label(&d.channel), status_label => status_label(&d.status),
                        sent => d.sent, total => d.total, last_error => d.last_error.clone().unwrap_or_default(),
                    }
                })
                .collect();
            page(
                "announcement.html",
                context! {
                    user => s.user.name, role => role_label(&s.user.role), title => v.title,
                    status_label => status_label(&v.status), created_at => v.created_at,
                    exercise => v.exercise, deliveries => deliveries,
                },
            )
        }
        Err(p) => p.into_response(),
    }
}

/// `GET /`: the console's front page, for a signed-in user.
pub async fn home(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let Some(s) = session(&state, &headers).await else {
        return Redirect::to("/sign-in").into_response();
    };
    let role = role_label(&s.user.role);
    page(
        "home.html",
        context! { user => s.user.name, role => role, csrf => s.csrf },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_passwords_hash_with_argon2id() {
        let env = environment();
        assert_eq!(env.templates().count(), TEMPLATES.len());
        for name in ["sign_in.html", "home.html"] {
            let html = env
                .get_template(name)
                .unwrap()
                .render(
                    context! { csrf => "t", user => "hanako", role => "広報担当", error => "x" },
                )
                .unwrap();
            assert!(html.contains("<html lang=\"ja\">"), "{name}");
        }
        let hash = hash_password("kouhou-suzaka-2026").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify("kouhou-suzaka-2026", &hash));
        assert!(!verify("kouhou-suzaka-2027", &hash));
        assert!(password_is_acceptable("short").is_err());
    }
}
