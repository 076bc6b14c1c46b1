//! Submitters' image URLs cannot point the daemon at the city's own network (#12 A.6): an
//! image whose host is a literal loopback, private, link-local, … address is refused when it
//! is submitted, unless `[security] allow_private_fetch = true` (test setups with loopback
//! fakes). Names that resolve to such addresses are refused by the adapters at fetch time.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::on_both;

const PUBLIC_IMAGE: &str = "https://www.city.suzaka.nagano.jp/images/map.png";

async fn private_image_addresses_are_refused_when_submitted(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["https://127.0.0.1/a.png"], "images[0]"),
        (vec![PUBLIC_IMAGE, "https://[::1]/x.png"], "images[1]"),
        (vec!["https://10.0.0.5/x"], "images[0]"),
        (vec!["https://169.254.169.254/latest"], "images[0]"),
        (vec!["https://[::ffff:192.168.1.10]/x.png"], "images[0]"),
        (vec!["https://100.64.0.1/x.png"], "images[0]"),
        (vec!["https://[fd00::1]/x.png"], "images[0]"),
        // 2130706433 is 127.0.0.1 spelled as one number: URL parsing makes it the literal.
        (vec!["https://2130706433/a.png"], "images[0]"),
    ];
    for (images, field) in &cases {
        for path in ["/api/v1/announcements", "/api/v1/preview"] {
            let (status, p) = d
                .post(
                    path,
                    STAFF,
                    json!({"title": "避難所地図", "body": "添付の地図をご覧ください", "images": images}),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {images:?}: {p}"
            );
            assert_eq!(p["field"], *field, "{path} {images:?}: {p}");
            assert!(
                p["detail"].as_str().unwrap().contains("public"),
                "the detail says why: {p}"
            );
        }
    }
    assert_eq!(d.count_announcements().await, 0, "nothing is stored");

    // A public host is accepted: no DNS at accept time, the adapters check at fetch time.
    let (status, p) = d
        .post(
            "/api/v1/announcements",
            STAFF,
            json!({"title": "避難所地図", "body": "本文", "images": [PUBLIC_IMAGE]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{p}");

    // With `[security] allow_private_fetch = true` a loopback image is accepted.
    let open = Daemon::builder(backend)
        .config("[security]\nallow_private_fetch = true")
        .start()
        .await;
    let (status, p) = open
        .post(
            "/api/v1/announcements",
            STAFF,
            json!({"title": "避難所地図", "body": "本文", "images": ["https://127.0.0.1/a.png"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{p}");
}
on_both!(private_image_addresses_are_refused_when_submitted);
