//! Unit tests: config, rendering, address rules, reply classification.

use chrono::Utc;
use noroshi_channel_core::{Announcement, ErrorClass, Priority, Recipient, SecretString};

use crate::address::{smtp_address, validate_address};
use crate::client::{dot_stuffed, EmailChannel};
use crate::config::{Config, TlsMode};
use crate::error::{enhanced_code, queue_id, reply_error, timeout_error, Step};
use crate::render::{personal_html, personal_text, render_payload};
use crate::template::Prepared;

fn announcement() -> Announcement {
    Announcement {
        id: "0193c2f4-0000-7000-8000-000000000001".into(),
        title: "避難所開設のお知らせ".into(),
        body: "本日15時、須坂市役所に避難所を開設しました。\n直ちに避難してください。\n\n<持ち物> & 飲料水".into(),
        link: Some("https://www.city.example.jp/bousai/1.html".into()),
        priority: Priority::Disaster,
        lang: "ja".into(),
        tags: vec![],
        exercise: false,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: Some("https://www.city.example.jp/site/a/1.html".into()),
        published_at: Utc::now(),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    }
}

#[test]
fn config_defaults_match_the_contract_and_parse_from_toml() {
    let c = Config::default();
    assert!(!c.enabled);
    assert_eq!(c.smtp_host, "127.0.0.1");
    assert_eq!(c.smtp_port, 587);
    assert_eq!(c.tls, TlsMode::Starttls);
    assert_eq!(c.from, "Suzaka City <info@example.jp>");
    assert_eq!(c.pool_size, 4);
    assert_eq!(c.timeout_secs, 30);
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.message_id_domain(), "example.jp");

    let parsed: Config = serde_json::from_value(serde_json::json!({
        "enabled": true, "smtp_host": "smtp.example.jp", "smtp_port": 465, "tls": "tls",
        "username": "noroshi", "password": "pw", "list_name": "須坂市のお知らせ",
        "bounce_address": "bounce@example.jp", "delivery": {"rate_per_second": 5.0}
    }))
    .unwrap();
    assert_eq!(parsed.tls, TlsMode::Tls);
    assert!(parsed.validate().is_empty(), "{:?}", parsed.validate());
    let unknown = serde_json::from_value::<Config>(serde_json::json!({"smtp_hots": "x"}));
    assert!(unknown.is_err(), "unknown keys are refused");
}

#[test]
fn validate_names_each_bad_key() {
    let c = Config {
        smtp_host: "".into(),
        from: "not an address".into(),
        username: Some("u".into()),
        password: None,
        list_id: "nodots".into(),
        pool_size: 0,
        timeout_secs: 0,
        bounce_address: Some("Bounces <b@example.jp>".into()),
        ..Config::default()
    };
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    for key in [
        "smtp_host",
        "from",
        "password",
        "list_id",
        "pool_size",
        "timeout_secs",
        "bounce_address",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} missing in {keys:?}");
    }
    let clear_text = Config {
        smtp_host: "smtp.example.jp".into(),
        tls: TlsMode::None,
        username: Some("u".into()),
        password: Some(SecretString::from("p")),
        ..Config::default()
    };
    assert!(clear_text.validate().iter().any(|p| p.key == "tls"));
}

#[test]
fn render_makes_one_unit_with_plain_text_and_accessible_html() {
    let a = announcement();
    let rendering = crate::render::render(&a, None).unwrap();
    assert_eq!(rendering.units.len(), 1);
    let p = render_payload(&a).unwrap();
    assert_eq!(p.subject, "避難所開設のお知らせ");
    assert!(p.text.starts_with("避難所開設のお知らせ\n\n本日15時"));
    assert!(p
        .text
        .contains("詳細: https://www.city.example.jp/bousai/1.html"));
    assert!(p.text.contains("https://www.city.example.jp/site/a/1.html"));
    assert!(p.html.contains("<html lang=\"ja\">"));
    assert!(p.html.contains("&lt;持ち物&gt; &amp; 飲料水"), "{}", p.html);
    assert!(p.html.contains(
        "<p>本日15時、須坂市役所に避難所を開設しました。<br>\n直ちに避難してください。</p>"
    ));
    assert!(p.html.contains(
        "<a href=\"https://www.city.example.jp/bousai/1.html\">避難所開設のお知らせ（詳細ページ）</a>"
    ));
    assert!(rendering.preview.text.contains("配信停止"));
    assert_eq!(
        rendering.preview.length,
        rendering.preview.text.chars().count()
    );

    let text = personal_text(&p, "https://city.example.jp/unsubscribe?t=abc", "ja");
    assert!(text.ends_with("配信停止（登録解除）: https://city.example.jp/unsubscribe?t=abc\n"));
    let html = personal_html(&p, "https://city.example.jp/unsubscribe?t=a&b", "ja");
    assert!(html.contains("href=\"https://city.example.jp/unsubscribe?t=a&amp;b\""));
    assert!(!html.contains("noroshi:unsubscribe"));
}

