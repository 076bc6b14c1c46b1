//! The X adapter over real HTTP against the fake: success, every error class, rate limits,
//! caps, duplicates, OAuth 2.0 refresh, timeouts and reconcile, images, threads, reach.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use noroshi_channel_core::fake::{RecordedRequest, ScriptedResponse};
use noroshi_channel_core::{
    Announcement, BuildEnv, Channel, DeliveryContext, DeliveryError, DeliveryUnit, ErrorClass,
    Priority, Receipt, SecretString,
};
use noroshi_x::fake::{self, FakeX};
use noroshi_x::{oauth, Config, LongText, XChannel};

fn env(timeout_ms: u64) -> BuildEnv {
    BuildEnv {
        http: reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .build()
            .unwrap(),
        data_dir: std::env::temp_dir(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    }
}

fn channel(config: &Config) -> Arc<XChannel> {
    noroshi_x::build_x(config, &env(5_000)).unwrap()
}

fn announcement(title: &str, body: &str) -> Announcement {
    Announcement {
        id: "0193-ann".into(),
        title: title.into(),
        body: body.into(),
        link: None,
        priority: Priority::Disaster,
        lang: "ja".into(),
        tags: vec![],
        exercise: false,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: None,
        published_at: Utc::now(),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    }
}

fn ctx(delivery_id: &str, attempt: u32) -> DeliveryContext {
    DeliveryContext {
        delivery_id: delivery_id.into(),
        announcement_id: "0193-ann".into(),
        idempotency_key: format!("key-{delivery_id}"),
        attempt,
        priority: Priority::Disaster,
        exercise: false,
        request_id: None,
        first_attempt_at: None,
    }
}

fn unit_for(ch: &XChannel, a: &Announcement) -> DeliveryUnit {
    let r = ch.render(a).unwrap();
    assert_eq!(r.units.len(), 1);
    DeliveryUnit {
        payload: r.units[0].clone(),
        recipient: None,
    }
}

async fn post(ch: &XChannel, text: &str, id: &str, attempt: u32) -> Result<Receipt, DeliveryError> {
    let unit = unit_for(ch, &announcement(text, ""));
    ch.deliver(&unit, &ctx(id, attempt)).await
}

/// Recomputes a recorded request's OAuth 1.0a signature from the URL it reached.
fn signature_verifies(
    fake: &FakeX,
    req: &RecordedRequest,
    consumer_secret: &str,
    token_secret: &str,
) -> bool {
    let header = req.header("authorization").expect("Authorization header");
    let params = oauth::parse_authorization_header(header).expect("OAuth header");
    let mut url = format!("{}{}", fake.base_url(), req.path);
    if let Some(q) = &req.query {
        url = format!("{url}?{q}");
    }
    let url = url::Url::parse(&url).unwrap();
    let mut signed = oauth::query_params(&url);
    signed.extend(
        params
            .iter()
            .filter(|(k, _)| k != "oauth_signature")
            .cloned(),
    );
    let base = oauth::signature_base_string(&req.method, &oauth::base_string_uri(&url), &signed);
    let sig = params
        .iter()
        .find(|(k, _)| k == "oauth_signature")
        .unwrap()
        .1
        .clone();
    oauth::sign(&base, consumer_secret, token_secret) == sig
}

fn class(e: &DeliveryError) -> &'static str {
    e.class.as_str()
}

fn secrets(fake: &FakeX) -> Vec<String> {
    let c = fake::FakeCredentials::default();
    let (a, r) = fake.x.oauth2_tokens();
    vec![
        c.consumer_key,
        c.consumer_secret,
        c.access_token,
        c.access_token_secret,
        c.oauth2_client_secret.unwrap(),
        a,
        r,
    ]
}

/// B.2: the adapter reads the time from the clock the daemon hands it at build (here the
/// OAuth 1.0a timestamp, inside the fake's five-minute window).
#[tokio::test]
async fn build_takes_its_clock_from_the_build_env() {
    let fake = fake::start().await;
    let at = Utc::now() - chrono::Duration::seconds(90);
    let env = BuildEnv {
        clock: Arc::new(move || at),
        ..env(5_000)
    };
    let ch = noroshi_x::build_x(&fake.config(), &env).unwrap();
    post(&ch, "時計のテスト", "d-clock", 1).await.unwrap();
    let reqs = fake.server.state.requests_to("/2/tweets");
    let header = reqs[0].header("authorization").unwrap();
    let params = oauth::parse_authorization_header(header).unwrap();
    let ts = params
        .iter()
        .find(|(k, _)| k == "oauth_timestamp")
        .unwrap()
        .1
        .clone();
    assert_eq!(ts, at.timestamp().to_string());
}

