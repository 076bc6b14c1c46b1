//! Issue 14 (the public face): security headers on every HTML page, conditional GETs for
//! `/site/`, connection hygiene, rate limits per client address and per token, trusted
//! proxies, and the API on its own address.

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

/// The site's stable addresses (its index and feeds) answer as soon as the daemon is ready,
/// before the first announcement, even while another channel's healthcheck hangs (an SMTP
/// server that accepts connections and never greets): the site is laid out at start, not
/// when the periodic healthcheck reaches the website channel.
async fn the_site_answers_as_soon_as_the_daemon_is_ready(backend: Backend) {
    // Connections complete in the kernel's backlog; nobody ever says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let d = Daemon::builder(backend)
        .config(&email_config(port))
        .start()
        .await;
    for path in ["/site/index.html", "/site/feed.atom", "/site/feed.rss"] {
        let r = reqwest::get(format!("{}{path}", d.base)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    drop(silent);
}
on_both!(the_site_answers_as_soon_as_the_daemon_is_ready);

/// Connection hygiene: a client that opens a connection and sends half a request is dropped
/// after the header-read timeout, and so is a kept-alive connection that sends no next
/// request (the idle timeout); beyond `server.max_connections` new connections are closed
/// at once; normal requests are served again as soon as slots free.
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
    // A kept-alive connection: one answered request, then silence. It is closed once the
    // timeout has passed, not held open.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: noroshi\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).ends_with("ok") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("an idle kept-alive connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed after the idle timeout, not at once: {:?}",
        started.elapsed()
    );
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

/// `count` requests from one local address; the statuses, in order.
async fn statuses_from(
    from: &str,
    n: usize,
    request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(request(&client).send().await.unwrap().status().as_u16());
    }
    out
}

/// Every public route family is limited per client address (`/site/` and the unsubscribe
/// page, `/webhooks/line`), and the API per token: a burst is throttled with `429` and
/// `Retry-After` while other addresses and other tokens are still served. A `Forwarded`
/// header from an untrusted peer is ignored.
async fn public_routes_per_address_and_the_api_per_token(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__SERVER__SITE_PER_MINUTE", "3")
        .env("NOROSHI__SERVER__WEBHOOK_PER_MINUTE", "2")
        .env("NOROSHI__SERVER__API_PER_MINUTE", "3")
        .start()
        .await;
    let base = d.base.clone();
    let site = |c: &reqwest::Client| {
        c.get(format!("{base}/site/index.html"))
            .header("forwarded", "for=198.51.100.77")
    };
    assert_eq!(
        statuses_from("127.0.0.2", 4, site).await,
        [200, 200, 200, 429]
    );
    assert_eq!(statuses_from("127.0.0.3", 1, site).await, [200]);
    // The unsubscribe page shares the site's share of that address.
    let page = |c: &reqwest::Client| c.get(format!("{base}/unsubscribe?t=unknown"));
    assert_eq!(statuses_from("127.0.0.2", 1, page).await, [429]);
    // LINE's webhook: its own share (an unsigned call is refused, but counted).
    let hook = |c: &reqwest::Client| {
        c.post(format!("{base}/webhooks/line"))
            .header("content-type", "application/json")
            .body("{}")
    };
    let hooks = statuses_from("127.0.0.4", 3, hook).await;
    assert_eq!(hooks[2], 429, "{hooks:?}");
    assert!(hooks[..2].iter().all(|s| *s != 429), "{hooks:?}");
    // The API: per token, whatever the address.
    let api = |token: &'static str| {
        let base = base.clone();
        move |c: &reqwest::Client| c.get(format!("{base}/api/v1/channels")).bearer_auth(token)
    };
    assert_eq!(statuses_from("127.0.0.5", 2, api(STAFF)).await, [200, 200]);
    assert_eq!(statuses_from("127.0.0.6", 1, api(STAFF)).await, [200]);
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/channels"))
        .bearer_auth(STAFF)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("pr-desk"),
        "{problem}"
    );
    assert_eq!(
        statuses_from("127.0.0.5", 1, api(ADMIN)).await,
        [200],
        "another token is served"
    );
}
on_both!(public_routes_per_address_and_the_api_per_token);

/// With `server.admin_bind`, the API and `/metrics` answer only on the admin address and the
/// public routes only on `bind`; health checks answer on both.
async fn the_api_can_listen_apart_from_the_public_routes(backend: Backend) {
    let d = Daemon::builder(backend)
        .env("NOROSHI__SERVER__ADMIN_BIND", "127.0.0.1:0")
        .start()
        .await;
    let admin = d.admin_base();
    assert_ne!(admin, d.base);
    let get = |url: String| {
        let http = d.http.clone();
        async move {
            http.get(url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Public address: no API, no metrics; the public routes and health checks answer.
    assert_eq!(
        get(format!("{}/api/v1/channels", d.base)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("{}/api/v1/openapi.json", d.base)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("{}/metrics", d.base)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("{}/site/index.html", d.base)).await,
        StatusCode::OK
    );
    assert_eq!(
        get(format!("{}/unsubscribe?t=unknown", d.base)).await,
        StatusCode::NOT_FOUND,
        "the unsubscribe page answers (an unknown link is 404 with a page)"
    );
    assert_eq!(get(format!("{}/readyz", d.base)).await, StatusCode::OK);
    // Admin address: the API; no public pages.
    assert_eq!(
        get(format!("{admin}/api/v1/channels")).await,
        StatusCode::OK
    );
    let r = d
        .http
        .post(format!("{admin}/api/v1/announcements"))
        .bearer_auth(STAFF)
        .json(&notice())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        get(format!("{admin}/site/index.html")).await,
        StatusCode::NOT_FOUND
    );
    let r = d
        .http
        .post(format!("{admin}/unsubscribe?t=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "no such route here (the public page answers unknown links in HTML)"
    );
    assert_eq!(get(format!("{admin}/healthz")).await, StatusCode::OK);
}
on_both!(the_api_can_listen_apart_from_the_public_routes);
