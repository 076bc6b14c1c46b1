//! Issue 14 (the public face), the parts done so far: security headers on every HTML page
//! and conditional GETs for `/site/`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;
use crate::on_both;

/// Every HTML page carries a strict CSP, `Referrer-Policy` and a closed `frame-ancestors`;
/// HSTS comes with an HTTPS public URL; `/site/` answers conditional GETs with `304`.
async fn html_pages_are_locked_down_and_site_files_revalidate(backend: Backend) {
    let d = Daemon::builder(backend).start().await;
    let id = d.submit(notice()).await;
    d.wait_status(&id, &["sent"], Duration::from_secs(20)).await;
    let pages = [
        "/site/".to_string(),
        "/site/index.html".to_string(),
        format!("/site/a/{id}.html"),
        "/unsubscribe?t=unknown".to_string(),
    ];
    for path in &pages {
        let r = d
            .http
            .get(format!("{}{path}", d.base))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with("text/html"),
            "{path}"
        );
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(
            h.get("strict-transport-security").is_some(),
            "{path}: the harness's public URL is https"
        );
    }
    // The feeds and pages carry validators; a conditional GET with either is answered 304.
    for path in ["/site/feed.atom", "/site/feed.rss", "/site/index.html"] {
        let r = d
            .http
            .get(format!("{}{path}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let modified = r.headers()["last-modified"].to_str().unwrap().to_string();
        assert_eq!(r.headers()["cache-control"], "no-cache");
        let again = d
            .http
            .get(format!("{}{path}", d.base))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let since = d
            .http
            .get(format!("{}{path}", d.base))
            .header("if-modified-since", &modified)
            .send()
            .await
            .unwrap();
        assert_eq!(since.status(), StatusCode::NOT_MODIFIED, "{path}");
        let other = d
            .http
            .get(format!("{}{path}", d.base))
            .header("if-none-match", "W/\"stale\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK, "{path}");
    }
    // A new announcement changes the feed: the old validator no longer matches.
    let r = d
        .http
        .get(format!("{}/site/feed.atom", d.base))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await; // Last-Modified has 1 s steps
    let id2 = d.submit(notice()).await;
    d.wait_status(&id2, &["sent"], Duration::from_secs(20))
        .await;
    let r = d
        .http
        .get(format!("{}/site/feed.atom", d.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
on_both!(html_pages_are_locked_down_and_site_files_revalidate);

/// Connection hygiene: a client that opens a connection and sends half a request is dropped
/// after the header-read timeout; beyond `server.max_connections` new connections are
/// closed at once; normal requests are served again as soon as slots free.
async fn silent_clients_are_dropped_and_the_connection_cap_holds(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::builder(backend)
        .env("NOROSHI__SERVER__HEADER_READ_TIMEOUT_SECS", "1")
        .env("NOROSHI__SERVER__MAX_CONNECTIONS", "20")
        .start()
        .await;
    let addr = d.base.trim_start_matches("http://").to_string();
    // The harness's readiness check may still hold a keep-alive connection: let it go.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    drop(d.http.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: noroshi\r\n")
            .await
            .unwrap();
        silent.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Over the cap: closed at once.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: noroshi\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("the connection over the cap is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // The silent ones are dropped after the header-read timeout.
    for s in &mut silent {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a silent client is dropped")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    // And normal requests are served.
    let r = fresh
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
on_both!(silent_clients_are_dropped_and_the_connection_cap_holds);

async fn unsubscribe_statuses(
    d: &Daemon,
    from: &str,
    forwarded: Option<&str>,
    n: usize,
) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let mut r = client.post(format!("{}/unsubscribe?t=unknown-{i}", d.base));
        if let Some(f) = forwarded {
            r = r.header("x-forwarded-for", f);
        }
        out.push(r.send().await.unwrap().status().as_u16());
    }
    out
}

/// A burst from one address is throttled while another address is served; a client cannot
/// escape by naming another address in `X-Forwarded-For` unless it is a trusted proxy.
async fn limits_are_per_client_and_only_trusted_proxies_name_the_client(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__SERVER__UNSUBSCRIBE_PER_MINUTE", "3")
        .start()
        .await;
    assert_eq!(
        unsubscribe_statuses(&d, "127.0.0.2", None, 4).await,
        [404, 404, 404, 429]
    );
    assert_eq!(
        unsubscribe_statuses(&d, "127.0.0.3", None, 1).await,
        [404],
        "another address"
    );
    // An untrusted peer's X-Forwarded-For is ignored.
    assert_eq!(
        unsubscribe_statuses(&d, "127.0.0.2", Some("203.0.113.50"), 1).await,
        [429]
    );
    drop(d);
    // Behind a trusted proxy (127.0.0.4 here), the forwarded address is the client.
    let d = Daemon::builder(backend)
        .env("NOROSHI__SERVER__UNSUBSCRIBE_PER_MINUTE", "3")
        .env("NOROSHI__SERVER__TRUSTED_PROXIES", "[\"127.0.0.4\"]")
        .start()
        .await;
    assert_eq!(
        unsubscribe_statuses(&d, "127.0.0.4", Some("203.0.113.60"), 4).await,
        [404, 404, 404, 429]
    );
    assert_eq!(
        unsubscribe_statuses(&d, "127.0.0.4", Some("203.0.113.61"), 1).await,
        [404],
        "another client behind the same proxy"
    );
}
on_both!(limits_are_per_client_and_only_trusted_proxies_name_the_client);