#[tokio::test]
async fn posts_with_a_verifiable_oauth1_signature() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    let text = "【須坂市】避難所を開設しました。詳しくは https://www.city.suzaka.nagano.jp/ をご覧ください";
    let unit = unit_for(&ch, &{
        let mut a = announcement("x", "");
        a.text_override = Some(text.into());
        a
    });
    let receipt = ch.deliver(&unit, &ctx("d1", 1)).await.unwrap();
    let posts = fake.x.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].text, text);
    assert_eq!(receipt.remote_id.as_deref(), Some(posts[0].id.as_str()));
    assert!(!receipt.already_sent);

    let reqs = fake.server.state.requests_to("/2/tweets");
    assert_eq!(reqs.len(), 1);
    let c = fake::FakeCredentials::default();
    assert!(signature_verifies(
        &fake,
        &reqs[0],
        &c.consumer_secret,
        &c.access_token_secret
    ));
    // A wrong secret does not verify: the check above can fail.
    assert!(!signature_verifies(
        &fake,
        &reqs[0],
        "other",
        &c.access_token_secret
    ));
    let h = reqs[0].header("authorization").unwrap();
    assert!(
        h.starts_with("OAuth oauth_consumer_key=\"fake-consumer-key\", oauth_nonce=\""),
        "{h}"
    );
    assert!(
        h.contains("oauth_signature_method=\"HMAC-SHA1\"") && h.contains("oauth_version=\"1.0\"")
    );
    assert!(reqs[0]
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(reqs[0].json(), serde_json::json!({"text": text}));
    assert!(reqs[0].query.is_none(), "no credentials in the URL");

    let status = ch.status();
    let names: Vec<&str> = status.budgets.iter().map(|b| b.name.as_str()).collect();
    assert!(
        names.contains(&"POST /2/tweets (15 min window)"),
        "{names:?}"
    );
    assert!(names.contains(&"posts per 24 h (user)") && names.contains(&"posts per 24 h (app)"));
    let w = status
        .budgets
        .iter()
        .find(|b| b.name.starts_with("POST"))
        .unwrap();
    assert_eq!((w.limit, w.remaining), (Some(100), Some(99)));

    ch.healthcheck().await.unwrap();
    let me = fake.server.state.requests_to("/2/users/me");
    assert!(signature_verifies(
        &fake,
        &me[0],
        &c.consumer_secret,
        &c.access_token_secret
    ));
}

#[tokio::test]
async fn wrong_secret_is_auth_and_no_secret_leaks() {
    let fake = fake::start().await;
    let mut config = fake.config();
    config.consumer_secret = Some(SecretString::from("wrong-consumer-secret-123".to_string()));
    let ch = channel(&config);
    let e = post(&ch, "テスト投稿", "d1", 1).await.unwrap_err();
    assert_eq!(class(&e), "auth");
    assert_eq!(e.status, Some(401));
    assert!(e.message.contains("Unauthorized"));
    let e2 = ch.healthcheck().await.unwrap_err();
    assert_eq!(class(&e2), "auth");
    for s in secrets(&fake)
        .iter()
        .chain(["wrong-consumer-secret-123".to_string()].iter())
    {
        assert!(!e.to_string().contains(s.as_str()), "secret in error: {e}");
        assert!(!format!("{e:?}").contains(s.as_str()));
    }
    assert!(fake.x.posts().is_empty());
    assert!(!format!("{config:?}").contains("wrong-consumer-secret-123"));
}

#[tokio::test]
async fn rate_limit_reset_becomes_retry_after() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    fake.x.set_window("POST /2/tweets", 100, 0, 120);
    let e = post(&ch, "お知らせ", "d1", 1).await.unwrap_err();
    match e.class {
        ErrorClass::RateLimited {
            retry_after: Some(d),
        } => {
            assert!((118..=120).contains(&d.as_secs()), "{d:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.status, Some(429));
    let b = ch.status();
    let w = b
        .budgets
        .iter()
        .find(|b| b.name.starts_with("POST /2/tweets"))
        .unwrap();
    assert_eq!(w.remaining, Some(0));
    assert!(b.warnings.iter().any(|w| w.contains("exhausted")));
    // After the window resets the same delivery goes through.
    fake.x.set_window("POST /2/tweets", 100, 100, 900);
    post(&ch, "お知らせ", "d1", 2).await.unwrap();
}

#[tokio::test]
async fn daily_cap_and_credits_are_quota() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    fake.x.set_user_24h(2400, 0, 3600);
    let e = post(&ch, "お知らせ1", "d1", 1).await.unwrap_err();
    match e.class {
        ErrorClass::Quota { until: Some(t) } => {
            assert!(((t - Utc::now()).num_seconds() - 3600).abs() <= 2)
        }
        other => panic!("{other:?}"),
    }
    let b = ch.status();
    assert!(b
        .budgets
        .iter()
        .any(|b| b.name == "posts per 24 h (user)" && b.remaining == Some(0)));
    fake.x.set_user_24h(2400, 2400, 86_400);
    fake.x.set_app_24h(10_000, 0, 600);
    assert!(matches!(
        post(&ch, "お知らせ2", "d2", 1).await.unwrap_err().class,
        ErrorClass::Quota { until: Some(_) }
    ));
    fake.x.set_app_24h(10_000, 10_000, 86_400);
    fake.x.set_credits_depleted(true);
    let e = post(&ch, "お知らせ3", "d3", 1).await.unwrap_err();
    assert_eq!((class(&e), e.status), ("quota", Some(402)));
    fake.x.set_credits_depleted(false);
    post(&ch, "お知らせ3", "d3", 2).await.unwrap();
}

#[tokio::test]
async fn scripted_errors_map_to_classes() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    let cases = [
        (
            400,
            r#"{"title":"Invalid Request","detail":"One or more parameters to your request was invalid.","type":"https://api.twitter.com/2/problems/invalid-request"}"#,
            "permanent",
        ),
        (
            403,
            r#"{"title":"Client Forbidden","type":"https://api.twitter.com/2/problems/client-forbidden","reason":"client-not-enrolled"}"#,
            "auth",
        ),
        (
            404,
            r#"{"title":"Not Found Error","type":"https://api.twitter.com/2/problems/resource-not-found"}"#,
            "permanent",
        ),
        (
            503,
            r#"{"title":"Service Unavailable","type":"about:blank","status":503}"#,
            "uncertain",
        ),
        (500, "", "uncertain"),
    ];
    for (i, (status, body, want)) in cases.iter().enumerate() {
        fake.server.state.script(ScriptedResponse {
            status: *status,
            body: body.to_string(),
            path_suffix: Some("/2/tweets".into()),
            ..Default::default()
        });
        let e = post(&ch, &format!("告知{i}"), &format!("d{i}"), 1)
            .await
            .unwrap_err();
        assert_eq!(class(&e), *want, "{status}");
        assert_eq!(e.status, Some(*status));
    }
    // A read that fails with 5xx is transient, not uncertain.
    fake.server.state.script(ScriptedResponse {
        status: 502,
        path_suffix: Some("/2/users/me".into()),
        ..Default::default()
    });
    assert_eq!(class(&ch.healthcheck().await.unwrap_err()), "transient");
    // Connection refused before sending: transient.
    let mut config = fake.config();
    config.api_base = "http://127.0.0.1:9".into();
    let dead = channel(&config);
    assert_eq!(
        class(&post(&dead, "告知", "dx", 1).await.unwrap_err()),
        "transient"
    );
}

