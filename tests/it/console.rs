//! Issue 18 (the web console), the sign-in first: users added from the command line,
//! argon2id passwords, sessions in cookies that scripts cannot read, CSRF on every form,
//! the lock-out, and the audit of every sign-in and failure. Over HTTP; the browser tests
//! come with the pages.

use std::process::Command;

use reqwest::StatusCode;

use crate::helpers::*;
use crate::on_both;

fn user_add(d: &Daemon, name: &str, role: &str, password: &str) -> std::process::Output {
    let file = d.dir.path().join(format!("{name}.password"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_noroshi"))
        .args(["user", "add", name, "--role", role, "--password-file"])
        .arg(&file)
        .arg("--config")
        .arg(&d.config_path)
        .env("IT_ADMIN_TOKEN", ADMIN)
        .env("IT_STAFF_TOKEN", STAFF)
        .output()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of a Set-Cookie header named `name`, and the whole header.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_string(), v.to_string()))
}

/// The sign-in form's CSRF token and its cookie.
async fn sign_in_form(d: &Daemon, http: &reqwest::Client) -> (String, String) {
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

async fn post_sign_in(
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
