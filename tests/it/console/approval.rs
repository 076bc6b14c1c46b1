//! The console's approval step (`[console] approval = "staff"`) and images with their
//! alternative text, over HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{add_people, client, get_page, post_form, signed_in, PASSWORD};
use crate::helpers::*;
use crate::on_both;

async fn a_staff_post_waits_for_a_second_person(backend: Backend) {
    let mut d = Daemon::builder(backend)
        .config("[console]\napproval = \"staff\"\n")
        .start()
        .await;
    add_people(&mut d, &[("hanako", "staff"), ("jiro", "staff")]).await;
    let http = client();
    let (hanako, h_csrf) = signed_in(&d, &http, "hanako", PASSWORD).await;
    let (jiro, j_csrf) = signed_in(&d, &http, "jiro", PASSWORD).await;
    let compose = |title: &'static str, csrf: String| {
        vec![
            ("csrf", csrf),
            ("title", title.to_string()),
            (
                "body",
                "本日15時、須坂市役所に避難所を開設しました。".to_string(),
            ),
            ("channels", "website".to_string()),
            ("action", "send".to_string()),
        ]
    };
    let send = |session: String, fields: Vec<(&'static str, String)>| {
        let (http, base) = (http.clone(), d.base.clone());
        async move {
            let r = http
                .post(format!("{base}/compose"))
                .header("cookie", session)
                .form(&fields)
                .send()
                .await
                .unwrap();
            let location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (r.status(), location, r.text().await.unwrap())
        }
    };
    // The form says a staff post needs approval.
    let (_, form) = get_page(&d, &hanako, "/compose").await;
    assert!(form.contains("承認を依頼する"), "{form}");

    // Returned with a comment: nothing goes out, and the author reads why.
    let (status, location, _) = send(hanako.clone(), compose("返される投稿", h_csrf.clone())).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = location.unwrap();
    let id = page.trim_start_matches("/announcements/").to_string();
    let v = d.announcement(&id).await;
    assert_eq!(v["status"], "awaiting_approval", "{v}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(d.announcement(&id).await["deliveries"][0]["sent"], 0);
    let (_, html) = get_page(&d, &hanako, &page).await;
    assert!(
        html.contains("承認待ち") && html.contains("自分では承認できません"),
        "{html}"
    );
    assert!(
        !html.contains("/approve"),
        "no approve button for its author: {html}"
    );
    let (status, _, html) = post_form(
        &d,
        &hanako,
        &format!("{page}/approve"),
        &[("csrf", &h_csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(
        html.contains("別の担当者に承認を依頼してください"),
        "{html}"
    );
    let (_, html) = get_page(&d, &jiro, &page).await;
    assert!(html.contains(&format!("{page}/approve")), "{html}");
    let (status, _, _) = post_form(
        &d,
        &jiro,
        &format!("{page}/return"),
        &[("csrf", &j_csrf), ("comment", " ")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = post_form(
        &d,
        &jiro,
        &format!("{page}/return"),
        &[("csrf", "forged"), ("comment", "日付を確認してください")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(d.announcement(&id).await["status"], "awaiting_approval");
    let (status, location, _) = post_form(
        &d,
        &jiro,
        &format!("{page}/return"),
        &[("csrf", &j_csrf), ("comment", "日付を確認してください")],
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some(page.as_str()))
    );
    assert_eq!(d.announcement(&id).await["status"], "cancelled");
    let (_, html) = get_page(&d, &hanako, &page).await;
    assert!(
        html.contains("差し戻されました") && html.contains("日付を確認してください"),
        "{html}"
    );
    let (status, _, _) =
        post_form(&d, &jiro, &format!("{page}/approve"), &[("csrf", &j_csrf)]).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a returned post cannot be approved"
    );

    // Approved by the other person: it goes out.
    let (_, location, _) = send(hanako.clone(), compose("承認される投稿", h_csrf.clone())).await;
    let page = location.unwrap();
    let id = page.trim_start_matches("/announcements/").to_string();
    let (status, location, _) =
        post_form(&d, &jiro, &format!("{page}/approve"), &[("csrf", &j_csrf)]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some(page.as_str()))
    );
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;

    // A staff token's post through the API waits too; an admin's does not.
    let (status, body) = d.post("/api/v1/announcements", STAFF, notice()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");
    let (status, body) = d.post("/api/v1/announcements", ADMIN, notice()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_ne!(body["status"], "awaiting_approval", "{body}");
    let (_, list) = d
        .get("/api/v1/announcements?status=awaiting_approval")
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}
on_both!(a_staff_post_waits_for_a_second_person);

async fn images_need_their_alternative_text(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    add_people(&mut d, &[("hanako", "staff")]).await;
    let (session, csrf) = signed_in(&d, &client(), "hanako", PASSWORD).await;
    let fields = |alt: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("title", "避難所の地図".to_string()),
            ("body", "地図をご覧ください。".to_string()),
            ("channels", "website".to_string()),
            (
                "image_url",
                "https://www.city.example.jp/map.png".to_string(),
            ),
            ("image_alt", alt.to_string()),
            ("action", "preview".to_string()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let (http, base, session) = (client(), d.base.clone(), session.clone());
        async move {
            let r = http
                .post(format!("{base}/compose"))
                .header("cookie", session)
                .form(&fields)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    // Without words for the image: refused at the image's field, the values kept.
    let (status, html) = post(fields("")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("代替テキストを入力してください"), "{html}");
    assert!(
        html.contains(
            "id=\"image-alt-1\" name=\"image_alt\" value=\"\" size=\"40\" aria-invalid=\"true\""
        ),
        "{html}"
    );
    assert!(
        html.contains("name=\"image_url\" type=\"url\" value=\"https:&#x2f;&#x2f;www.city.example.jp&#x2f;map.png\""),
        "{html}"
    );
    // With them, the website's preview has no warning about the image.
    let (status, html) = post(fields("須坂市役所から避難所までの地図")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(!html.contains("no alternative text"), "{html}");
    // The API takes both forms, and refuses a description longer than X allows.
    let long = "あ".repeat(1001);
    let (status, body) = d
        .post(
            "/api/v1/preview",
            STAFF,
            json!({"title": "t", "body": "b", "channels": ["website"],
                   "images": ["https://www.city.example.jp/a.png", {"url": "https://www.city.example.jp/b.png", "alt": long}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "images[1].alt", "{body}");
}
on_both!(images_need_their_alternative_text);