#[tokio::test]
async fn duplicate_content_after_a_lost_answer_is_already_sent() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    // Applied, but the client hears a 503: uncertain.
    fake.server.state.script(ScriptedResponse {
        status: 503,
        path_suffix: Some("/2/tweets".into()),
        after_applying: true,
        ..Default::default()
    });
    let e = post(&ch, "避難指示を発令しました", "d1", 1)
        .await
        .unwrap_err();
    assert_eq!(class(&e), "uncertain");
    assert_eq!(fake.x.posts().len(), 1);
    // The queue resends (say reconcile was skipped): X answers 403 duplicate, the adapter
    // finds the post on the timeline.
    let r = post(&ch, "避難指示を発令しました", "d1", 2).await.unwrap();
    assert!(r.already_sent);
    assert_eq!(r.remote_id.as_deref(), Some(fake.x.posts()[0].id.as_str()));
    assert_eq!(fake.x.posts().len(), 1);
    let dup = fake.server.state.requests_to("/2/tweets");
    assert_eq!(dup.len(), 2);
    assert!(fake
        .server
        .state
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/tweets") && r.path.starts_with("/2/users/")));
}

#[tokio::test]
async fn duplicate_of_an_old_post_is_permanent() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    fake.x
        .add_post("今週のごみ収集のお知らせ", chrono::Duration::days(7));
    let e = post(&ch, "今週のごみ収集のお知らせ", "d1", 1)
        .await
        .unwrap_err();
    assert_eq!((class(&e), e.status), ("permanent", Some(403)));
    assert!(e.message.contains("duplicate"));
}

#[tokio::test]
async fn timeout_is_uncertain_and_reconcile_finds_the_post() {
    let fake = fake::start().await;
    let ch = noroshi_x::build_x(&fake.config(), &env(300)).unwrap();
    let a = {
        let mut a = announcement("避難所開設", "須坂市役所に避難所を開設しました & 受付中");
        a.link = Some("https://www.city.suzaka.nagano.jp/hinan/".into());
        a
    };
    let unit = unit_for(&ch, &a);
    // Nothing posted yet: reconcile says "send".
    assert!(ch.reconcile(&unit, &ctx("d1", 1)).await.unwrap().is_none());
    fake.server.state.script(ScriptedResponse {
        status: 201,
        path_suffix: Some("/2/tweets".into()),
        delay_ms: 1_000,
        after_applying: true,
        ..Default::default()
    });
    let e = ch.deliver(&unit, &ctx("d1", 1)).await.unwrap_err();
    assert_eq!(class(&e), "uncertain", "{e}");
    assert_eq!(fake.x.posts().len(), 1);
    // X shows the link as t.co and escapes "&": the match still holds.
    let r = ch
        .reconcile(&unit, &ctx("d1", 2))
        .await
        .unwrap()
        .expect("found");
    assert!(r.already_sent);
    assert_eq!(r.remote_id.as_deref(), Some(fake.x.posts()[0].id.as_str()));
    let timeline = fake
        .server
        .state
        .requests_to(&format!("/2/users/{}/tweets", fake.x.user_id()));
    let q = timeline.last().unwrap().query.clone().unwrap();
    assert!(
        q.contains("start_time=") && q.contains("max_results=5"),
        "{q}"
    );
}