#[test]
fn render_refuses_an_empty_title_and_flattens_line_breaks() {
    let mut a = announcement();
    a.title = " \n ".into();
    assert_eq!(render_payload(&a).unwrap_err().rule, "empty_title");
    a.title = "件名\r\nBcc: evil@example.com".into();
    assert_eq!(
        render_payload(&a).unwrap().subject,
        "件名 Bcc: evil@example.com"
    );
    a.link = Some("javascript:alert(1)".into());
    assert!(!render_payload(&a)
        .unwrap()
        .html
        .contains("href=\"javascript"));
}

#[test]
fn addresses_carrier_forms_are_quoted_and_bad_ones_refused() {
    assert_eq!(
        smtp_address("taro@example.jp").unwrap().to_string(),
        "taro@example.jp"
    );
    // Old docomo form: consecutive dots and a dot before `@` → quoted local part.
    assert_eq!(
        smtp_address("taro..yamada.@docomo.ne.jp")
            .unwrap()
            .to_string(),
        "\"taro..yamada.\"@docomo.ne.jp"
    );
    assert_eq!(
        smtp_address(".hanako@ezweb.ne.jp").unwrap().to_string(),
        "\".hanako\"@ezweb.ne.jp"
    );
    assert_eq!(
        smtp_address("taro@例え.jp").unwrap().to_string(),
        "taro@xn--r8jz45g.jp"
    );
    for bad in [
        "",
        "no-at-sign",
        "@example.jp",
        "taro@",
        "taro yamada@example.jp",
        "taro@example",
        "たろう@example.jp",
        "taro@exa mple.jp",
        "a\r\nRCPT TO:<x@y.jp>@example.jp",
        "taro<x>@example.jp",
        "taro@[127.0.0.1]",
    ] {
        let err = validate_address(bad).unwrap_err();
        assert!(!err.is_empty(), "{bad:?}");
    }
    assert!(validate_address(&format!("{}@example.jp", "a".repeat(65))).is_err());
}

#[test]
fn replies_are_classified_per_channels_4_5() {
    let class = |code, text: &str| reply_error(Step::Rcpt, code, text).class;
    assert_eq!(
        class(421, "4.3.2 Service not available"),
        ErrorClass::Transient
    );
    for code in [450, 451, 452] {
        assert_eq!(class(code, "4.3.0 try later"), ErrorClass::Transient);
    }
    assert_eq!(
        class(530, "5.7.0 Authentication required"),
        ErrorClass::Auth
    );
    assert_eq!(
        class(535, "5.7.8 Authentication credentials invalid"),
        ErrorClass::Auth
    );
    for code in [550, 551, 553, 554] {
        assert_eq!(class(code, "5.1.1 no such user"), ErrorClass::Permanent);
    }
    let soft = reply_error(Step::Rcpt, 552, "5.2.2 Mailbox full");
    assert_eq!(soft.class, ErrorClass::Permanent);
    assert!(soft.message.contains("soft bounce"), "{}", soft.message);
    assert_eq!(soft.status, Some(552));
    let big = reply_error(Step::EndOfData, 552, "5.3.4 Message too big");
    assert_eq!(big.class, ErrorClass::Permanent);
    assert!(big.message.contains("too big"));
    assert!(!big.message.contains("soft"));
    let policy = reply_error(Step::EndOfData, 550, "5.7.1 rejected as spam");
    assert!(policy.message.contains("policy"));

    assert_eq!(timeout_error(Step::Rcpt, 30).class, ErrorClass::Transient);
    assert_eq!(
        timeout_error(Step::Connect, 30).class,
        ErrorClass::Transient
    );
    assert_eq!(
        timeout_error(Step::EndOfData, 30).class,
        ErrorClass::Uncertain
    );
    // `BDAT … LAST` went out with MAIL and RCPT: silence is uncertain, a reply is classed.
    assert_eq!(timeout_error(Step::Chunk, 30).class, ErrorClass::Uncertain);
    assert_eq!(
        reply_error(Step::Chunk, 554, "5.7.1 rejected as spam").class,
        ErrorClass::Permanent
    );

    assert_eq!(enhanced_code("5.2.2 Mailbox full"), Some("5.2.2"));
    assert_eq!(enhanced_code("Mailbox full"), None);
    assert_eq!(queue_id("2.0.0 Ok: queued as 4F0000000001"), "4F0000000001");
    assert_eq!(
        queue_id("2.0.0 OK 1732345678 d9443c01a7336-21c.5 - gsmtp"),
        "2.0.0 OK 1732345678 d9443c01a7336-21c.5 - gsmtp"
    );
}

