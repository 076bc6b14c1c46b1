//! Issue 18 (the web console), the sign-in first: users added from the command line,
//! argon2id passwords, sessions in cookies that scripts cannot read, CSRF on every form,
//! the lock-out, and the audit of every sign-in and failure. Over HTTP; the browser tests
//! come with the pages.

mod admin;
mod approval;
mod browser;
mod channels_subscribers;
mod schedules_reach;

use std::process::Command;

use reqwest::StatusCode;

use crate::helpers::*;
use crate::on_both;

/// The password every test person gets.
pub(crate) const PASSWORD: &str = "kouhou-suzaka-2026";

/// Adds people (name, role) to a daemon's database while it is stopped (on SQLite one
/// process owns the file), then starts it again.
pub(crate) async fn add_people(d: &mut Daemon, people: &[(&str, &str)]) {
    d.terminate().await;
    for (name, role) in people {
        let out = user_add(d, name, role, PASSWORD);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.start_again().await;
}

/// A GET as a signed-in person: the status and the page.
pub(crate) async fn get_page(d: &Daemon, session: &str, path: &str) -> (StatusCode, String) {
    let r = client()
        .get(format!("{}{path}", d.base))
        .header("cookie", session)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()));
    (r.status(), r.text().await.unwrap())
}

/// A form POST as a signed-in person: the status, the `Location` (if any) and the page.
pub(crate) async fn post_form(
    d: &Daemon,
    session: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let r = client()
        .post(format!("{}{path}", d.base))
        .header("cookie", session)
        .form(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()));
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status(), location, r.text().await.unwrap())
}