#[tokio::test]
async fn oauth2_refreshes_on_401_and_rotates() {
    let fake = fake::start().await;
    let config = fake.config_oauth2();
    let ch = channel(&config);
    post(&ch, "OAuth2で投稿", "d1", 1).await.unwrap();
    let first = fake.server.state.requests_to("/2/tweets");
    assert_eq!(
        first[0].header("authorization"),
        Some("Bearer fake-oauth2-access-0")
    );

    fake.x.expire_access_token();
    let r = post(&ch, "期限切れ後の投稿", "d2", 1).await.unwrap();
    assert!(r.remote_id.is_some());
    assert_eq!(fake.x.posts().len(), 2);
    let token_reqs = fake.server.state.requests_to("/2/oauth2/token");
    assert_eq!(token_reqs.len(), 1);
    let t = &token_reqs[0];
    assert!(t.body_text.contains("grant_type=refresh_token"));
    assert!(t.body_text.contains("refresh_token=fake-oauth2-refresh-0"));
    assert!(t.header("authorization").unwrap().starts_with("Basic "));
    let tweets = fake.server.state.requests_to("/2/tweets");
    assert_eq!(tweets.len(), 3, "401, then the resend");
    assert_eq!(
        tweets[2].header("authorization"),
        Some("Bearer fake-oauth2-access-1")
    );
    let tokens = ch.oauth2_tokens().unwrap();
    use noroshi_channel_core::ExposeSecret;
    assert_eq!(
        tokens.refresh_token.unwrap().expose_secret(),
        "fake-oauth2-refresh-1"
    );
    // The rotated pair is offered to the daemon for safe keeping…
    let saved = ch
        .rotated_credentials()
        .expect("rotated credentials to keep");
    assert!(saved.expose_secret().contains("fake-oauth2-refresh-1"));
    assert!(!format!("{saved:?}").contains("fake-oauth2-refresh-1"));

    // A second instance still holding the rotated-away refresh token is logged out: auth.
    let stale = channel(&config);
    fake.x.expire_access_token();
    let e = post(&stale, "古いトークン", "d3", 1).await.unwrap_err();
    assert_eq!(class(&e), "auth");
    assert!(e.message.contains("invalid_request"));
    for s in [
        "fake-oauth2-refresh-0",
        "fake-oauth2-refresh-1",
        "fake-oauth2-access-0",
        "fake-oauth2-access-1",
        "fake-client-secret-5d2e",
    ] {
        assert!(!e.to_string().contains(s));
    }
    // …and a restarted adapter given it back works again.
    let restarted = channel(&config);
    assert!(restarted.restore_credentials(&saved));
    post(&restarted, "再起動後", "d4", 1)
        .await
        .expect("the kept pair works");
    // Credentials saved for another configured token are not taken.
    let mut other = config.clone();
    other.oauth2_refresh_token = Some(noroshi_channel_core::SecretString::from(
        "a-new-configured-token".to_string(),
    ));
    assert!(!channel(&other).restore_credentials(&saved));
}

fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.resize(len, 7);
    v
}

#[tokio::test]
async fn images_are_fetched_uploaded_and_attached() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    fake.x.serve_image("map.png", "image/png", png(2048));
    fake.x.serve_image(
        "photo.jpg",
        "image/jpeg",
        [vec![0xFF, 0xD8, 0xFF], vec![1; 4000]].concat(),
    );
    let mut a = announcement("避難所地図", "添付の地図をご覧ください");
    a.images = vec![fake.image_url("map.png"), fake.image_url("photo.jpg")];
    let unit = unit_for(&ch, &a);
    ch.deliver(&unit, &ctx("d1", 1)).await.unwrap();
    let uploads = fake.server.state.requests_to("/2/media/upload");
    assert_eq!(uploads.len(), 2);
    let c = fake::FakeCredentials::default();
    for u in &uploads {
        assert!(u
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data"));
        assert!(u
            .body_text
            .contains("name=\"media_category\"\r\n\r\ntweet_image"));
        assert!(signature_verifies(
            &fake,
            u,
            &c.consumer_secret,
            &c.access_token_secret
        ));
    }
    let posts = fake.x.posts();
    assert_eq!(posts[0].media_ids.len(), 2);
    let sent = fake.server.state.requests_to("/2/tweets")[0].json();
    assert_eq!(sent["media"]["media_ids"].as_array().unwrap().len(), 2);

    // Over 5 MB: permanent, nothing posted.
    fake.x
        .serve_image("huge.png", "image/png", png(5 * 1024 * 1024 + 1));
    let mut a = announcement("大きな画像", "本文");
    a.images = vec![fake.image_url("huge.png")];
    let e = ch
        .deliver(&unit_for(&ch, &a), &ctx("d2", 1))
        .await
        .unwrap_err();
    assert_eq!(class(&e), "permanent");
    assert!(e.message.contains("5 MB"));
    // A missing image: permanent too.
    a.images = vec![fake.image_url("missing.png")];
    assert_eq!(
        class(
            &ch.deliver(&unit_for(&ch, &a), &ctx("d3", 1))
                .await
                .unwrap_err()
        ),
        "permanent"
    );
    assert_eq!(fake.x.posts().len(), 1);
}

