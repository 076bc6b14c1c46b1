//! Observability: `/metrics` counts what happened and shows what waits, passes
//! `promtool check metrics`, carries no secret and is served on the admin address only;
//! JSON logs carry the API's request id on every line about an announcement's deliveries,
//! and no secret, even at debug level.

use std::time::Duration;

use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both;

const SMTP_PASSWORD: &str = "smtp-password-OBSERVE-5d2c";

/// An email channel that must log in to the fake SMTP server with a password from a file.
async fn daemon_with_email(backend: Backend, env: &[(&str, &str)]) -> (FakeSmtp, Daemon) {
    let smtp = FakeSmtp::start(FakeSmtpOptions {
        credentials: Some(("noroshi".into(), SMTP_PASSWORD.into())),
        ..Default::default()
    })
    .await;
    let mut builder = Daemon::builder(backend).config(&email_config(smtp.port()).replace(
        "pool_size = 4",
        "pool_size = 4\nusername = \"noroshi\"\npassword_file = \"{dir}/smtp-password\"",
    ));
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let d = builder
        .start_with_file("smtp-password", &format!("{SMTP_PASSWORD}\n"))
        .await;
    (smtp, d)
}

/// Every secret the test configuration holds.
fn secrets() -> [&'static str; 5] {
    [ADMIN, STAFF, VIEWER, DISASTER, SMTP_PASSWORD]
}

/// The value of the sample `name{labels…}` (every given label matches), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

/// `promtool check …` (`args`, with `input` on its standard input): `Some(report)` when it
/// refuses, `None` when it accepts. Without promtool: SKIPPED, unless
/// `NOROSHI_TEST_PROMTOOL=required` (CI).
fn promtool_refuses(args: &[&str], input: &str) -> Option<String> {
    use std::io::Write;
    let promtool = std::env::var("NOROSHI_TEST_PROMTOOL_BIN").unwrap_or("promtool".into());
    let child = std::process::Command::new(&promtool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert_ne!(
                std::env::var("NOROSHI_TEST_PROMTOOL").as_deref(),
                Ok("required"),
                "promtool is required (NOROSHI_TEST_PROMTOOL=required) but {promtool} does not run: {e}"
            );
            eprintln!("SKIPPED: promtool {args:?} (install Debian's `prometheus`)");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Five subscribers get an announcement; another waits for its scheduled time. `/metrics`
/// on the admin address (no token) counts the five sent, their attempts and latencies,
/// shows the one waiting in the queue and the channel's state, passes promtool, and holds
/// no secret; the public address has no `/metrics`.
async fn metrics_count_what_happened(backend: Backend) {
    let (smtp, mut d) =
        daemon_with_email(backend, &[("NOROSHI__SERVER__ADMIN_BIND", "127.0.0.1:0")]).await;
    // The API is on the admin address only: the harness's client goes there.
    let admin = d.admin_base();
    let public = std::mem::replace(&mut d.base, admin.clone());
    d.add_subscribers(5, "resident").await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    d.submit(json!({"title": "来週のお知らせ", "body": "本文", "channels": ["email"], "scheduled_at": later}))
        .await;
    let id = d
        .submit(json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}))
        .await;
    d.wait_status(&id, &["sent"], Duration::from_secs(60)).await;
    assert_eq!(smtp.message_count(), 5);

    // Not on the public address.
    let r = d.http.get(format!("{public}/metrics")).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::NOT_FOUND);
    // On the admin address, without a token (the contract: Prometheus scrapes it).
    let r = d.http.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let email = [("channel", "email"), ("lane", "normal")];
    let sent = [
        ("channel", "email"),
        ("lane", "normal"),
        ("outcome", "sent"),
    ];
    assert_eq!(
        sample(&text, "noroshi_deliveries_total", &sent),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "noroshi_delivery_attempts_total", &email),
        Some(5.0),
        "{text}"
    );
    for histogram in [
        "noroshi_delivery_latency_from_accepted_seconds_count",
        "noroshi_delivery_latency_from_claim_seconds_count",
    ] {
        assert_eq!(sample(&text, histogram, &email), Some(5.0), "{text}");
    }
    // Every copy took less than the hour the buckets end at.
    let within_an_hour = [("channel", "email"), ("lane", "normal"), ("le", "3600")];
    assert_eq!(
        sample(
            &text,
            "noroshi_delivery_latency_from_accepted_seconds_bucket",
            &within_an_hour
        ),
        Some(5.0),
        "{text}"
    );
    // The scheduled announcement's fan-out waits: one row, not yet expanded.
    assert_eq!(
        sample(&text, "noroshi_queue_depth", &email),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "noroshi_queue_depth",
            &[("channel", "email"), ("lane", "disaster")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "noroshi_channel_state",
            &[("channel", "email"), ("state", "ok")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "noroshi_channel_state",
            &[("channel", "email"), ("state", "paused")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "noroshi_disaster_alert_active", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "noroshi_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("NOROSHI_COMMIT"))
            ]
        ),
        Some(1.0),
        "{text}"
    );
    for secret in secrets() {
        assert!(!text.contains(secret), "{secret} is in /metrics:\n{text}");
    }
    if let Some(report) = promtool_refuses(&["check", "metrics"], &text) {
        panic!("promtool check metrics refused /metrics:\n{report}\n{text}");
    }
}
on_both!(metrics_count_what_happened);

