//! Issue 18: the console's Schedules and Reach screens, over HTTP. A staff person's form
//! becomes the API's schedule (same crontab, next firing shown in Japan time), pause and
//! resume change what the API reports, refusals land on their fields with what was typed
//! kept, and CSRF and roles are enforced. The reach page draws server-side SVG charts with
//! their figures in tables from figures entered through the API, shows KPI progress against
//! its target for the fiscal year, and serves the CSVs.

use chrono::{Datelike, Duration, TimeZone, Timelike};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{add_people, client, get_page, post_form, signed_in, PASSWORD};
use crate::helpers::*;
use crate::on_both;

fn jst() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(9 * 3600).unwrap()
}

/// The next Monday 08:00 in Japan time, as the console writes it in Japanese.
fn next_monday_8am() -> String {
    let now = chrono::Utc::now().with_timezone(&jst());
    let mut day = now.date_naive();
    loop {
        let at = jst()
            .from_local_datetime(&day.and_hms_opt(8, 0, 0).unwrap())
            .unwrap();
        if day.weekday() == chrono::Weekday::Mon && at > now {
            return format!("{}年{}月{}日（月）08:00", at.year(), at.month(), at.day());
        }
        day = day.succ_opt().unwrap();
    }
}

/// The opening tag of the element with this id.
fn tag_of<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

async fn schedules(d: &Daemon) -> Vec<Value> {
    let (status, v) = d.get("/api/v1/schedules").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

fn weekly<'a>(csrf: &'a str, cron: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("name", "燃やせるごみの日（月曜）"),
        ("cron", cron),
        ("timezone", "Asia/Tokyo"),
        ("title", "明日は燃やせるごみの日です"),
        ("body", "朝8時30分までに集積所へ出してください。"),
        ("channels", "website"),
        ("tags", "環境課"),
        ("holidays", "next_day"),
        ("catch_up", "once"),
    ]
}