#[test]
fn compose_builds_headers_and_verp_sender() {
    let config = Config {
        bounce_address: Some("bounce@example.jp".into()),
        list_name: Some("須坂市からのお知らせ".into()),
        unsubscribe_mailto_domain: Some("example.jp".into()),
        tls: TlsMode::None,
        ..Config::default()
    };
    let channel = EmailChannel::new("email", &config).unwrap();
    let payload = render_payload(&announcement()).unwrap();
    let recipient = Recipient {
        address: "taro..yamada.@docomo.ne.jp".into(),
        lang: "ja".into(),
        unsubscribe_url: "https://city.example.jp/unsubscribe?t=TOKEN1".into(),
        unsubscribe_token: "TOKEN1".into(),
    };
    let prepared = Prepared::new(payload);
    let copy = channel
        .compose(
            &prepared,
            &recipient,
            "01935f7e-8a2b-7c3d-9e4f-a1b2c3d4e5f6",
            "0193-abc",
        )
        .unwrap();
    assert_eq!(copy.sender.to_string(), "bounce+0193-abc@example.jp");
    assert_eq!(copy.rcpt.to_string(), "\"taro..yamada.\"@docomo.ne.jp");
    // Unfold (RFC 5322 §2.2.3) before matching whole header values.
    let raw = String::from_utf8(copy.message())
        .unwrap()
        .replace("\r\n ", " ");
    assert!(
        // Globally unique: the announcement's UUID with the delivery id, so a reinstall or a
        // second database with the same domain never repeats one (receivers drop repeats).
        raw.contains("Message-ID: <01935f7e-8a2b-7c3d-9e4f-a1b2c3d4e5f6.0193-abc@example.jp>\r\n"),
        "{raw}"
    );
    assert!(raw.contains(
        "List-Unsubscribe: <https://city.example.jp/unsubscribe?t=TOKEN1>, <mailto:unsubscribe+TOKEN1@example.jp>"
    ));
    assert!(raw.contains("List-Id: =?utf-8?b?"), "{raw}");
    assert!(raw.contains(" <announce.city.example.jp>\r\n"));
    assert!(
        raw.contains("To: <\"taro..yamada.\"@docomo.ne.jp>\r\n"),
        "{raw}"
    );

    let bad = Recipient {
        address: "taro yamada@example.jp".into(),
        ..recipient
    };
    let err = channel.compose(&prepared, &bad, "a", "x").unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("recipient address refused"));
}

#[test]
fn data_is_dot_stuffed_with_crlf_and_terminated() {
    use crate::client::dot_stuffed;
    assert_eq!(
        dot_stuffed(b"a\r\n.b\r\n..c\r\n"),
        "a\r\n..b\r\n...c\r\n.\r\n"
    );
    assert_eq!(dot_stuffed(b"a\nb"), "a\r\nb\r\n.\r\n");
    assert_eq!(dot_stuffed(b"."), "..\r\n.\r\n");
    // Already CRLF, no dotted line: the same text, terminated.
    assert_eq!(dot_stuffed(b"a\r\nb\r\n"), "a\r\nb\r\n.\r\n");
    assert_eq!(dot_stuffed(b"a\r\nb\r\n.c\r\n"), "a\r\nb\r\n..c\r\n.\r\n");
    assert_eq!(dot_stuffed(b"a\nb\r\n"), "a\r\nb\r\n.\r\n");
}

#[test]
fn a_chunk_is_the_message_without_stuffing_or_terminator() {
    use crate::client::{dot_stuffed, Composed};
    let copy = |message: &[u8]| Composed {
        sender: "a@example.jp".parse().unwrap(),
        rcpt: "b@example.jp".parse().unwrap(),
        data: dot_stuffed(message),
    };
    for message in [
        &b"a\r\nb\r\n"[..],
        b".a\r\n..b\r\nc.\r\n.\r\n",
        b"a\r\n.\r\n..\r\nb\r\n",
    ] {
        let chunk = copy(message);
        assert_eq!(chunk.content().as_bytes(), message);
    }
    // A copy with no dotted line is lent, not copied.
    assert!(matches!(
        copy(b"a\r\nb\r\n").content(),
        std::borrow::Cow::Borrowed(_)
    ));
}