/// With `[log] format = "json"` at debug level, every line is one JSON object; every line
/// naming an announcement carries, as `request_id`, the id the API answered with (the
/// caller's `X-Request-Id`, or the one the daemon made); no secret is in the log.
async fn json_logs_carry_the_request_id(backend: Backend) {
    let (smtp, d) = daemon_with_email(
        backend,
        &[("NOROSHI__LOG__FORMAT", "json"), ("NOROSHI_LOG", "debug")],
    )
    .await;
    d.add_subscribers(3, "resident").await;
    let submit = |request_id: Option<&'static str>| {
        let (http, url) = (d.http.clone(), format!("{}/api/v1/announcements", d.base));
        async move {
            let mut r = http
                .post(url)
                .bearer_auth(STAFF)
                .json(&json!({"title": "お知らせ", "body": "本文", "channels": ["email"]}));
            if let Some(rid) = request_id {
                r = r.header("x-request-id", rid);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let answered = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            (id, answered)
        }
    };
    let (given, given_answer) = submit(Some("obs-7f3e-given-by-the-caller")).await;
    assert_eq!(given_answer, "obs-7f3e-given-by-the-caller");
    let (made, made_answer) = submit(None).await;
    assert!(!made_answer.is_empty());
    for id in [&given, &made] {
        d.wait_status(id, &["sent"], Duration::from_secs(60)).await;
    }
    assert_eq!(smtp.message_count(), 6);
    // The last outcomes' lines are written after the status is read; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = d.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "every line has a timestamp and a level"
    );
    for (id, request_id) in [(&given, &given_answer), (&made, &made_answer)] {
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| l["announcement"] == id.as_str())
            .collect();
        assert!(
            about.len() >= 2,
            "lines about the deliveries of {id}:\n{logs}"
        );
        for line in about {
            assert_eq!(
                line["request_id"],
                request_id.as_str(),
                "a line about {id} without its request id: {line}"
            );
        }
    }
    for secret in secrets() {
        assert!(!logs.contains(secret), "{secret} is in the log");
    }
}
on_both!(json_logs_carry_the_request_id);

/// The shipped alert rules pass `promtool check rules`, and every metric they use is one
/// the daemon exposes (named in `docs/observability.md`'s table).
#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("deploy/prometheus/noroshi-alerts.yml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/observability.md")).unwrap();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("noroshi_") {
            let family = word.trim_end_matches("_total");
            assert!(
                doc.contains(&format!("`{family}")),
                "{word} (in the rules) is not in docs/observability.md"
            );
        }
    }
    if let Some(report) = promtool_refuses(&["check", "rules", rules.to_str().unwrap()], "") {
        panic!(
            "promtool check rules refused {}:\n{report}",
            rules.display()
        );
    }
}
