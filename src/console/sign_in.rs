//! Sign-in and sign-out: argon2id passwords, sessions kept in the database (HttpOnly,
//! SameSite=Strict, Secure over HTTPS; idle and absolute timeouts), a double-submitted CSRF
//! token on the sign-in form, lock-out after repeated failures per account and per address,
//! every sign-in and failure in the audit log.

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::context;
use serde::Deserialize;

use super::{
    cookie, csrf_refused, page, random_token, session, set_cookie, Lang, SESSION_COOKIE,
    SIGN_IN_COOKIE,
};
use crate::api::auth::sha256;
use crate::api::SharedState;
use crate::store::people;

/// Failures in the window that lock an account, and an address.
const ACCOUNT_LIMIT: i64 = 5;
const ADDRESS_LIMIT: i64 = 20;
const LOCK_WINDOW_MS: i64 = 15 * 60_000;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
}

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

pub(crate) fn verify(p: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(p.as_bytes(), &h)
            .is_ok()
    })
}

/// `GET /sign-in`: the form, with a fresh CSRF token (double-submitted: cookie and field).
pub async fn sign_in_page(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    sign_in_form(&state, Lang::of(&headers), None, StatusCode::OK)
}

fn sign_in_form(
    state: &SharedState,
    lang: Lang,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = random_token();
    let mut r = page(
        "sign_in.html",
        lang,
        context! { csrf => csrf, error => error },
    );
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
    let lang = Lang::of(&headers);
    let client = crate::api::client_address(peer.ip(), &headers, &state.trusted_proxies);
    if let Err(wait) = state.limits.site.check(&client) {
        let mut r = sign_in_form(
            &state,
            lang,
            Some(lang.pick(
                "アクセスが集中しています。しばらくしてからもう一度お試しください。",
                "Too many sign-in attempts from this address. Please wait a little and try again.",
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return r;
    }
    if cookie(&headers, SIGN_IN_COOKIE).as_deref() != Some(f.csrf.as_str()) || f.csrf.is_empty() {
        return csrf_refused(lang);
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
            lang,
            Some(lang.pick(
                "ログインに続けて失敗したため、このアカウントまたは接続元からのログインを15分間停止しています。時間をおいてからお試しください。",
                "Sign-in is locked for 15 minutes for this account or address after repeated failures. Please try again later.",
            )),
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
            lang,
            Some(lang.pick(
                "ユーザー名またはパスワードが違います。",
                "The user name or password is wrong.",
            )),
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
        return csrf_refused(Lang::of(&headers));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id() {
        let hash = hash_password("kouhou-suzaka-2026").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify("kouhou-suzaka-2026", &hash));
        assert!(!verify("kouhou-suzaka-2027", &hash));
        assert!(password_is_acceptable("short").is_err());
    }
}
