//! Issue 18, the admin screens: people (add, role, disable, sign out everywhere), API tokens
//! (created on the page, shown once, working at once, revoked at once, kept over a restart)
//! and the audit log, admin only, every form with its CSRF token.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::{
    add_people, client, get_page, post_form, post_sign_in, sign_in_form, signed_in, PASSWORD,
};
use crate::helpers::*;
use crate::on_both;

/// Waits until the audit page (as `session`, at `path`) shows everything in `wanted`
/// (the audit log is written in batches, a moment after the action).
async fn audit_shows(d: &Daemon, session: &str, path: &str, wanted: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, html) = get_page(d, session, path).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        // As a browser shows it (minijinja escapes `/` and `&`).
        let html = html.replace("&#x2f;", "/").replace("&amp;", "&");
        if wanted.iter().all(|w| html.contains(w)) {
            return html;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {wanted:?}:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An admin adds a staff member through the form, who can then sign in; a role change
/// applies to their open session; disabling ends it at once; an admin cannot demote or
/// disable themself; staff cannot open the admin screens; a form without its CSRF token
/// changes nothing; the audit page lists the admin's actions with their address.
async fn admins_manage_people_and_their_sessions(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    add_people(&mut d, &[("kanri", "admin"), ("jiro", "staff")]).await;
    let http = client();
    let (admin, csrf) = signed_in(&d, &http, "kanri", PASSWORD).await;

    // Staff: refused on every admin screen and action, and nothing changes.
    let (jiro, jiro_csrf) = signed_in(&d, &http, "jiro", PASSWORD).await;
    for path in ["/people", "/tokens", "/audit"] {
        let (status, html) = get_page(&d, &jiro, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {html}");
        assert!(html.contains("権限がありません"), "{html}");
    }
    let add = |name: &'static str, csrf: String, again: &'static str| {
        vec![
            ("csrf", csrf),
            ("name", name.to_string()),
            ("role", "staff".to_string()),
            ("password", PASSWORD.to_string()),
            ("password_again", again.to_string()),
        ]
    };
    let post = |session: String, path: &'static str, f: Vec<(&'static str, String)>| {
        let (http, base) = (http.clone(), d.base.clone());
        async move {
            let r = http
                .post(format!("{base}{path}"))
                .header("cookie", session)
                .form(&f)
                .send()
                .await
                .unwrap();
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status(), location, r.text().await.unwrap())
        }
    };
    let (status, _, _) = post(
        jiro.clone(),
        "/people",
        add("hanako", jiro_csrf.clone(), PASSWORD),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without the session's CSRF token: refused, and nobody is added.
    let (status, _, html) = post(
        admin.clone(),
        "/people",
        add("hanako", "forged".into(), PASSWORD),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    let (status, _, _) = post(
        admin.clone(),
        "/people",
        add("hanako", String::new(), PASSWORD),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, people) = get_page(&d, &admin, "/people").await;
    assert!(
        people.contains("<th scope=\"row\">jiro") && !people.contains("<th scope=\"row\">hanako"),
        "{people}"
    );
    let (cookie, sign_in_csrf) = sign_in_form(&d, &http).await;
    let r = post_sign_in(&d, &http, &cookie, &sign_in_csrf, "hanako", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The passwords must match and be long enough: said at the field.
    let (status, _, html) = post(
        admin.clone(),
        "/people",
        add("hanako", csrf.clone(), "another-password-99"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("パスワードが一致しません")
            && html.contains("id=\"password_again\" name=\"password_again\" type=\"password\" required minlength=\"12\" autocomplete=\"new-password\" aria-invalid=\"true\" aria-describedby=\"add-error\""),
        "{html}"
    );
    assert!(
        html.contains("value=\"hanako\""),
        "the name is kept: {html}"
    );
    let mut short = add("hanako", csrf.clone(), "short");
    short[3].1 = "short".into();
    let (status, _, html) = post(admin.clone(), "/people", short).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("12文字以上にしてください"), "{html}");

    // Added: hanako signs in and can compose.
    let (status, location, html) = post(
        admin.clone(),
        "/people",
        add("hanako", csrf.clone(), PASSWORD),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(location.as_deref(), Some("/people?done=added"));
    let (_, people) = get_page(&d, &admin, "/people?done=added").await;
    assert!(
        people.contains("利用者を追加しました") && people.contains("<th scope=\"row\">hanako"),
        "{people}"
    );
    let (status, _, html) = post(
        admin.clone(),
        "/people",
        add("hanako", csrf.clone(), PASSWORD),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "a taken name: {html}");
    assert!(html.contains("すでに使われています"), "{html}");
    let (hanako, _) = signed_in(&d, &http, "hanako", PASSWORD).await;
    assert_eq!(get_page(&d, &hanako, "/compose").await.0, StatusCode::OK);

    // A viewer now: the same session can no longer compose.
    let to_viewer = vec![
        ("csrf", csrf.as_str()),
        ("name", "hanako"),
        ("role", "viewer"),
    ];
    let (status, location, _) = post_form(
        &d,
        &admin,
        "/people/role",
        &[("name", "hanako"), ("role", "viewer")],
    )
    .await;
    assert_eq!(
        (status, location),
        (StatusCode::FORBIDDEN, None),
        "no CSRF, no change"
    );
    assert_eq!(get_page(&d, &hanako, "/compose").await.0, StatusCode::OK);
    let (status, location, _) = post_form(&d, &admin, "/people/role", &to_viewer).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/people?done=role"));
    assert_eq!(
        get_page(&d, &hanako, "/compose").await.0,
        StatusCode::FORBIDDEN
    );

    // An admin cannot demote or disable themself, and is told why.
    let (status, _, html) = post_form(
        &d,
        &admin,
        "/people/role",
        &[("csrf", &csrf), ("name", "kanri"), ("role", "viewer")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("ご自身の権限は変更できません"), "{html}");
    let (status, _, html) = post_form(
        &d,
        &admin,
        "/people/disable",
        &[("csrf", &csrf), ("name", "kanri")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        html.contains("ご自身を無効にすることはできません"),
        "{html}"
    );
    assert_eq!(
        get_page(&d, &admin, "/people").await.0,
        StatusCode::OK,
        "still an admin"
    );

    // Disabled: hanako's open session ends at once, and she cannot sign in.
    let (status, _, _) = post_form(
        &d,
        &admin,
        "/people/disable",
        &[("csrf", &csrf), ("name", "hanako")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let r = http
        .get(format!("{}/", d.base))
        .header("cookie", &hanako)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/sign-in");
    let (cookie, sign_in_csrf) = sign_in_form(&d, &http).await;
    let r = post_sign_in(&d, &http, &cookie, &sign_in_csrf, "hanako", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, people) = get_page(&d, &admin, "/people").await;
    assert!(people.contains("無効（ログインできません）"), "{people}");

    // Enabled again, signed in; signed out everywhere by the admin.
    let (status, _, _) = post_form(
        &d,
        &admin,
        "/people/enable",
        &[("csrf", &csrf), ("name", "hanako")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (hanako, _) = signed_in(&d, &http, "hanako", PASSWORD).await;
    assert_eq!(get_page(&d, &hanako, "/").await.0, StatusCode::OK);
    let (status, _, _) = post_form(
        &d,
        &admin,
        "/people/sign-out",
        &[("csrf", &csrf), ("name", "hanako")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(get_page(&d, &hanako, "/").await.0, StatusCode::SEE_OTHER);
    assert_eq!(
        get_page(&d, &jiro, "/").await.0,
        StatusCode::OK,
        "only hanako's sessions"
    );

    // The audit page: the admin's actions, from the admin's address, through the console.
    let html = audit_shows(
        &d,
        &admin,
        "/audit?who=kanri",
        &[
            "POST /people?name=hanako&role=staff",
            "POST /people/role?name=hanako&role=viewer",
            "POST /people/disable?name=hanako",
            "POST /people/enable?name=hanako",
            "POST /people/sign-out?name=hanako",
        ],
    )
    .await;
    assert!(
        html.contains("<td>127.0.0.1</td>") && html.contains("管理画面"),
        "{html}"
    );
    assert!(
        !html.contains("/people/role?name=kanri"),
        "refused changes are not done: {html}"
    );
    // Filtered by person: hanako's sign-ins (and the refused one), not the admin's actions.
    let html = audit_shows(
        &d,
        &admin,
        "/audit?who=hanako",
        &["POST /sign-in", "パスワード（ログイン）"],
    )
    .await;
    assert!(!html.contains("/people/disable"), "{html}");
    // The API's audit log says the same.
    let (_, audit) = d.get("/api/v1/audit?who=kanri&limit=100").await;
    let items = audit["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|e| e["path"] == "/people/disable?name=hanako"
                && e["client"] == "127.0.0.1"
                && e["via"] == "session"),
        "{audit}"
    );
}
on_both!(admins_manage_people_and_their_sessions);

/// The token on the page that created it: `id="new-token" … value="…"`.
fn shown_token(html: &str) -> Option<String> {
    html.split("id=\"new-token\" class=\"token-value\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_string)
}

async fn api_post(d: &Daemon, token: &str) -> (StatusCode, Value) {
    d.post("/api/v1/announcements", token, notice()).await
}

/// A token created on the page is shown once (no-store; a reload does not show it), works
/// on the API at once with its role, survives a restart beside the configured tokens, and
/// stops working the moment it is revoked; configured tokens cannot be revoked here, and
/// names are unique across both.
async fn tokens_work_at_once_are_shown_once_and_revoke_at_once(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    add_people(&mut d, &[("kanri", "admin")]).await;
    let http = client();
    let (admin, csrf) = signed_in(&d, &http, "kanri", PASSWORD).await;
    let (status, html) = get_page(&d, &admin, "/tokens").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("pr-desk") && html.contains("設定ファイル"),
        "{html}"
    );
    assert!(
        !html.contains("name=\"name\" value=\"pr-desk\""),
        "no revoke button on a configured token: {html}"
    );

    // A name the config file uses: refused at the field.
    let (status, _, html) = post_form(
        &d,
        &admin,
        "/tokens",
        &[("csrf", &csrf), ("name", "pr-desk"), ("role", "staff")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(
        html.contains("aria-invalid=\"true\"") && html.contains("すでにあります"),
        "{html}"
    );
    assert!(shown_token(&html).is_none());
    // Without CSRF: nothing is created.
    let (status, _, _) = post_form(
        &d,
        &admin,
        "/tokens",
        &[("name", "cms-bot"), ("role", "staff")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!get_page(&d, &admin, "/tokens").await.1.contains("cms-bot"));

    // Created: shown once, not cached, working at once as staff.
    let r = http
        .post(format!("{}/tokens", d.base))
        .header("cookie", &admin)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "cms-bot"),
            ("role", "staff"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("今回だけ表示します"), "{html}");
    let token = shown_token(&html).expect("the token is shown");
    assert!(token.starts_with("nrs_"), "{token}");
    let (status, v) = api_post(&d, &token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let a = d.announcement(v["id"].as_str().unwrap()).await;
    assert_eq!(a["created_by"], "cms-bot");
    // A reload shows the token by name only.
    let (_, html) = get_page(&d, &admin, "/tokens").await;
    assert!(
        html.contains("cms-bot") && html.contains("kanriさんが"),
        "{html}"
    );
    assert!(
        !html.contains(&token) && !html.contains("今回だけ表示します"),
        "{html}"
    );
    // Its role holds: a viewer token reads, and cannot post.
    let (_, _, html) = post_form(
        &d,
        &admin,
        "/tokens",
        &[("csrf", &csrf), ("name", "reader-2"), ("role", "viewer")],
    )
    .await;
    let viewer = shown_token(&html).expect("a second token");
    assert_eq!(api_post(&d, &viewer).await.0, StatusCode::FORBIDDEN);
    let (status, _) = d
        .request(
            reqwest::Method::GET,
            "/api/v1/announcements",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A second token by the same name: refused.
    let (status, _, html) = post_form(
        &d,
        &admin,
        "/tokens",
        &[("csrf", &csrf), ("name", "cms-bot"), ("role", "admin")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(shown_token(&html).is_none());

    // Configured tokens are not revoked here, and say so.
    let (status, _, html) = post_form(
        &d,
        &admin,
        "/tokens/revoke",
        &[("csrf", &csrf), ("name", "pr-desk")],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("設定ファイルで定めたトークン"), "{html}");
    assert_eq!(api_post(&d, STAFF).await.0, StatusCode::ACCEPTED);

    // Kept over a restart, beside the configured tokens.
    d.terminate().await;
    d.start_again().await;
    assert_eq!(api_post(&d, &token).await.0, StatusCode::ACCEPTED);
    let (admin, csrf) = signed_in(&d, &http, "kanri", PASSWORD).await;

    // Revoked (without CSRF: not), then refused at once.
    let (status, _, _) = post_form(&d, &admin, "/tokens/revoke", &[("name", "cms-bot")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(api_post(&d, &token).await.0, StatusCode::ACCEPTED);
    let (status, location, _) = post_form(
        &d,
        &admin,
        "/tokens/revoke",
        &[("csrf", &csrf), ("name", "cms-bot")],
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/tokens"))
    );
    assert_eq!(api_post(&d, &token).await.0, StatusCode::UNAUTHORIZED);
    assert!(!get_page(&d, &admin, "/tokens").await.1.contains("cms-bot"));
    d.terminate().await;
    d.start_again().await;
    assert_eq!(
        api_post(&d, &token).await.0,
        StatusCode::UNAUTHORIZED,
        "revoked for good"
    );
    assert_eq!(
        api_post(&d, &viewer).await.0,
        StatusCode::FORBIDDEN,
        "the other still works"
    );

    // The audit log has the creation and the revocation, never the token.
    let (admin, _) = signed_in(&d, &http, "kanri", PASSWORD).await;
    let html = audit_shows(
        &d,
        &admin,
        "/audit?who=kanri",
        &[
            "POST /tokens?name=cms-bot&role=staff",
            "POST /tokens/revoke?name=cms-bot",
        ],
    )
    .await;
    assert!(!html.contains(&token));
    // The token's own API write is in the log under its name, by bearer token.
    let html = audit_shows(
        &d,
        &admin,
        "/audit?who=cms-bot",
        &["POST /api/v1/announcements", "APIトークン"],
    )
    .await;
    assert!(html.contains("cms-bot"), "{html}");
}
on_both!(tokens_work_at_once_are_shown_once_and_revoke_at_once);
