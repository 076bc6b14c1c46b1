//! Unit tests: the twitter-text conformance suite, Japanese lengths, OAuth 1.0a vectors,
//! rendering policies, classification, config.

use std::path::PathBuf;

use chrono::Utc;
use noroshi_channel_core::{Announcement, ErrorClass, Priority};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use twitter_text_config::Configuration;

use crate::config::{Config, LongText};
use crate::error::{classify, Call};
use crate::oauth;
use crate::render::{self, count_with, weighted_length, XPayload, MAX_WEIGHTED_LENGTH};

fn conformance(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(conformance(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn vectors() -> Value {
    serde_json::from_str(&read("noroshi-vectors/vectors.json")).unwrap()
}

fn check_case(section: &str, case: &serde_yaml::Value, config: &Configuration) -> Option<String> {
    let text = case["text"].as_str().unwrap();
    let e = &case["expected"];
    let got = count_with(text, config);
    let want = (
        e["weightedLength"].as_u64().unwrap() as usize,
        e["valid"].as_bool().unwrap(),
        e["permillage"].as_u64().unwrap() as usize,
        (
            e["displayRangeStart"].as_i64().unwrap() as i32,
            e["displayRangeEnd"].as_i64().unwrap() as i32,
        ),
        (
            e["validRangeStart"].as_i64().unwrap() as i32,
            e["validRangeEnd"].as_i64().unwrap() as i32,
        ),
    );
    let have = (
        got.weighted_length,
        got.valid,
        got.permillage,
        got.display_range,
        got.valid_range,
    );
    (have != want).then(|| {
        format!(
            "{section}: {:?} ({text:?}): want {want:?}, got {have:?}",
            case["description"].as_str()
        )
    })
}

/// CHANNELS.md §2.5: every counter section of validate.yml, all seven fields, with the
/// config the section names (v2 for the plain counter, v3 for emoji and directional marks).
#[test]
fn twitter_text_conformance_suite_passes_entirely() {
    let suite: serde_yaml::Value =
        serde_yaml::from_str(&read("twitter-text/validate.yml")).unwrap();
    let v2 = Configuration::configuration_from_json(&read("twitter-text/config/v2.json"));
    let v3 = Configuration::configuration_from_json(&read("twitter-text/config/v3.json"));
    let sections = [
        ("WeightedTweetsCounterTest", &v2),
        ("WeightedTweetsWithDiscountedEmojiCounterTest", &v3),
        ("UnicodeDirectionalMarkerCounterTest", &v3),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, config) in sections {
        let cases = suite["tests"][name]
            .as_sequence()
            .unwrap_or_else(|| panic!("section {name} missing"));
        assert!(!cases.is_empty());
        for case in cases {
            total += 1;
            failures.extend(check_case(name, case, config));
        }
    }
    // Every counter section is covered: a new one upstream must be added above.
    let counters: Vec<&str> = suite["tests"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| k.contains("Counter"))
        .collect();
    assert_eq!(
        counters.len(),
        sections.len(),
        "counter sections: {counters:?}"
    );
    assert_eq!(total, 44, "the suite has 44 counter cases");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The config Noroshi counts with is the v3 file of the conformance folder.
#[test]
fn production_config_is_v3() {
    let v3 = Configuration::configuration_from_json(&read("twitter-text/config/v3.json"));
    assert_eq!(render::config(), &v3);
}

/// `x_weighted_length_japanese` in vectors.json, every field.
#[test]
fn japanese_length_vectors() {
    let v = vectors();
    let cases = v["x_weighted_length_japanese"]["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let got = count_with(text, render::config());
        assert_eq!(
            got.weighted_length as u64,
            c["weightedLength"].as_u64().unwrap(),
            "{text}"
        );
        assert_eq!(got.valid, c["valid"].as_bool().unwrap(), "{text}");
        assert_eq!(
            got.permillage as u64,
            c["permillage"].as_u64().unwrap(),
            "{text}"
        );
        assert_eq!(
            got.display_range,
            (
                c["displayRangeStart"].as_i64().unwrap() as i32,
                c["displayRangeEnd"].as_i64().unwrap() as i32
            ),
            "{text}"
        );
        assert_eq!(
            got.valid_range,
            (
                c["validRangeStart"].as_i64().unwrap() as i32,
                c["validRangeEnd"].as_i64().unwrap() as i32
            ),
            "{text}"
        );
    }
}

fn vector_params(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// All five `oauth1_hmac_sha1` vectors: base strings and signatures.
#[test]
fn oauth1_signature_vectors() {
    let v = vectors();
    let vs = v["oauth1_hmac_sha1"].as_array().unwrap();
    assert_eq!(vs.len(), 5);
    let first_params = vector_params(&vs[0]["params"]);
    let mut checked = 0;
    for vector in vs {
        if let Some(raw) = vector["raw_request"].as_str() {
            // RFC 5849 §3.4.1.1: parse the raw request as the fake parses a received one.
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            let request_line = head.lines().next().unwrap();
            let mut words = request_line.split(' ');
            let (method, target) = (words.next().unwrap(), words.next().unwrap());
            let host = head.lines().find_map(|l| l.strip_prefix("Host: ")).unwrap();
            let url = url::Url::parse(&format!("http://{host}{target}")).unwrap();
            let mut params = oauth::query_params(&url);
            params.extend(oauth::form_params(body.as_bytes()));
            params.extend(vector_params(&vector["oauth_params"]));
            let base = oauth::signature_base_string(method, &oauth::base_string_uri(&url), &params);
            assert_eq!(base, vector["signature_base_string"].as_str().unwrap());
            checked += 1;
            continue;
        }
        let params = match &vector["params"] {
            Value::String(_) => first_params.clone(),
            p => vector_params(p),
        };
        let url = url::Url::parse(vector["base_url"].as_str().unwrap()).unwrap();
        let method = vector["method"].as_str().unwrap();
        let base = oauth::signature_base_string(method, &oauth::base_string_uri(&url), &params);
        if let Some(expected) = vector["signature_base_string"].as_str() {
            assert_eq!(base, expected);
        }
        let sig = oauth::sign(
            &base,
            vector["consumer_secret"].as_str().unwrap(),
            vector["token_secret"].as_str().unwrap(),
        );
        assert_eq!(
            sig,
            vector["expected_signature"].as_str().unwrap(),
            "{}",
            vector["source"]
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// The header builder (what the adapter sends) reproduces X's documented example when the
/// status travels as a form body and include_entities in the query.
#[test]
fn authorization_header_matches_x_example() {
    let v = vectors();
    let x = &v["oauth1_hmac_sha1"][0];
    let p = &x["params"];
    let creds = oauth::Credentials {
        consumer_key: p["oauth_consumer_key"].as_str().unwrap(),
        consumer_secret: x["consumer_secret"].as_str().unwrap(),
        token: p["oauth_token"].as_str().unwrap(),
        token_secret: x["token_secret"].as_str().unwrap(),
    };
    let url = url::Url::parse("https://api.x.com/1.1/statuses/update.json?include_entities=true")
        .unwrap();
    let form = vec![(
        "status".to_string(),
        p["status"].as_str().unwrap().to_string(),
    )];
    let header = oauth::authorization_header(
        &creds,
        "POST",
        &url,
        &form,
        p["oauth_nonce"].as_str().unwrap(),
        1318622958,
    );
    assert!(header.starts_with("OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", "));
    assert!(
        header.contains("oauth_signature=\"Ls93hJiZbQ3akF3HF3x1Bz8%2FzU4%3D\""),
        "{header}"
    );
    let parsed = oauth::parse_authorization_header(&header).unwrap();
    assert!(parsed.contains(&(
        "oauth_signature".to_string(),
        "Ls93hJiZbQ3akF3HF3x1Bz8/zU4=".to_string()
    )));
    assert_eq!(oauth::percent_encode("a b+c~*"), "a%20b%2Bc~%2A");
}

fn announcement(title: &str, body: &str) -> Announcement {
    Announcement {
        id: "0193-test".into(),
        title: title.into(),
        body: body.into(),
        link: None,
        priority: Priority::Normal,
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

fn payload(r: &noroshi_channel_core::Rendering) -> XPayload {
    assert_eq!(r.units.len(), 1);
    serde_json::from_value(r.units[0].clone()).unwrap()
}

#[test]
fn render_composes_title_body_link_and_previews_length() {
    let mut a = announcement(
        "避難所開設のお知らせ",
        "本日15時、須坂市役所に避難所を開設しました。",
    );
    a.link = Some("https://www.city.suzaka.nagano.jp/".into());
    let r = render::render(&a, LongText::Refuse).unwrap();
    let text = "避難所開設のお知らせ\n本日15時、須坂市役所に避難所を開設しました。\nhttps://www.city.suzaka.nagano.jp/";
    assert_eq!(payload(&r).posts, vec![text.to_string()]);
    assert_eq!(r.preview.text, text);
    assert_eq!(r.preview.length, 20 + 1 + 44 + 1 + 23);
    assert_eq!(r.preview.limit, Some(280));
    a.text_override = Some("【須坂市】避難指示（緊急）".into());
    let r = render::render(&a, LongText::Refuse).unwrap();
    assert_eq!(
        payload(&r).posts,
        vec!["【須坂市】避難指示（緊急）".to_string()]
    );
    assert_eq!(r.preview.length, 26);
}

#[test]
fn render_refuses_over_280_with_length_and_limit() {
    let a = announcement("お知らせ", &"あ".repeat(140));
    let e = render::render(&a, LongText::Refuse).unwrap_err();
    assert_eq!(e.rule, "max_weighted_length");
    assert_eq!(e.length, Some(8 + 1 + 280));
    assert_eq!(e.limit, Some(280));
    assert_eq!(
        render::render(&announcement(" ", " "), LongText::Refuse)
            .unwrap_err()
            .rule,
        "empty_text"
    );
}

#[test]
fn render_shortens_with_page_url() {
    let mut a = announcement("避難情報", &"避難所を開設しました。".repeat(30));
    // Without a page URL or link there is nothing to point at: refused.
    let e = render::render(&a, LongText::Shorten).unwrap_err();
    assert_eq!(e.rule, "max_weighted_length");
    a.page_url = Some("https://city.example.jp/site/announcements/0193.html".into());
    let r = render::render(&a, LongText::Shorten).unwrap();
    let post = &payload(&r).posts[0];
    assert!(
        post.ends_with("… https://city.example.jp/site/announcements/0193.html"),
        "{post}"
    );
    let len = weighted_length(post);
    assert!(len <= MAX_WEIGHTED_LENGTH, "{len}");
    // As long as possible: two more weighted units would not fit.
    assert!(len >= MAX_WEIGHTED_LENGTH - 1, "{len}");
    assert!(post.starts_with("避難情報\n避難所を開設しました。"));
    assert_eq!(r.preview.length, len);
    assert!(r.preview.warnings[0].contains("shortened"));
}

#[test]
fn shorten_never_cuts_inside_a_url_or_emoji_sequence() {
    let text = format!(
        "{}https://example.com/a/very/long/path 👨‍👩‍👧‍👦👨‍👩‍👧‍👦 end",
        "a".repeat(240)
    );
    let out = render::shorten(&text, "https://example.jp/p").unwrap();
    assert!(weighted_length(&out) <= 280);
    let cut = out.strip_suffix("… https://example.jp/p").unwrap();
    assert!(text.starts_with(cut));
    assert!(!cut.ends_with('\u{200D}'));
    assert!(
        cut.ends_with('a') || cut.ends_with("path") || cut.ends_with('👦'),
        "{cut}"
    );
}

#[test]
fn render_threads_long_text_into_numbered_posts() {
    let body: String = (1..=30)
        .map(|i| format!("第{i}避難所を開設しました。"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut a = announcement("避難所開設のお知らせ", &body);
    a.link = Some("https://www.city.suzaka.nagano.jp/hinan/".into());
    let r = render::render(&a, LongText::Thread).unwrap();
    let posts = payload(&r).posts;
    assert!(posts.len() >= 3, "{}", posts.len());
    let n = posts.len();
    for (k, p) in posts.iter().enumerate() {
        assert!(
            weighted_length(p) <= 280,
            "post {k}: {}",
            weighted_length(p)
        );
        assert!(p.ends_with(&format!("\n({}/{n})", k + 1)), "{p}");
    }
    // Breaks fall on line ends, and nothing is lost or reordered.
    let joined: String = posts
        .iter()
        .map(|p| p.rsplit_once('\n').unwrap().0.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(joined, render::compose(&a));
    assert_eq!(r.preview.text, posts.join("\n\n"));
    assert!(r.preview.warnings[0].contains("thread"));
}

/// A thread's unit carries its shorten-and-link fallback (the page URL before the link), for
/// when X refuses a reply; a single post carries none, and units stored before the field
/// existed still read.
#[test]
fn render_thread_stores_a_shortened_fallback_for_refused_replies() {
    let body: String = (1..=30)
        .map(|i| format!("第{i}避難所を開設しました。"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut a = announcement("避難所開設のお知らせ", &body);
    a.link = Some("https://www.city.suzaka.nagano.jp/hinan/".into());
    a.page_url = Some("https://city.example.jp/site/announcements/0193.html".into());
    let p = payload(&render::render(&a, LongText::Thread).unwrap());
    let fb = p.fallback.expect("a thread carries its fallback");
    assert_eq!(
        fb.url,
        "https://city.example.jp/site/announcements/0193.html"
    );
    assert_eq!(
        Some(fb.text.clone()),
        render::shorten(&render::compose(&a), &fb.url)
    );
    assert!(weighted_length(&fb.text) <= MAX_WEIGHTED_LENGTH);

    let single = render::render(&announcement("短い", "本文"), LongText::Thread).unwrap();
    assert!(single.units[0].get("fallback").is_none());
    let old: XPayload = serde_json::from_str(r#"{"posts":["a","b"],"images":[]}"#).unwrap();
    assert_eq!(old.fallback, None);

    assert!(crate::error::is_reply_refused(
        403,
        r#"{"detail":"Reply to this conversation is not allowed because you have not been mentioned or otherwise engaged by the author of the post you are replying to.","type":"about:blank","title":"Forbidden","status":403}"#
    ));
    assert!(!crate::error::is_reply_refused(
        403,
        r#"{"detail":"You are not allowed to create a Tweet with duplicate content.","type":"about:blank","title":"Forbidden","status":403}"#
    ));
}

#[test]
fn render_keeps_at_most_four_images() {
    let mut a = announcement("写真", "本文");
    a.images = (0..6)
        .map(|i| format!("https://city.example.jp/{i}.jpg"))
        .collect();
    let r = render::render(&a, LongText::Refuse).unwrap();
    assert_eq!(payload(&r).images.len(), 4);
    assert!(r.preview.warnings[0].contains("2 dropped"));
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn classification_table() {
    let now = Utc::now();
    let none = HeaderMap::new();
    let c = |call, status, body: &str| classify(call, status, &none, body, now).class;
    assert_eq!(
        c(
            Call::CreatePost,
            400,
            r#"{"type":"https://api.twitter.com/2/problems/invalid-request"}"#
        ),
        ErrorClass::Permanent
    );
    assert_eq!(
        c(
            Call::CreatePost,
            401,
            r#"{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}"#
        ),
        ErrorClass::Auth
    );
    assert_eq!(
        c(
            Call::CreatePost,
            403,
            r#"{"type":"https://api.twitter.com/2/problems/client-forbidden","reason":"client-not-enrolled"}"#
        ),
        ErrorClass::Auth
    );
    assert_eq!(
        c(
            Call::Read,
            403,
            r#"{"type":"https://api.x.com/2/problems/unsupported-authentication"}"#
        ),
        ErrorClass::Auth
    );
    assert_eq!(
        c(Call::CreatePost, 402, r#"{"title":"CreditsDepleted"}"#),
        ErrorClass::Quota { until: None }
    );
    assert_eq!(
        c(
            Call::CreatePost,
            403,
            r#"{"type":"https://api.twitter.com/2/problems/usage-capped","period":"Daily"}"#
        ),
        ErrorClass::Quota { until: None }
    );
    assert_eq!(c(Call::CreatePost, 404, "{}"), ErrorClass::Permanent);
    assert_eq!(c(Call::CreatePost, 503, ""), ErrorClass::Uncertain);
    assert_eq!(c(Call::Read, 503, ""), ErrorClass::Transient);
    assert_eq!(c(Call::Upload, 500, ""), ErrorClass::Transient);
    assert!(crate::error::is_duplicate(
        403,
        r#"{"detail":"You are not allowed to create a Tweet with duplicate content.","type":"about:blank","title":"Forbidden","status":403}"#
    ));
    let reset = now.timestamp() + 120;
    let h = headers(&[
        ("x-rate-limit-remaining", "0"),
        ("x-rate-limit-reset", &reset.to_string()),
    ]);
    match classify(
        Call::CreatePost,
        429,
        &h,
        r#"{"errors":[{"code":88,"message":"Rate limit exceeded"}]}"#,
        now,
    )
    .class
    {
        ErrorClass::RateLimited {
            retry_after: Some(d),
        } => assert!((119..=120).contains(&d.as_secs())),
        other => panic!("{other:?}"),
    }
    let h = headers(&[
        ("x-user-limit-24hour-remaining", "0"),
        ("x-user-limit-24hour-reset", &reset.to_string()),
    ]);
    match classify(Call::CreatePost, 429, &h, "{}", now).class {
        ErrorClass::Quota { until: Some(t) } => assert_eq!(t.timestamp(), reset),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_defaults_and_validation() {
    let c: Config = toml_like(r#"{"enabled": true}"#);
    assert_eq!(c.api_base, "https://api.x.com");
    assert_eq!(c.upload_base, "https://api.x.com");
    assert_eq!(c.long_text, LongText::Refuse);
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "consumer_key",
            "consumer_secret",
            "access_token",
            "access_token_secret"
        ]
    );
    let c: Config = toml_like(r#"{"auth":"oauth2","oauth2_client_id":"id","api_base":"ftp://x"}"#);
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        ["api_base", "oauth2_access_token", "oauth2_refresh_token"]
    );
    assert!(serde_json::from_str::<Config>(r#"{"bogus":1}"#).is_err());
    let c: Config = toml_like(r#"{"consumer_key":"ck-secret-value"}"#);
    assert!(!format!("{c:?}").contains("ck-secret-value"));
}

#[test]
fn the_registry_drives_the_section_through_channel_config() {
    use noroshi_channel_core::ChannelConfig;
    let env = noroshi_channel_core::BuildEnv {
        http: reqwest::Client::new(),
        data_dir: "data".into(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let c: Config = toml_like(
        r#"{"enabled": true, "consumer_key": "a", "consumer_secret": "b", "access_token": "c",
            "access_token_secret": "d", "delivery": {"concurrency": 1}}"#,
    );
    let section: &dyn ChannelConfig = &c;
    assert!(section.enabled());
    assert_eq!(section.delivery().concurrency, Some(1));
    assert!(section.validate().is_empty());
    assert_eq!(section.build("x", &env).unwrap().name(), "x");
    let c: Config = toml_like(r#"{"api_base": "https://api.x.com/?q=1", "consumer_key": " "}"#);
    let section: &dyn ChannelConfig = &c;
    assert!(!section.enabled());
    let problems = section.validate();
    assert_eq!(
        (problems[0].key.as_str(), problems[0].message.as_str()),
        ("api_base", "must not carry a query string")
    );
    assert_eq!(
        (problems[1].key.as_str(), problems[1].message.as_str()),
        ("consumer_key", "required when auth = \"oauth1\"")
    );
    assert!(section.build("x", &env).is_err());
}

fn toml_like(json: &str) -> Config {
    serde_json::from_str(json).unwrap()
}