/// A host name is checked where it is resolved: `localhost` reaches the fake on 127.0.0.1,
/// so with private fetches not allowed (the default) the image is refused before any byte
/// is requested, as is the literal address; nothing is uploaded or posted.
#[tokio::test]
async fn image_hosts_that_resolve_to_private_addresses_are_refused_at_fetch_time() {
    let fake = fake::start().await;
    fake.x.serve_image("map.png", "image/png", png(2048));
    let mut config = fake.config();
    config.image_fetch.allow_private = false;
    let ch = channel(&config);
    let literal = fake.image_url("map.png");
    let by_name = literal.replace("127.0.0.1", "localhost");
    for (i, url) in [by_name.clone(), literal].into_iter().enumerate() {
        let mut a = announcement("避難所地図", "添付の地図をご覧ください");
        a.images = vec![url.clone()];
        let e = ch
            .deliver(&unit_for(&ch, &a), &ctx(&format!("p{i}"), 1))
            .await
            .expect_err("an image on a private address must be refused");
        assert_eq!(class(&e), "permanent", "{url}: {e:?}");
        assert!(e.message.contains("not a public address"), "{url}: {e:?}");
    }
    assert!(fake
        .server
        .state
        .requests_to("/__fake/media-host/map.png")
        .is_empty());
    assert!(fake.server.state.requests_to("/2/media/upload").is_empty());
    assert!(fake.x.posts().is_empty());

    // The fake's own config allows private fetches (it lives on loopback): the same name
    // is fetched then.
    let open = channel(&fake.config());
    let mut a = announcement("避難所地図", "添付の地図をご覧ください");
    a.images = vec![by_name];
    open.deliver(&unit_for(&open, &a), &ctx("p-open", 1))
        .await
        .unwrap();
    assert_eq!(fake.x.posts()[0].media_ids.len(), 1);
}

/// An image host that sends no `Content-Length`: a PNG in chunks, more than X's 5 MB, then
/// nothing (the body never ends). The download stops as soon as it passes the cap: the
/// adapter answers at once and hangs up, without waiting for a body it would refuse.
#[tokio::test]
async fn an_image_without_content_length_is_cut_off_at_the_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CAP: usize = 5 * 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/big.png", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        sock.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        let mut sent = 0;
        let chunk = png(64 * 1024);
        while sent <= CAP {
            let frame = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if sock.write_all(&frame).await.is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        // Over the cap and the body is not finished: wait for the client to hang up.
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return sent,
                Ok(_) => {}
            }
        }
    });
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    let mut a = announcement("大きな画像", "本文");
    a.images = vec![url];
    let e = tokio::time::timeout(
        Duration::from_secs(15),
        ch.deliver(&unit_for(&ch, &a), &ctx("big", 1)),
    )
    .await
    .expect("the download must stop at the cap, not wait for the body's end")
    .unwrap_err();
    assert_eq!(class(&e), "permanent", "{e:?}");
    assert!(e.message.contains("5 MB"), "{e:?}");
    let sent = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the adapter hangs up once over the cap")
        .unwrap();
    assert!(sent > CAP);
    assert!(fake.server.state.requests_to("/2/media/upload").is_empty());
    assert!(fake.x.posts().is_empty());
}