/// Staff create a weekly schedule through the form; the API then shows it with the same
/// crontab and the page shows its next firing in Japan time; pause, resume, edit and delete
/// change what the API reports; a bad crontab is shown at its field with the typed values
/// kept; a form without CSRF and a viewer are refused and change nothing.
async fn schedules_are_made_and_changed_through_the_console(backend: Backend) {
    let mut d = Daemon::builder(backend).start().await;
    add_people(&mut d, &[("hanako", "staff"), ("taro", "viewer")]).await;
    let http = client();
    let (viewer, viewer_csrf) = signed_in(&d, &http, "taro", PASSWORD).await;
    let (staff, csrf) = signed_in(&d, &http, "hanako", PASSWORD).await;

    // A viewer reads the list but cannot create.
    let (status, html) = get_page(&d, &viewer, "/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<h1>定期発信</h1>") && !html.contains("/schedules/new"),
        "{html}"
    );
    let (status, _, html) = post_form(
        &d,
        &viewer,
        "/schedules",
        &weekly(&viewer_csrf, "0 8 * * 1"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("権限がありません"), "{html}");
    let (status, _) = get_page(&d, &viewer, "/schedules/new").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The editor explains the crontab with an example.
    let (status, html) = get_page(&d, &staff, "/schedules/new").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<code>0 8 * * 1</code>＝毎週月曜 8:00")
            && html.contains("value=\"Asia&#x2f;Tokyo\"")
            && html.contains("<label for=\"cron\">"),
        "{html}"
    );

    // Without its CSRF token: refused, nothing stored.
    let (status, _, _) = post_form(&d, &staff, "/schedules", &weekly("forged", "0 8 * * 1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(schedules(&d).await.is_empty());

    // A crontab with four fields: shown at its field, what was typed kept.
    let (status, _, html) = post_form(&d, &staff, "/schedules", &weekly(&csrf, "0 8 * *")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    let cron = tag_of(&html, "cron");
    assert!(
        cron.contains("aria-invalid=\"true\"")
            && cron.contains("cron-error")
            && cron.contains("value=\"0 8 * *\""),
        "{cron}"
    );
    assert!(html.contains("id=\"cron-error\"") && html.contains("role=\"alert\""));
    assert!(
        tag_of(&html, "title").contains("value=\"明日は燃やせるごみの日です\"")
            && html.contains("朝8時30分までに集積所へ出してください。")
            && tag_of(&html, "title").find("aria-invalid").is_none(),
        "{html}"
    );
    assert!(
        tag_of(&html, "holidays").contains("id=\"holidays\"")
            && html.contains("<option value=\"next_day\" selected>"),
        "{html}"
    );
    assert!(schedules(&d).await.is_empty());

    // The real thing.
    let (status, location, html) =
        post_form(&d, &staff, "/schedules", &weekly(&csrf, "0 8 * * 1")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert!(location.unwrap().starts_with("/schedules#schedule-"));
    let list = schedules(&d).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["cron"], "0 8 * * 1");
    assert_eq!(s["timezone"], "Asia/Tokyo");
    assert_eq!(s["holidays"], "next_day");
    assert_eq!(s["created_by"], "hanako", "made as the signed-in user");
    assert_eq!(s["paused"], false);
    assert_eq!(s["announcement"]["channels"], json!(["website"]));
    assert_eq!(s["announcement"]["tags"], json!(["環境課"]));
    assert_eq!(s["next_firings"].as_array().unwrap().len(), 5);
    let first = chrono::DateTime::parse_from_rfc3339(s["next_firings"][0].as_str().unwrap())
        .unwrap()
        .with_timezone(&jst());
    assert_eq!(
        (first.weekday(), first.hour(), first.minute()),
        (chrono::Weekday::Mon, 8, 0)
    );

    // The list: the crontab in words, the next firing in Japan time.
    let (_, html) = get_page(&d, &staff, "/schedules").await;
    assert!(
        html.contains("毎週月曜 8:00") && html.contains("<code>0 8 * * 1</code>"),
        "{html}"
    );
    let next = next_monday_8am();
    assert!(html.contains(&format!("<li>{next}</li>")), "{next}: {html}");
    assert!(html.contains("祝日の場合は翌日"), "{html}");

    // Pause: the API says paused, and there is nothing planned.
    let act = |session: &str, action: &str, csrf: &str| {
        let (d, session, path, csrf) = (
            &d,
            session.to_string(),
            format!("/schedules/{id}/{action}"),
            csrf.to_string(),
        );
        async move { post_form(d, &session, &path, &[("csrf", &csrf)]).await }
    };
    assert_eq!(act(&staff, "pause", &csrf).await.0, StatusCode::SEE_OTHER);
    let (_, s) = d.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(s["paused"], true, "{s}");
    assert!(s["next_firings"].as_array().unwrap().is_empty());
    let (_, html) = get_page(&d, &staff, "/schedules").await;
    assert!(
        html.contains("停止中のため、発信予定はありません")
            && html.contains(&format!("/schedules/{id}/resume"))
            && !html.contains(&format!("<li>{next}</li>")),
        "{html}"
    );
    // Resume without CSRF, or by a viewer: refused, still paused; then resumed.
    for (session, token) in [(&staff, "forged"), (&viewer, viewer_csrf.as_str())] {
        assert_eq!(act(session, "resume", token).await.0, StatusCode::FORBIDDEN);
        let (_, s) = d.get(&format!("/api/v1/schedules/{id}")).await;
        assert_eq!(s["paused"], true, "{s}");
    }
    assert_eq!(act(&staff, "resume", &csrf).await.0, StatusCode::SEE_OTHER);
    let (_, s) = d.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(s["paused"], false, "{s}");
    assert_eq!(s["next_firings"].as_array().unwrap().len(), 5);

    // The editor shows the stored values; an edit replaces them.
    let (status, html) = get_page(&d, &staff, &format!("/schedules/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        tag_of(&html, "cron").contains("value=\"0 8 * * 1\"")
            && tag_of(&html, "channel-website").contains("checked"),
        "{html}"
    );
    let mut edit = weekly(&csrf, "30 7 * * 1-5");
    edit.retain(|(k, _)| *k != "title");
    edit.push(("title", "明日は資源ごみの日です"));
    edit.push(("starts_at", "2030-01-02T08:00"));
    edit.push(("ends_at", "2030-01-01T08:00"));
    let (status, _, html) = post_form(&d, &staff, &format!("/schedules/{id}"), &edit).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        tag_of(&html, "ends_at").contains("aria-invalid=\"true\"")
            && tag_of(&html, "ends_at").contains("value=\"2030-01-01T08:00\"")
            && tag_of(&html, "cron").contains("value=\"30 7 * * 1-5\""),
        "{html}"
    );
    edit.retain(|(k, _)| *k != "ends_at");
    edit.push(("ends_at", "2031-03-31T23:00"));
    let (status, _, html) = post_form(&d, &staff, &format!("/schedules/{id}"), &edit).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, s) = d.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(s["cron"], "30 7 * * 1-5", "{s}");
    assert_eq!(s["announcement"]["title"], "明日は資源ごみの日です");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(s["starts_at"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339("2030-01-02T08:00:00+09:00").unwrap()
    );
    let first = chrono::DateTime::parse_from_rfc3339(s["next_firings"][0].as_str().unwrap())
        .unwrap()
        .with_timezone(&jst());
    assert_eq!((first.year(), first.hour(), first.minute()), (2030, 7, 30));
    let (_, html) = get_page(&d, &staff, "/schedules").await;
    assert!(
        html.contains("毎週月〜金曜 7:30")
            && html.contains("<li>2030年1月3日（木）07:30</li>")
            && html.contains("2030年1月2日（水）08:00 〜 2031年3月31日（月）23:00"),
        "{html}"
    );

    // Delete: refused without CSRF; then gone from the API.
    assert_eq!(act(&staff, "delete", "").await.0, StatusCode::FORBIDDEN);
    assert_eq!(schedules(&d).await.len(), 1);
    let (status, location, _) = act(&staff, "delete", &csrf).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/schedules"));
    assert!(schedules(&d).await.is_empty());
    let (_, html) = get_page(&d, &staff, "/schedules").await;
    assert!(html.contains("定期発信はまだ登録されていません"), "{html}");
}
on_both!(schedules_are_made_and_changed_through_the_console);

/// The reach page draws an SVG chart with a title, a text alternative and a table of the
/// figures entered through the API; the KPI's progress against its target for the fiscal
/// year is shown in words and a progress bar with its lineage; the CSVs download; admins
/// enter a figure through the form (a missing source refused at its field) and collect now.
async fn reach_is_charted_with_kpis_and_csvs(backend: Backend) {
    let now = chrono::Utc::now().with_timezone(&jst());
    let fy = if now.month() >= 4 {
        now.year()
    } else {
        now.year() - 1
    };
    let kpi = format!(
        r#"
[[kpi]]
name = "広報紙の読者率"
metric = "newsletter.readership_percent"
baseline = 80
target = 90
fiscal_year = {fy}
"#
    );
    let mut d = Daemon::builder(backend).config(&kpi).start().await;
    add_people(&mut d, &[("kanri", "admin"), ("taro", "viewer")]).await;
    let earlier = (now - Duration::days(2)).to_rfc3339();
    for (value, at) in [(84.0, Some(earlier.as_str())), (86.5, None)] {
        let (status, v) = d
            .post(
                "/api/v1/reach",
                ADMIN,
                json!({"channel": "newsletter", "metric": "readership_percent", "value": value,
                    "period": "fiscal_year", "collected_at": at, "note": "広報すざか読者アンケート"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let http = client();
    let (viewer, _) = signed_in(&d, &http, "taro", PASSWORD).await;
    let (status, html) = get_page(&d, &viewer, "/reach").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // A chart drawn on the server, with its title and text alternative.
    let svg_at = html.find("<svg class=\"chart\" role=\"img\"").expect(&html);
    let svg = &html[svg_at..svg_at + html[svg_at..].find("</svg>").unwrap()];
    assert!(
        svg.contains("<title id=\"chart-1-title\">newsletter：読者率（％）</title>")
            && svg.contains("aria-labelledby=\"chart-1-title chart-1-desc\"")
            && svg.contains("<desc id=\"chart-1-desc\">")
            && svg.contains("最新の値は86.5")
            && svg.contains("<polyline class=\"line\" points=\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<circle class=\"dot\"").count(), 2, "{svg}");
    // The figures in a table under it.
    let day = |t: chrono::DateTime<chrono::FixedOffset>| {
        format!("{}年{}月{}日", t.year(), t.month(), t.day())
    };
    let table_at = html[svg_at..].find("<table>").unwrap() + svg_at;
    let table = &html[table_at..table_at + html[table_at..].find("</table>").unwrap()];
    assert!(
        table.contains("<caption>「newsletter：読者率（％）」の数値")
            && table.contains(&format!(
                "<th scope=\"row\">{}</th><td class=\"num\">84</td><td>手入力</td>",
                day(now - Duration::days(2))
            ))
            && table.contains(&format!(
                "<th scope=\"row\">{}</th><td class=\"num\">86.5</td>",
                day(now)
            ))
            && table.contains("広報すざか読者アンケート"),
        "{table}"
    );
    // The KPI for this fiscal year: target, value and progress in words and a bar.
    assert!(
        html.contains(&format!("KPIの進捗：{fy}年度"))
            && html.contains("<h3 id=\"kpi-1-heading\">広報紙の読者率</h3>")
            && html.contains("<dt>目標値</dt><dd>90</dd>")
            && html.contains("<dt>実績値</dt><dd>86.5</dd>")
            && html.contains("進捗 65.0%")
            && html.contains("<progress id=\"kpi-1-progress\" max=\"100\" value=\"65.0\"")
            && html.contains("<code>newsletter.readership_percent</code>")
            && html.contains("latest measurement in the fiscal year"),
        "{html}"
    );
    // Another fiscal year has no KPI.
    let (_, other) = get_page(&d, &viewer, &format!("/reach?fy={}", fy - 1)).await;
    assert!(
        other.contains("この年度の目標（KPI）は設定されていません")
            && !other.contains("kpi-1-heading"),
        "{other}"
    );
    // A viewer has no admin forms.
    assert!(!html.contains("/reach/collect") && !html.contains("/reach/figures"));

    // The CSVs.
    for (path, needles) in [
        (
            "/reach.csv",
            vec![
                "readership_percent",
                "86.5",
                "manual",
                "広報すざか読者アンケート",
            ],
        ),
        ("/kpi.csv", vec!["広報紙の読者率", "86.5", "0.6500"]),
    ] {
        let r = http
            .get(format!("{}{path}", d.base))
            .header("cookie", &viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        assert!(r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename="));
        let text = r.text().await.unwrap();
        for n in needles {
            assert!(text.contains(n), "{path}: {n}: {text}");
        }
    }
    // Not signed in: no CSV.
    let r = http
        .get(format!("{}/reach.csv", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // An admin enters a figure: without its source refused at the field, values kept.
    let (admin, csrf) = signed_in(&d, &http, "kanri", PASSWORD).await;
    let (_, html) = get_page(&d, &admin, "/reach").await;
    assert!(html.contains("今すぐ収集する") && html.contains("action=\"/reach/figures\""));
    let figure = |note: &'static str, csrf: String| {
        vec![
            ("csrf", csrf),
            ("channel", "newsletter".to_string()),
            ("metric", "readership_percent".to_string()),
            ("value", "88.2".to_string()),
            ("period", "fiscal_year".to_string()),
            ("collected_at", String::new()),
            ("note", note.to_string()),
        ]
    };
    let f = figure("", csrf.clone());
    let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, html) = post_form(&d, &admin, "/reach/figures", &pairs).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    let note = tag_of(&html, "figure-note");
    assert!(
        note.contains("aria-invalid=\"true\"") && note.contains("figure-note-error"),
        "{note}"
    );
    assert!(
        tag_of(&html, "figure-value").contains("value=\"88.2\""),
        "{html}"
    );
    let (_, samples) = d.get("/api/v1/reach?channel=newsletter").await;
    assert_eq!(
        samples.as_array().unwrap().len(),
        2,
        "nothing stored: {samples}"
    );
    // Without CSRF: refused.
    let forged = figure("広報すざか読者アンケート（追加）", "forged".into());
    let pairs: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = post_form(&d, &admin, "/reach/figures", &pairs).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let good = figure("広報すざか読者アンケート（追加）", csrf.clone());
    let pairs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, location, _) = post_form(&d, &admin, "/reach/figures", &pairs).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.unwrap().starts_with("/reach?saved=1"));
    let (_, samples) = d.get("/api/v1/reach?channel=newsletter").await;
    assert!(
        samples
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["value"] == 88.2
                && s["entered_by"] == "kanri"
                && s["note"] == "広報すざか読者アンケート（追加）"),
        "{samples}"
    );
    // Collect now (admin only).
    let (status, _, html) = post_form(&d, &admin, "/reach/collect", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("収集の結果"), "{html}");
    let (viewer_session, viewer_csrf) = signed_in(&d, &http, "taro", PASSWORD).await;
    let (status, _, _) = post_form(
        &d,
        &viewer_session,
        "/reach/collect",
        &[("csrf", &viewer_csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
on_both!(reach_is_charted_with_kpis_and_csvs);