pub(crate) fn user_add(d: &Daemon, name: &str, role: &str, password: &str) -> std::process::Output {
    let file = d.dir.path().join(format!("{name}.password"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_noroshi"))
        .args(["user", "add", name, "--role", role, "--password-file"])
        .arg(&file)
        .arg("--config")
        .arg(&d.config_path)
        .envs(d.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of a Set-Cookie header named `name`, and the whole header.
pub(crate) fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_string(), v.to_string()))
}

/// The sign-in form's CSRF token and its cookie.
pub(crate) async fn sign_in_form(d: &Daemon, http: &reqwest::Client) -> (String, String) {
    let r = http
        .get(format!("{}/sign-in", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (cookie, _) = set_cookie(&r, "noroshi_signin").expect("a CSRF cookie");
    let html = r.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (cookie, csrf)
}

pub(crate) async fn post_sign_in(
    d: &Daemon,
    http: &reqwest::Client,
    cookie: &str,
    csrf: &str,
    name: &str,
    password: &str,
) -> reqwest::Response {
    http.post(format!("{}/sign-in", d.base))
        .header("cookie", cookie)
        .form(&[("name", name), ("password", password), ("csrf", csrf)])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()))
}

async fn signing_in_and_out_with_csrf_and_lock_out(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    // On SQLite one process owns the file: people are added while the daemon is stopped
    // (the first admin before the first start).
    d.terminate().await;
    // Passwords come from a file or the terminal, never an argument; short ones are refused.
    let out = user_add(&d, "hanako", "staff", "short");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 characters"));
    let out = user_add(&d, "hanako", "staff", "kouhou-suzaka-2026");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.start_again().await;
    let http = client();
    // Not signed in: the front page sends you to sign in.
    let r = http
        .get(format!("{}/", d.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.logs()));
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/sign-in");
    // Without its CSRF token, the form is refused.
    let (cookie, csrf) = sign_in_form(&d, &http).await;
    let r = post_sign_in(&d, &http, "", &csrf, "hanako", "kouhou-suzaka-2026").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Signed in: a session cookie scripts cannot read, only over HTTPS, same site only.
    let r = post_sign_in(&d, &http, &cookie, &csrf, "hanako", "kouhou-suzaka-2026").await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let (session, whole) = set_cookie(&r, "noroshi_session").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(whole.contains(attr), "{whole}");
    }
    let home = http
        .get(format!("{}/", d.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = home.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"ja\">") && html.contains("hanako"),
        "{html}"
    );
    let home_csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // Sign-out needs the session's CSRF token too; then the session is gone.
    let r = http
        .post(format!("{}/sign-out", d.base))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{}/sign-out", d.base))
        .header("cookie", &session)
        .form(&[("csrf", home_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http
        .get(format!("{}/", d.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the session ended");
    // Five wrong passwords lock the account: the right one is refused too, with a message.
    for _ in 0..5 {
        let (cookie, csrf) = sign_in_form(&d, &http).await;
        let r = post_sign_in(&d, &http, &cookie, &csrf, "hanako", "wrong-password-123").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("ユーザー名またはパスワードが違います"));
    }
    let (cookie, csrf) = sign_in_form(&d, &http).await;
    let r = post_sign_in(&d, &http, &cookie, &csrf, "hanako", "kouhou-suzaka-2026").await;
    assert_eq!(r.status(), StatusCode::LOCKED);
    assert!(r.text().await.unwrap().contains("15分間停止"));
    // Every sign-in and failure is in the audit log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, audit) = d.get("/api/v1/audit?who=hanako&limit=50").await;
    let statuses: Vec<i64> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["route"] == "/sign-in")
        .map(|e| e["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{audit}");
    assert!(
        statuses.contains(&303) && statuses.contains(&423),
        "{audit}"
    );
}
on_both!(signing_in_and_out_with_csrf_and_lock_out);

/// Signs `name` in and returns the session cookie and the page's CSRF token.
pub(crate) async fn signed_in(
    d: &Daemon,
    http: &reqwest::Client,
    name: &str,
    password: &str,
) -> (String, String) {
    let (cookie, csrf) = sign_in_form(d, http).await;
    let r = post_sign_in(d, http, &cookie, &csrf, name, password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (session, _) = set_cookie(&r, "noroshi_session").unwrap();
    let html = http
        .get(format!("{}/", d.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (session, csrf)
}

/// Compose once: the form lists the channels, the preview shows each platform's text and
/// its counter, a refusal is shown at its field, sending goes through the API's acceptance
/// as the signed-in user and ends on the announcement's page; a viewer cannot compose, and
/// a post without its CSRF token is refused.
async fn composing_previews_and_sends_as_the_signed_in_user(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    d.terminate().await;
    assert!(user_add(&d, "hanako", "staff", "kouhou-suzaka-2026")
        .status
        .success());
    assert!(user_add(&d, "taro", "viewer", "etsuran-suzaka-2026")
        .status
        .success());
    d.start_again().await;
    let http = client();
    let (viewer, _) = signed_in(&d, &http, "taro", "etsuran-suzaka-2026").await;
    let r = http
        .get(format!("{}/compose", d.base))
        .header("cookie", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (session, csrf) = signed_in(&d, &http, "hanako", "kouhou-suzaka-2026").await;
    let form = http
        .get(format!("{}/compose", d.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    assert!(
        html.contains("name=\"channels\" value=\"website\"") && html.contains("市ホームページ"),
        "{html}"
    );
    let post = |fields: Vec<(&'static str, String)>| {
        let (http, base, session) = (http.clone(), d.base.clone(), session.clone());
        async move {
            http.post(format!("{base}/compose"))
                .header("cookie", session)
                .form(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    let fields = |title: &str, action: &str, csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("title", title.to_string()),
            (
                "body",
                "本日15時、須坂市役所に避難所を開設しました。".to_string(),
            ),
            ("channels", "website".to_string()),
            ("action", action.to_string()),
        ]
    };
    let r = post(fields("避難所開設のお知らせ", "preview", &csrf)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("各チャンネルでの表示") && html.contains("避難所開設のお知らせ"),
        "{html}"
    );
    let r = post(fields("", "send", &csrf)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("aria-invalid=\"true\"") && html.contains("role=\"alert\""),
        "{html}"
    );
    assert_eq!(
        post(fields("避難所開設のお知らせ", "send", "forged"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let before = d.count_announcements().await;
    let r = post(fields("避難所開設のお知らせ", "send", &csrf)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(d.count_announcements().await, before + 1);
    let id = page.trim_start_matches("/announcements/").to_string();
    let a = d
        .wait_status(&id, &["sent"], std::time::Duration::from_secs(20))
        .await;
    assert_eq!(a["created_by"], "hanako", "sent as the signed-in user");
    let html = http
        .get(format!("{}{page}", d.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("市ホームページ") && html.contains("発信済み"),
        "{html}"
    );
    // The list shows it, and filters by state.
    for (query, listed) in [
        ("", true),
        ("?status=sent", true),
        ("?status=failed", false),
    ] {
        let html = http
            .get(format!("{}/announcements{query}", d.base))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            html.contains(&format!("/announcements/{id}")),
            listed,
            "{query}: {html}\n{}",
            d.logs()
        );
    }
}
on_both!(composing_previews_and_sends_as_the_signed_in_user);