fn long_body() -> String {
    (1..=30)
        .map(|i| format!("第{i}避難所（須坂市立第{i}小学校）を開設しました。"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn thread_posts_chain_replies_and_resume_after_a_failure() {
    let fake = fake::start().await;
    let mut config = fake.config();
    config.long_text = LongText::Thread;
    let ch = channel(&config);
    let a = announcement("避難所開設のお知らせ", &long_body());
    let unit = unit_for(&ch, &a);
    let n = unit.payload["posts"].as_array().unwrap().len();
    assert!(n >= 3, "{n}");
    // Only one post left in the window: the second part is rate limited.
    fake.x.set_window("POST /2/tweets", 100, 1, 60);
    let e = ch.deliver(&unit, &ctx("t1", 1)).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::RateLimited { .. }));
    assert_eq!(fake.x.posts().len(), 1);
    fake.x.set_window("POST /2/tweets", 100, 100, 900);
    let r = ch.deliver(&unit, &ctx("t1", 2)).await.unwrap();
    let posts = fake.x.posts();
    assert_eq!(posts.len(), n, "no part posted twice");
    assert_eq!(r.remote_id.as_deref(), Some(posts[0].id.as_str()));
    assert!(posts[0].in_reply_to.is_none());
    for k in 1..n {
        assert_eq!(
            posts[k].in_reply_to.as_deref(),
            Some(posts[k - 1].id.as_str())
        );
        assert!(posts[k].text.ends_with(&format!("({}/{n})", k + 1)));
    }
    assert!(r.note.unwrap().starts_with("thread: "));
}

#[tokio::test]
async fn thread_resumes_after_a_restart_through_the_duplicate_rule() {
    let fake = fake::start().await;
    let mut config = fake.config();
    config.long_text = LongText::Thread;
    let first = channel(&config);
    let unit = unit_for(&first, &announcement("避難所開設のお知らせ", &long_body()));
    let n = unit.payload["posts"].as_array().unwrap().len();
    fake.x.set_window("POST /2/tweets", 100, 2, 60);
    first.deliver(&unit, &ctx("t1", 1)).await.unwrap_err();
    assert_eq!(fake.x.posts().len(), 2);
    fake.x.set_window("POST /2/tweets", 100, 100, 900);
    // A new process: nothing in memory. Reconcile finds the two parts; deliver continues.
    let second = channel(&config);
    assert!(second
        .reconcile(&unit, &ctx("t1", 2))
        .await
        .unwrap()
        .is_none());
    second.deliver(&unit, &ctx("t1", 2)).await.unwrap();
    let posts = fake.x.posts();
    assert_eq!(posts.len(), n);
    assert_eq!(posts[2].in_reply_to.as_deref(), Some(posts[1].id.as_str()));
    // A third process without reconcile: every part answers duplicate and is found.
    let third = channel(&config);
    let r = third.deliver(&unit, &ctx("t1", 3)).await.unwrap();
    assert!(r.already_sent);
    assert_eq!(r.remote_id.as_deref(), Some(posts[0].id.as_str()));
    assert_eq!(fake.x.posts().len(), n);
}

#[tokio::test]
async fn shorten_posts_within_280_with_the_page_link() {
    let fake = fake::start().await;
    let mut config = fake.config();
    config.long_text = LongText::Shorten;
    let ch = channel(&config);
    let mut a = announcement("避難所開設のお知らせ", &long_body());
    a.page_url = Some("https://www.city.suzaka.nagano.jp/site/0193.html".into());
    let r = ch.render(&a).unwrap();
    assert!(
        r.preview.length <= 280 && r.preview.length >= 270,
        "{}",
        r.preview.length
    );
    let unit = unit_for(&ch, &a);
    ch.deliver(&unit, &ctx("s1", 1)).await.unwrap();
    let posts = fake.x.posts();
    assert!(posts[0]
        .text
        .ends_with("… https://www.city.suzaka.nagano.jp/site/0193.html"));
    assert_eq!(posts[0].text, r.preview.text);
}

// ------------------------------------------------ refused replies (CHANNELS.md §9, 2026-02)

const PAGE: &str = "https://www.city.suzaka.nagano.jp/site/0193.html";

fn replies_tried(fake: &FakeX) -> usize {
    fake.server
        .state
        .requests_to("/2/tweets")
        .iter()
        .filter(|r| r.method == "POST" && r.json()["reply"].is_object())
        .count()
}

/// X refuses the thread's second post (a reply) with its 403: the first post stays, no
/// further reply is tried, one standalone shortened post links the full page, and the
/// receipt says the thread fell back to shorten-and-link and why.
#[tokio::test]
async fn a_refused_reply_falls_back_to_one_shortened_post_with_the_page_link() {
    let fake = fake::start().await;
    fake.x.set_refuse_replies(true);
    let mut config = fake.config();
    config.long_text = LongText::Thread;
    let ch = channel(&config);
    let mut a = announcement("避難所開設のお知らせ", &long_body());
    a.page_url = Some(PAGE.into());
    let unit = unit_for(&ch, &a);
    let n = unit.payload["posts"].as_array().unwrap().len();
    assert!(n >= 3, "{n}");

    let r = ch
        .deliver(&unit, &ctx("f1", 1))
        .await
        .expect("a refused reply is not a failed delivery");
    let posts = fake.x.posts();
    assert_eq!(
        posts.len(),
        2,
        "the thread's first post, then one standalone post"
    );
    assert!(
        posts[0].text.ends_with(&format!("\n(1/{n})")),
        "{}",
        posts[0].text
    );
    assert!(
        posts[1].in_reply_to.is_none(),
        "the fallback is not a reply"
    );
    let short = noroshi_x::render::shorten(&noroshi_x::render::compose(&a), PAGE).unwrap();
    assert_eq!(posts[1].text, short);
    assert!(posts[1].text.ends_with(&format!("… {PAGE}")));
    assert_eq!(
        replies_tried(&fake),
        1,
        "no reply is tried after the refusal"
    );
    assert_eq!(r.remote_id.as_deref(), Some(posts[0].id.as_str()));
    assert!(!r.already_sent);
    let note = r.note.expect("the delivery log says what happened");
    assert!(note.contains("fell back to shorten-and-link"), "{note}");
    assert!(note.contains("X refused a reply (403"), "{note}");
    assert!(note.contains(&posts[1].id), "{note}");

    // The queue checking a lost answer (a new process) finds the fallback complete.
    let checked = channel(&config)
        .reconcile(&unit, &ctx("f1", 2))
        .await
        .unwrap()
        .expect("the first post and the shortened post are found");
    assert!(checked.already_sent);
    assert_eq!(checked.remote_id.as_deref(), Some(posts[0].id.as_str()));
    assert!(checked.note.unwrap().contains("shorten-and-link"));

    // Another attempt (say the answer was lost) finds both posts and adds nothing.
    let again = ch.deliver(&unit, &ctx("f1", 2)).await.unwrap();
    assert!(again.already_sent, "{again:?}");
    assert_eq!(fake.x.posts().len(), 2);
    assert_eq!(again.remote_id.as_deref(), Some(posts[0].id.as_str()));
}

/// When the thread's first post already carries the page link, a refused reply adds
/// nothing: residents already have the link to the full text.
#[tokio::test]
async fn a_refused_reply_adds_nothing_when_the_first_post_already_links_the_page() {
    let fake = fake::start().await;
    fake.x.set_refuse_replies(true);
    let mut config = fake.config();
    config.long_text = LongText::Thread;
    let ch = channel(&config);
    let mut a = announcement(
        "避難所開設のお知らせ",
        &format!("詳しくは {PAGE} をご覧ください。\n{}", long_body()),
    );
    a.page_url = Some(PAGE.into());
    let unit = unit_for(&ch, &a);
    let first = unit.payload["posts"][0].as_str().unwrap().to_string();
    assert!(first.contains(PAGE), "{first}");

    let r = ch.deliver(&unit, &ctx("f2", 1)).await.unwrap();
    let posts = fake.x.posts();
    assert_eq!(posts.len(), 1, "only the first post, which links the page");
    assert_eq!(posts[0].text, first);
    assert_eq!(r.remote_id.as_deref(), Some(posts[0].id.as_str()));
    let note = r.note.unwrap();
    assert!(note.contains("fell back to shorten-and-link"), "{note}");
    assert!(note.contains("already links"), "{note}");
}

/// With no page URL and no link there is nothing to fall back to: the preview warns at
/// accept time, and a refused reply fails the delivery visibly, naming what is on X.
#[tokio::test]
async fn a_refused_reply_with_no_page_to_link_fails_visibly() {
    let fake = fake::start().await;
    fake.x.set_refuse_replies(true);
    let mut config = fake.config();
    config.long_text = LongText::Thread;
    let ch = channel(&config);
    let a = announcement("避難所開設のお知らせ", &long_body());
    let preview = ch.render(&a).unwrap().preview;
    assert!(
        preview.warnings.iter().any(|w| w.contains("no page URL")),
        "{:?}",
        preview.warnings
    );
    let unit = unit_for(&ch, &a);
    let e = ch.deliver(&unit, &ctx("f3", 1)).await.unwrap_err();
    let posts = fake.x.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!((class(&e), e.status), ("permanent", Some(403)));
    assert!(e.message.contains("X refused a reply"), "{}", e.message);
    assert!(e.message.contains("no page URL or link"), "{}", e.message);
    assert!(e.message.contains(&posts[0].id), "{}", e.message);
}

#[tokio::test]
async fn fake_refuses_over_length_and_unknown_fields() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    let unit = DeliveryUnit {
        payload: serde_json::json!({"posts": ["あ".repeat(141)]}),
        recipient: None,
    };
    let e = ch.deliver(&unit, &ctx("d1", 1)).await.unwrap_err();
    assert_eq!((class(&e), e.status), ("permanent", Some(400)));
    assert!(e.message.contains("too long"));
    let unit = DeliveryUnit {
        payload: serde_json::json!({"posts": ["あ".repeat(140)]}),
        recipient: None,
    };
    ch.deliver(&unit, &ctx("d2", 1)).await.unwrap();
    // Unknown fields, expired media: raw requests with the OAuth 2.0 bearer.
    let http = reqwest::Client::new();
    let bearer = fake.x.oauth2_tokens().0;
    let send = |body: serde_json::Value| {
        http.post(format!("{}/2/tweets", fake.base_url()))
            .bearer_auth(&bearer)
            .json(&body)
            .send()
    };
    let r = send(serde_json::json!({"text": "x", "colour": "red"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("additional properties"));
    let r = send(serde_json::json!({"text": "y", "media": {"media_ids": ["123"]}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = send(serde_json::json!({"text": "z", "reply": {"in_reply_to_tweet_id": "42"}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{}/2/users/me", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"detail":"Unauthorized","status":401,"title":"Unauthorized","type":"about:blank"}"#
    );
}

#[tokio::test]
async fn fake_chunked_upload_and_media_expiry() {
    let fake = fake::start().await;
    let http = reqwest::Client::new();
    let base = fake.base_url();
    let bearer = fake.x.oauth2_tokens().0;
    fake.x.set_processing_sequence(vec![
        serde_json::json!({"state": "pending", "check_after_secs": 1}),
        serde_json::json!({"state": "in_progress", "progress_percent": 50, "check_after_secs": 1}),
        serde_json::json!({"state": "succeeded", "progress_percent": 100}),
    ]);
    let init: serde_json::Value = http
        .post(format!("{base}/2/media/upload/initialize"))
        .bearer_auth(&bearer)
        .json(&serde_json::json!({"media_type": "video/mp4", "total_bytes": 6, "media_category": "tweet_video"}))
        .send().await.unwrap().json().await.unwrap();
    let id = init["data"]["id"].as_str().unwrap().to_string();
    for (i, chunk) in [b"abc", b"def"].iter().enumerate() {
        let form = reqwest::multipart::Form::new()
            .part("media", reqwest::multipart::Part::bytes(chunk.to_vec()))
            .text("segment_index", i.to_string());
        let r = http
            .post(format!("{base}/2/media/upload/{id}/append"))
            .bearer_auth(&bearer)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let tweet = |media: &str| {
        http.post(format!("{base}/2/tweets"))
            .bearer_auth(&bearer)
            .json(&serde_json::json!({"text": format!("動画 {media}"), "media": {"media_ids": [media]}}))
            .send()
    };
    let fin: serde_json::Value = http
        .post(format!("{base}/2/media/upload/{id}/finalize"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fin["data"]["processing_info"]["state"], "pending");
    assert_eq!(tweet(&id).await.unwrap().status(), 400, "still processing");
    for want in ["in_progress", "succeeded"] {
        let s: serde_json::Value = http
            .get(format!(
                "{base}/2/media/upload?command=STATUS&media_id={id}"
            ))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s["data"]["processing_info"]["state"], want);
    }
    assert_eq!(tweet(&id).await.unwrap().status(), 201);
    // Expired media ids are refused.
    fake.x.set_processing_sequence(vec![]);
    fake.x.set_media_expiry_secs(0);
    let form = reqwest::multipart::Form::new()
        .part("media", reqwest::multipart::Part::bytes(png(100)))
        .text("media_category", "tweet_image");
    let up: serde_json::Value = http
        .post(format!("{base}/2/media/upload"))
        .bearer_auth(&bearer)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expired = up["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(tweet(&expired).await.unwrap().status(), 400);
}

#[tokio::test]
async fn reach_reads_followers_and_impressions() {
    let fake = fake::start().await;
    let ch = channel(&fake.config());
    fake.x.set_followers(12_345);
    let r1 = post(&ch, "投稿その1", "d1", 1)
        .await
        .unwrap()
        .remote_id
        .unwrap();
    let r2 = post(&ch, "投稿その2", "d2", 1)
        .await
        .unwrap()
        .remote_id
        .unwrap();
    fake.x.set_impressions(&r1, 500);
    fake.x.set_impressions(&r2, 42);
    let samples = ch.fetch_reach().await.unwrap();
    let get = |metric: &str, subject: Option<&str>| {
        samples
            .iter()
            .find(|s| s.metric == metric && s.subject.as_deref() == subject)
            .map(|s| s.value)
    };
    assert_eq!(get("followers_count", None), Some(12_345));
    assert_eq!(get("impression_count", Some(&r1)), Some(500));
    assert_eq!(get("impression_count", Some(&r2)), Some(42));
    assert!(samples
        .iter()
        .all(|s| s.api_version.as_deref() == Some("2")));
    let lookups = fake.server.state.requests_to("/2/tweets");
    let q = lookups.last().unwrap().query.clone().unwrap();
    assert!(q.contains("tweet.fields=public_metrics"), "{q}");
    // Old posts keep public metrics but withhold the non-public ones.
    fake.x.age_post(&r1, 31);
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .get(format!(
            "{}/2/tweets?ids={r1}&tweet.fields=public_metrics,non_public_metrics",
            fake.base_url()
        ))
        .bearer_auth(fake.x.oauth2_tokens().0)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["public_metrics"]["impression_count"], 500);
    assert!(v["data"][0].get("non_public_metrics").is_none());
    assert_eq!(
        v["errors"][0]["type"],
        "https://api.twitter.com/2/problems/not-authorized-for-field"
    );
}

/// With `languages = ["en"]` the English version is posted as its own post after the
/// Japanese one; a language not listed (やさしい日本語 here) is not posted.
#[tokio::test]
async fn configured_languages_are_posted_as_their_own_posts() {
    let fake = fake::start().await;
    let config = Config {
        languages: vec!["en".into()],
        ..fake.config()
    };
    let ch = channel(&config);
    let mut a = announcement(
        "【警戒レベル4】避難指示 井上地区",
        "危険な場所から全員避難してください。",
    );
    a.variants = vec![
        noroshi_channel_core::LangText {
            lang: "en".into(),
            title: "[Level 4] Evacuation order: Inoue".into(),
            body: "Leave dangerous areas now.".into(),
        },
        noroshi_channel_core::LangText {
            lang: "ja-easy".into(),
            title: "【レベル4】にげてください".into(),
            body: "あぶない ところから にげてください。".into(),
        },
    ];
    let r = ch.render(&a).unwrap();
    assert_eq!(r.units.len(), 2);
    for (i, payload) in r.units.into_iter().enumerate() {
        let unit = DeliveryUnit {
            payload,
            recipient: None,
        };
        ch.deliver(&unit, &ctx(&format!("lang-{i}"), 1))
            .await
            .unwrap();
    }
    let posts = fake.x.posts();
    assert_eq!(posts.len(), 2);
    assert!(
        posts[0].text.starts_with("【警戒レベル4】避難指示"),
        "{}",
        posts[0].text
    );
    assert!(
        posts[1].text.starts_with("[Level 4] Evacuation order"),
        "{}",
        posts[1].text
    );
    assert!(!posts.iter().any(|p| p.text.contains("にげてください")));
}
