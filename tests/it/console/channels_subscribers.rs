//! The console's channels page (state in words, cause and what to do, resume by an admin)
//! and subscribers page (list, add, remove, CSV import after a preview of its errors),
//! checked against what the API then reports.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{add_people, client, get_page, post_form, signed_in, PASSWORD};
use crate::helpers::*;
use crate::on_both;

const LINE_TOKEN: &str = "it-line-channel-token-77aa";

async fn line_state(d: &Daemon) -> Value {
    let (_, chans) = d.get("/api/v1/channels").await;
    chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "line")
        .cloned()
        .unwrap()
}

/// LINE refuses the token: the page shows LINE as paused (in words), why, and what to do;
/// staff cannot resume; an admin resumes it (with the CSRF token) once the token is right
/// again, and the API then reports the channel working (its failed reach collection done
/// again) and the waiting post sent.
async fn a_paused_channel_shows_its_cause_and_an_admin_resumes_it(backend: Backend) {
    let line = noroshi_line::fake::start(noroshi_line::fake::FakeOptions {
        access_token: "a-token-the-city-has-not-got".into(),
        ..Default::default()
    })
    .await;
    let mut d = Daemon::builder(backend)
        .config(&format!(
            r#"
[channels.line]
enabled = true
api_base = "{base}"
data_api_base = "{base}"
channel_access_token_env = "IT_LINE_TOKEN"
channel_secret = "it-line-secret"
"#,
            base = line.base_url()
        ))
        .env("IT_LINE_TOKEN", LINE_TOKEN)
        .start()
        .await;
    add_people(
        &mut d,
        &[("kanri", "admin"), ("hanako", "staff"), ("taro", "viewer")],
    )
    .await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文です。", "channels": ["line"]}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while line_state(&d).await["state"] != "paused" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            line_state(&d).await,
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A reach collection meanwhile fails with the refused token.
    let (status, collected) = d.post("/api/v1/reach/collect", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{collected}");
    assert!(line_state(&d).await["platform"]["reach"]["error"].is_string());
    let http = client();
    // A viewer sees the state in words, the cause and what to do, but no resume button.
    let (viewer, _) = signed_in(&d, &http, "taro", PASSWORD).await;
    let (status, html) = get_page(&d, &viewer, "/channels").await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        "停止中",
        "チャネルアクセストークンが受け付けられません",
        "LINE Developersでチャネルアクセストークンを再発行し、設定ファイルを更新してから再開してください。",
        "再開は管理者が行います",
        "データベース",
        "401",
    ] {
        assert!(html.contains(text), "{text}: {html}");
    }
    assert!(!html.contains("action=\"/channels/line/resume\""), "{html}");
    // Staff cannot resume: a 403 page, and the channel stays paused.
    let (staff, staff_csrf) = signed_in(&d, &http, "hanako", PASSWORD).await;
    let (status, _, html) = post_form(
        &d,
        &staff,
        "/channels/line/resume",
        &[("csrf", &staff_csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("管理者"), "{html}");
    assert_eq!(line_state(&d).await["state"], "paused");
    // An admin sees the button; without the CSRF token nothing changes.
    let (admin, csrf) = signed_in(&d, &http, "kanri", PASSWORD).await;
    let (_, html) = get_page(&d, &admin, "/channels").await;
    assert!(html.contains("action=\"/channels/line/resume\""), "{html}");
    let (status, _, _) =
        post_form(&d, &admin, "/channels/line/resume", &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(line_state(&d).await["state"], "paused");
    // The token is put right; the admin resumes through the page.
    line.set_access_token(LINE_TOKEN);
    let (status, location, html) =
        post_form(&d, &admin, "/channels/line/resume", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(location.as_deref(), Some("/channels"));
    let v = d.wait_status(&id, &["sent"], Duration::from_secs(30)).await;
    assert_eq!(channel(&v, "line")["status"], "sent", "{v}");
    // The resume collects LINE's reach again (the failed collection was the old token's),
    // so the channel shows as working, not `degraded` until the next scheduled collection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = line_state(&d).await;
        if state["state"] == "ok" {
            assert!(state["platform"]["reach"]["error"].is_null(), "{state}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{state}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, html) = get_page(&d, &admin, "/channels").await;
    assert!(html.contains("正常") && !html.contains("停止中"), "{html}");
    assert!(!html.contains("action=\"/channels/line/resume\""), "{html}");
}
on_both!(a_paused_channel_shows_its_cause_and_an_admin_resumes_it);

async fn subscribers(d: &Daemon) -> Vec<Value> {
    let (s, v) = d.get("/api/v1/subscribers?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn emails(list: &[Value]) -> Vec<String> {
    let mut e: Vec<String> = list
        .iter()
        .map(|s| s["email"].as_str().unwrap().to_string())
        .collect();
    e.sort();
    e
}

/// Subscribers (admin, as the API): added through the form, a refusal at its field, the
/// CSV preview naming a bad row and storing nothing, the import of the good rows, a
/// removal; forms without their CSRF token change nothing; staff cannot see addresses.
async fn subscribers_are_added_previewed_imported_and_removed(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    add_people(&mut d, &[("kanri", "admin"), ("hanako", "staff")]).await;
    let http = client();
    let (staff, _) = signed_in(&d, &http, "hanako", PASSWORD).await;
    let (status, _) = get_page(&d, &staff, "/subscribers").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (admin, csrf) = signed_in(&d, &http, "kanri", PASSWORD).await;
    let (status, html) = get_page(&d, &admin, "/subscribers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("メール配信の登録者"), "{html}");

    // Add one through the form.
    let add = |email: &'static str, csrf: String| {
        let (d, admin) = (&d, admin.clone());
        async move {
            post_form(
                d,
                &admin,
                "/subscribers",
                &[("csrf", &csrf), ("email", email), ("lang", "en")],
            )
            .await
        }
    };
    let (status, location, html) = add("yamada@example.jp", csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(location.as_deref(), Some("/subscribers?done=added"));
    let list = subscribers(&d).await;
    assert_eq!(emails(&list), vec!["yamada@example.jp"]);
    assert_eq!(list[0]["lang"], "en");
    let (_, html) = get_page(&d, &admin, "/subscribers?done=added").await;
    assert!(
        html.contains("yamada@example.jp") && html.contains("登録しました"),
        "{html}"
    );
    // Refusals are shown at the field; nothing is stored.
    let (status, _, html) = add("not-an-address", csrf.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("aria-invalid=\"true\" aria-describedby=\"add-error\"")
            && html.contains("メールアドレスとして正しくありません"),
        "{html}"
    );
    let (status, _, html) = add("yamada@example.jp", csrf.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("すでに登録されています"), "{html}");
    // Without the CSRF token: refused, nothing stored.
    let (status, _, _) = add("forged@example.jp", "forged".into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(subscribers(&d).await.len(), 1);

    // The CSV preview names the bad rows by their row number and stores nothing.
    let csv = "email,lang,topics\nsato@example.jp,ja,防災\nbroken-address,ja,\nsuzuki@example.jp,en,\nSATO@example.jp,ja,\n";
    let import = |action: &'static str, csrf: String| {
        let (d, admin) = (&d, admin.clone());
        async move {
            post_form(
                d,
                &admin,
                "/subscribers/import",
                &[("csrf", &csrf), ("csv", csv), ("action", action)],
            )
            .await
        }
    };
    let (status, _, html) = import("check", csrf.clone()).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for text in [
        "取り込める行 2件、取り込めない行 2件",
        "3行目・メールアドレス：メールアドレスとして正しくありません",
        "5行目・メールアドレス：ファイルの中に同じアドレスが2回以上あります",
        "broken-address",
        "value=\"import_good\"",
    ] {
        assert!(html.contains(text), "{text}: {html}");
    }
    assert_eq!(subscribers(&d).await.len(), 1, "the preview stores nothing");
    // 「取り込む」 with refused rows stores nothing either, and says so.
    let (status, _, html) = import("import", csrf.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("何も登録していません"), "{html}");
    assert_eq!(subscribers(&d).await.len(), 1);
    // Without the CSRF token: refused.
    let (status, _, _) = import("import_good", "forged".into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(subscribers(&d).await.len(), 1);
    // The good rows only, through the API's import; its counts are shown.
    let (status, location, html) = import("import_good", csrf.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let location = location.unwrap();
    assert!(
        location.contains("created=2") && location.contains("skipped=2"),
        "{location}"
    );
    assert_eq!(
        emails(&subscribers(&d).await),
        vec!["sato@example.jp", "suzuki@example.jp", "yamada@example.jp"]
    );
    let (_, html) = get_page(&d, &admin, &location).await;
    assert!(
        html.contains("新規登録 2件") && html.contains("取り込まなかった行 2件"),
        "{html}"
    );
    // A CSV without its header row is refused as a whole, at the text area.
    let (status, _, html) = post_form(
        &d,
        &admin,
        "/subscribers/import",
        &[
            ("csrf", &csrf),
            ("csv", "kato@example.jp,ja,\n"),
            ("action", "check"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("id=\"csv-error\"") && html.contains("email,lang,topics にしてください"),
        "{html}"
    );

    // Removal: not without the CSRF token; with it, the address is gone.
    let id = subscribers(&d)
        .await
        .iter()
        .find(|s| s["email"] == "yamada@example.jp")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/subscribers/{id}/delete");
    let (status, _, _) = post_form(&d, &admin, &path, &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(subscribers(&d).await.len(), 3);
    let (status, location, _) = post_form(&d, &admin, &path, &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/subscribers?done=removed"));
    assert_eq!(
        emails(&subscribers(&d).await),
        vec!["sato@example.jp", "suzuki@example.jp"]
    );
    // Staff cannot remove either (the API's role).
    let (staff, staff_csrf) = signed_in(&d, &http, "hanako", PASSWORD).await;
    let other = format!(
        "/subscribers/{}/delete",
        subscribers(&d).await[0]["id"].as_i64().unwrap()
    );
    let (status, _, _) = post_form(&d, &staff, &other, &[("csrf", &staff_csrf)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(subscribers(&d).await.len(), 2);
}
on_both!(subscribers_are_added_previewed_imported_and_removed);