/// Each subscriber gets the announcement in their language (an `en-US` reader the `en`
/// version), with the footer in the same language; anyone else gets the primary version.
#[test]
fn each_subscriber_gets_their_language() {
    let config = Config {
        tls: TlsMode::None,
        ..Config::default()
    };
    let channel = EmailChannel::new("email", &config).unwrap();
    let mut a = announcement();
    a.variants = vec![
        noroshi_channel_core::LangText {
            lang: "en".into(),
            title: "Shelter opened".into(),
            body: "Suzaka City Hall is open as a shelter.".into(),
        },
        noroshi_channel_core::LangText {
            lang: "ja-easy".into(),
            title: "ひなんじょを あけました".into(),
            body: "しやくしょに にげて ください。".into(),
        },
    ];
    let prepared = Prepared::new(render_payload(&a).unwrap());
    let message = |lang: &str| {
        let recipient = Recipient {
            address: "hanako@example.jp".into(),
            lang: lang.into(),
            unsubscribe_url: "https://city.example.jp/unsubscribe?t=T".into(),
            unsubscribe_token: "T".into(),
        };
        let raw = channel
            .compose(&prepared, &recipient, "a", "1")
            .unwrap()
            .message();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        (
            parsed.subject().unwrap_or_default().to_string(),
            parsed.body_text(0).unwrap_or_default().to_string(),
        )
    };
    let (subject, text) = message("en-US");
    assert_eq!(subject, "Shelter opened");
    assert!(
        text.contains("Suzaka City Hall is open") && text.contains("Unsubscribe"),
        "{text}"
    );
    let (subject, text) = message("ja-easy");
    assert_eq!(subject, "ひなんじょを あけました");
    assert!(text.contains("しやくしょ"), "{text}");
    for other in ["ja", "fr", ""] {
        let (subject, text) = message(other);
        assert_eq!(subject, a.title, "{other}");
        assert!(text.contains("配信停止"), "{other}: {text}");
    }
}

/// Every copy is spliced from its announcement's template (`template.rs`); it must be the
/// very bytes lettre writes when it builds the whole personalised message, dot-stuffed and
/// terminated. Checked for bodies of every length around a base64 line, both footer
/// places, two languages, HTTPS and HTTP links (with and without `List-Unsubscribe-Post`),
/// a link with `&` (escaped in the HTML part), and body lines that start with a dot.
#[test]
fn a_spliced_copy_is_what_lettre_builds() {
    use lettre::message::header::ContentTransferEncoding;
    use lettre::message::Body;

    let config = Config {
        bounce_address: Some("bounce@example.jp".into()),
        reply_to: Some("kouhou@city.example.jp".into()),
        list_name: Some("須坂市からのお知らせ".into()),
        unsubscribe_mailto_domain: Some("example.jp".into()),
        tls: TlsMode::None,
        ..Config::default()
    };
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T09:00:00+09:00")
        .unwrap()
        .with_timezone(&Utc);
    let channel = EmailChannel::new("email", &config)
        .unwrap()
        .with_clock(std::sync::Arc::new(move || at));
    let mut checked = 0;
    for extra in 0..60 {
        let mut a = announcement();
        a.body = format!("{}\n.dotted line\n{}", a.body, "x".repeat(extra));
        a.variants = vec![noroshi_channel_core::LangText {
            lang: "en".into(),
            title: "Shelter opened".into(),
            body: format!("Suzaka City Hall is open.\n.{}", "y".repeat(extra)),
        }];
        let mut payload = render_payload(&a).unwrap();
        if extra % 2 == 1 {
            // The other footer place: no mark, before `</body>`.
            payload.html = payload.html.replace("<!--noroshi:unsubscribe-->", "");
        }
        let prepared = Prepared::new(payload);
        for (lang, url) in [
            ("ja", "https://city.example.jp/unsubscribe?t=TOKEN1&x=1"),
            ("en", "http://localhost:8080/unsubscribe?t=T2"),
        ] {
            let recipient = Recipient {
                address: "hanako@example.jp".into(),
                lang: lang.into(),
                unsubscribe_url: url.into(),
                unsubscribe_token: "TOKEN1".into(),
            };
            let copy = channel
                .compose(&prepared, &recipient, &a.id, "0193-abc")
                .unwrap();

            let (payload, template) = prepared.for_lang(lang, |_| unreachable!("built"));
            let template = template.as_ref().unwrap();
            let url = url::Url::parse(url).unwrap().to_string();
            let headers = channel.copy_headers(&copy.rcpt, &recipient, &url, &a.id, "0193-abc");
            let body = |text: String| {
                Body::new_with_encoding(text, ContentTransferEncoding::Base64).unwrap()
            };
            let whole = channel
                .lettre_message(
                    payload,
                    headers,
                    body(personal_text(payload, &url, &payload.lang)),
                    body(personal_html(payload, &url, &payload.lang)),
                    &template.boundary,
                )
                .unwrap()
                .formatted();
            assert_eq!(
                copy.data,
                dot_stuffed(&whole),
                "{extra} extra bytes, {lang}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 120);
}
