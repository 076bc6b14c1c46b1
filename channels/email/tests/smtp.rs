//! The email adapter over TCP against the fake SMTP server: message format, RFC 2047
//! vectors, failure classes, pool reuse, address rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use noroshi_channel_core::{
    BuildEnv, Channel, DeliveryContext, DeliveryError, DeliveryUnit, ErrorClass, Priority, Receipt,
    Recipient, SecretString,
};
use noroshi_email::fake::{FakeSmtp, FakeSmtpOptions};
use noroshi_email::{validate_address, Config, EmailChannel, TlsMode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const LONG_TITLE: &str =
    "【須坂市】避難指示（緊急）：本日15時、須坂市役所に避難所を開設しました。直ちに避難してください";

fn config(port: u16) -> Config {
    Config {
        enabled: true,
        smtp_host: "127.0.0.1".into(),
        smtp_port: port,
        tls: TlsMode::None,
        bounce_address: Some("bounce@example.jp".into()),
        list_id: "announce.city.example.jp".into(),
        list_name: Some("須坂市からのお知らせ".into()),
        unsubscribe_mailto_domain: Some("example.jp".into()),
        timeout_secs: 1,
        ..Config::default()
    }
}

fn channel(config: &Config) -> EmailChannel {
    EmailChannel::new("email", config).expect("valid config")
}

fn payload(channel: &dyn Channel, title: &str) -> serde_json::Value {
    let announcement = noroshi_channel_core::Announcement {
        id: "0193c2f4-0000-7000-8000-000000000001".into(),
        title: title.into(),
        body: "本日15時、須坂市役所（髙橋ホール・﨑田①番館）に避難所を開設しました。\n直ちに避難してください。\n\n.先頭がドットの行".into(),
        link: Some("https://www.city.example.jp/bousai/1.html".into()),
        priority: Priority::Disaster,
        lang: "ja".into(),
        tags: vec![],
        exercise: false,
        text_override: None,
        images: vec![],
        image_alts: vec![],
        page_url: Some("https://www.city.example.jp/site/a/1.html".into()),
        published_at: chrono::Utc::now(),
        variants: Vec::new(),
        cap: None,
        replaces: None,
    };
    channel.render(&announcement).unwrap().units.remove(0)
}

fn unit(payload: &serde_json::Value, address: &str) -> DeliveryUnit {
    DeliveryUnit {
        payload: payload.clone(),
        recipient: Some(Recipient {
            address: address.into(),
            lang: "ja".into(),
            unsubscribe_url: format!(
                "https://city.example.jp/unsubscribe?t=TOK-{}",
                address.len()
            ),
            unsubscribe_token: format!("TOK-{}", address.len()),
        }),
    }
}

fn ctx(delivery_id: &str) -> DeliveryContext {
    DeliveryContext {
        delivery_id: delivery_id.into(),
        announcement_id: "a-1".into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        priority: Priority::Normal,
        exercise: false,
        request_id: None,
        first_attempt_at: None,
    }
}

async fn send(ch: &EmailChannel, address: &str, id: &str) -> Result<Receipt, DeliveryError> {
    let p = payload(ch, "お知らせ");
    ch.deliver(&unit(&p, address), &ctx(id)).await
}

/// RFC 2047 encoded-words of one (unfolded) header value, each decoded on its own.
/// `Err` when a token is not an encoded-word or a UTF-8 word does not hold whole characters.
fn decode_words(value: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut words = Vec::new();
    for token in value.split_whitespace() {
        let inner = token
            .strip_prefix("=?")
            .and_then(|t| t.strip_suffix("?="))
            .ok_or_else(|| format!("not an encoded-word: {token}"))?;
        let mut parts = inner.splitn(3, '?');
        let (charset, enc, text) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().ok_or("short encoded-word")?,
        );
        let bytes = match enc {
            "B" | "b" => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| e.to_string())?,
            "Q" | "q" => {
                let mut out = Vec::new();
                let b = text.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    match b[i] {
                        b'_' => out.push(b' '),
                        b'=' if i + 2 < b.len() => {
                            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                            out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                            i += 2;
                        }
                        c => out.push(c),
                    }
                    i += 1;
                }
                out
            }
            _ => return Err(format!("unknown encoding {enc}")),
        };
        if charset.eq_ignore_ascii_case("utf-8") {
            // RFC 2047 §5 rule 3: each word holds whole characters.
            std::str::from_utf8(&bytes)
                .map_err(|_| format!("encoded-word {token} splits a UTF-8 character"))?;
        }
        words.push((charset.to_ascii_lowercase(), bytes));
    }
    Ok(words)
}

fn decode_utf8_header(value: &str) -> Result<String, String> {
    let mut out = String::new();
    for (charset, bytes) in decode_words(value)? {
        if charset != "utf-8" {
            return Err(format!("charset {charset}"));
        }
        out.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    Ok(out)
}

/// The raw header block's value for `name`, unfolded.
fn raw_header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[tokio::test]
async fn japanese_message_is_well_formed_on_the_wire() {
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let ch = channel(&config(fake.port()));
    let p = payload(&ch, LONG_TITLE);
    let receipt = ch
        .deliver(&unit(&p, "taro@example.jp"), &ctx("0193c2f4-d-1"))
        .await
        .expect("sent");
    assert!(fake.wait_for(1, Duration::from_secs(2)).await);
    let msg = fake.messages().remove(0);
    assert_eq!(receipt.remote_id.as_deref(), Some(msg.queue_id.as_str()));
    assert_eq!(
        msg.mail_from, "bounce+0193c2f4-d-1@example.jp",
        "VERP sender"
    );
    assert_eq!(msg.rcpt_to, vec!["taro@example.jp".to_string()]);

    // Transport-level rules: CRLF only, no line over 998 octets.
    let raw = &msg.raw;
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at octet {i}");
        }
    }
    for line in raw.split(|b| *b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
    let text = msg.text();
    assert!(
        text.is_ascii(),
        "headers encoded and bodies base64: 7-bit on the wire"
    );

    // Subject: several encoded-words, each whole characters, ≤ 75 characters, decoding
    // together to the title.
    let subject = raw_header(&text, "Subject").unwrap();
    let words = decode_words(&subject).expect("every word decodes on its own");
    assert!(words.len() > 1, "a long subject is split: {subject}");
    for token in subject.split_whitespace() {
        assert!(token.len() <= 75, "encoded-word over 75: {token}");
    }
    assert_eq!(decode_utf8_header(&subject).unwrap(), LONG_TITLE);
    let head = text.split("\r\n\r\n").next().unwrap();
    for line in head.split("\r\n").filter(|l| l.contains("=?")) {
        assert!(
            line.len() <= 76,
            "header line with encoded-words over 76: {line}"
        );
    }

    // List headers (RFC 2369, 8058, 2919, 3834).
    let unsubscribe = raw_header(&text, "List-Unsubscribe").unwrap();
    let uris: Vec<&str> = unsubscribe.split(',').map(str::trim).collect();
    assert_eq!(
        uris.iter().filter(|u| u.starts_with("<https://")).count(),
        1,
        "exactly one HTTPS URI: {unsubscribe}"
    );
    assert_eq!(uris[0], "<https://city.example.jp/unsubscribe?t=TOK-15>");
    assert_eq!(uris[1], "<mailto:unsubscribe+TOK-15@example.jp>");
    assert_eq!(
        raw_header(&text, "List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(
        raw_header(&text, "Auto-Submitted").unwrap(),
        "auto-generated"
    );
    assert_eq!(
        raw_header(&text, "Message-ID").unwrap(),
        "<a-1.0193c2f4-d-1@example.jp>"
    );
    let list_id = raw_header(&text, "List-Id").unwrap();
    assert!(
        list_id.ends_with(" <announce.city.example.jp>"),
        "{list_id}"
    );
    let name = list_id.trim_end_matches(" <announce.city.example.jp>");
    assert_eq!(decode_utf8_header(name).unwrap(), "須坂市からのお知らせ");

    // Parsed back with mail-parser.
    let parsed = MessageParser::default().parse(raw).expect("parses");
    assert_eq!(parsed.subject(), Some(LONG_TITLE));
    assert!(parsed.date().is_some(), "Date present");
    assert_eq!(parsed.message_id(), Some("a-1.0193c2f4-d-1@example.jp"));
    let ct = parsed.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("alternative"));
    let kinds: Vec<String> = parsed.parts[1..]
        .iter()
        .map(|p| {
            let ct = p.content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"], "plain first, HTML last");
    for part in &parsed.parts[1..] {
        assert_eq!(
            part.content_transfer_encoding()
                .map(|e| e.to_ascii_lowercase()),
            Some("base64".into())
        );
        let charset = part.content_type().unwrap().attribute("charset").unwrap();
        assert!(charset.eq_ignore_ascii_case("utf-8"));
    }
    let plain = parsed.body_text(0).unwrap();
    for must in [
        LONG_TITLE,
        "髙橋ホール・﨑田①番館",
        "\n.先頭がドットの行",
        "https://www.city.example.jp/bousai/1.html",
        "https://www.city.example.jp/site/a/1.html",
        "配信停止（登録解除）: https://city.example.jp/unsubscribe?t=TOK-15",
    ] {
        assert!(plain.contains(must), "plain part lacks {must:?}:\n{plain}");
    }
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains("<html lang=\"ja\">"));
    assert!(html.contains("href=\"https://city.example.jp/unsubscribe?t=TOK-15\""));
    assert!(html.contains("（詳細ページ）</a>"));
}

#[test]
fn rfc2047_vectors_decode_and_our_encoding_round_trips() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/noroshi-vectors/vectors.json"
    );
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut utf8_checked = 0;
    for v in vectors["rfc2047_subjects"].as_array().unwrap() {
        let Some(text) = v["text"].as_str() else {
            continue;
        };
        let charset = v["charset"].as_str().unwrap();
        let value = match (v["encoded"].as_str(), v["encoded_header"].as_str()) {
            (Some(e), _) => e.to_string(),
            (None, Some(h)) => h.strip_prefix("Subject: ").unwrap().replace("\r\n ", " "),
            _ => panic!("vector without an encoding"),
        };
        let words = decode_words(&value).unwrap();
        if charset == "UTF-8" {
            // Our decoder on the vector: each word whole characters, the text back.
            assert_eq!(decode_utf8_header(&value).unwrap(), text);
            utf8_checked += 1;
        } else {
            // ISO-2022-JP: every word decodes on its own and returns to ASCII (ESC ( B).
            for (_, bytes) in &words {
                assert!(bytes.starts_with(b"\x1b$B") && bytes.ends_with(b"\x1b(B"));
            }
        }
        // mail-parser agrees on every vector, both charsets.
        let raw = format!("Subject: {value}\r\n\r\nx\r\n");
        let parsed = MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert_eq!(parsed.subject(), Some(text), "{charset} vector");

        // lettre's encoding (what the adapter sends) decodes to the same text.
        let mut headers = lettre::message::header::Headers::new();
        headers.insert_raw(lettre::message::header::HeaderValue::new(
            lettre::message::header::HeaderName::new_from_ascii_str("Subject"),
            text.to_string(),
        ));
        let ours = headers.to_string();
        let ours_value = ours
            .trim_end()
            .strip_prefix("Subject: ")
            .unwrap()
            .replace("\r\n ", " ");
        assert_eq!(decode_utf8_header(&ours_value).unwrap(), text, "{ours}");
        for line in ours.split("\r\n") {
            assert!(line.len() <= 76, "folded line over 76: {line}");
        }
    }
    assert_eq!(utf8_checked, 2);
}

#[tokio::test]
async fn per_recipient_refusals_are_classified_and_do_not_break_the_connection() {
    // The same classes whether the message follows `DATA` or `BDAT … LAST` (RFC 3030).
    for chunking in [true, false] {
        refusals_are_classified(chunking).await;
    }
}

async fn refusals_are_classified(chunking: bool) {
    let fake = FakeSmtp::start(FakeSmtpOptions {
        chunking,
        ..FakeSmtpOptions::default()
    })
    .await;
    let ch = channel(&config(fake.port()));

    let e = send(&ch, "bounce-1@example.jp", "d-1").await.unwrap_err();
    assert_eq!(
        (e.class.clone(), e.status),
        (ErrorClass::Permanent, Some(550)),
        "{e}"
    );
    assert!(e.message.contains("5.1.1"), "{e}");

    let e = send(&ch, "tempfail-1@example.jp", "d-2").await.unwrap_err();
    assert_eq!(
        (e.class.clone(), e.status),
        (ErrorClass::Transient, Some(451)),
        "{e}"
    );

    let e = send(&ch, "full-1@example.jp", "d-3").await.unwrap_err();
    assert_eq!(
        (e.class.clone(), e.status),
        (ErrorClass::Permanent, Some(552)),
        "{e}"
    );
    assert!(e.message.contains("soft bounce"), "{e}");

    let e = send(&ch, "spam-1@example.jp", "d-4").await.unwrap_err();
    assert_eq!(
        (e.class.clone(), e.status),
        (ErrorClass::Permanent, Some(554)),
        "{e}"
    );

    fake.set_rcpt_reply("busy@example.jp", "450 4.2.1 Mailbox busy");
    let e = send(&ch, "busy@example.jp", "d-5").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient);

    // The others still go out, over the same connection (RSET after each refusal).
    let ok = send(&ch, "hanako@example.jp", "d-6").await.unwrap();
    assert!(ok.remote_id.unwrap().starts_with("4F"));
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, vec!["hanako@example.jp".to_string()]);
    assert_eq!(fake.connections(), 1);
    // The message refused after its content (spam-1) and the one accepted.
    assert_eq!(fake.chunked_messages(), if chunking { 2 } else { 0 });
}

#[tokio::test]
async fn auth_failure_is_auth_and_never_shows_the_password() {
    let fake = FakeSmtp::start(FakeSmtpOptions {
        credentials: Some(("noroshi".into(), "right-pass".into())),
        ..FakeSmtpOptions::default()
    })
    .await;
    let mut cfg = config(fake.port());
    cfg.username = Some("noroshi".into());
    cfg.password = Some(SecretString::from("wrong-s3cret-pass"));
    let ch = channel(&cfg);
    let e = send(&ch, "taro@example.jp", "d-1").await.unwrap_err();
    assert_eq!(
        (e.class.clone(), e.status),
        (ErrorClass::Auth, Some(535)),
        "{e}"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [
        "wrong-s3cret-pass".to_string(),
        b64.encode("\0noroshi\0wrong-s3cret-pass"),
        b64.encode("wrong-s3cret-pass"),
    ] {
        assert!(!e.message.contains(&secret), "{e}");
        assert!(!format!("{e:?}").contains(&secret));
        assert!(!format!("{ch:?}").contains(&secret));
    }
    assert_eq!(ch.healthcheck().await.unwrap_err().class, ErrorClass::Auth);
    assert_eq!(fake.auth_failures(), 2);
    assert_eq!(fake.message_count(), 0);

    cfg.password = Some(SecretString::from("right-pass"));
    let ch = channel(&cfg);
    ch.healthcheck().await.expect("healthcheck passes");
    send(&ch, "taro@example.jp", "d-2").await.expect("sent");

    // Without any credentials the server answers MAIL with 530.
    cfg.username = None;
    cfg.password = None;
    let e = send(&channel(&cfg), "taro@example.jp", "d-3")
        .await
        .unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::Auth, Some(530)));
}

#[tokio::test]
async fn connection_failures_before_the_end_of_data_are_transient() {
    // Connection refused: a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ch = channel(&config(port));
    let e = send(&ch, "taro@example.jp", "d-1").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    assert_eq!(
        ch.healthcheck().await.unwrap_err().class,
        ErrorClass::Transient
    );

    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let ch = channel(&config(fake.port()));
    fake.reject_connections(true);
    let e = send(&ch, "taro@example.jp", "d-2").await.unwrap_err();
    assert_eq!(
        (e.class.clone(), e.status),
        (ErrorClass::Transient, Some(421)),
        "{e}"
    );
    fake.reject_connections(false);

    // A server that never greets: a timeout before anything was sent.
    fake.set_greeting_delay(Duration::from_secs(3));
    let started = Instant::now();
    let e = send(&ch, "taro@example.jp", "d-3").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(fake.message_count(), 0);
}

#[tokio::test]
async fn no_reply_after_the_final_dot_is_uncertain() {
    for chunking in [true, false] {
        no_reply_after_the_message_is_uncertain(chunking).await;
    }
}

async fn no_reply_after_the_message_is_uncertain(chunking: bool) {
    let fake = FakeSmtp::start(FakeSmtpOptions {
        chunking,
        ..FakeSmtpOptions::default()
    })
    .await;
    let ch = channel(&config(fake.port()));

    // The server keeps the message but answers after our 1 s timeout.
    fake.set_data_delay(Duration::from_secs(2));
    let e = send(&ch, "taro@example.jp", "d-1").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Uncertain, "{e}");
    assert_eq!(fake.message_count(), 1, "it was in fact queued");
    fake.set_data_delay(Duration::ZERO);

    // The server keeps the message and drops the connection without a reply.
    fake.drop_after_data(true);
    let e = send(&ch, "taro@example.jp", "d-2").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Uncertain, "{e}");
    assert_eq!(fake.message_count(), 2);
    fake.drop_after_data(false);

    // The timed-out connection was not reused: the next message gets its own reply.
    let r = send(&ch, "taro@example.jp", "d-3").await.unwrap();
    let msgs = fake.messages();
    assert_eq!(r.remote_id.as_deref(), Some(msgs[2].queue_id.as_str()));
    assert_eq!(fake.chunked_messages(), if chunking { 3 } else { 0 });
}

#[tokio::test]
async fn pool_reuses_connections_across_a_thousand_recipients() {
    let fake = FakeSmtp::start(FakeSmtpOptions {
        count_only: true,
        ..FakeSmtpOptions::default()
    })
    .await;
    let mut cfg = config(fake.port());
    cfg.pool_size = 4;
    cfg.timeout_secs = 10;
    let ch = Arc::new(channel(&cfg));
    let p = payload(ch.as_ref(), "お知らせ");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let ch = Arc::clone(&ch);
        let p = p.clone();
        tasks.spawn(async move {
            ch.deliver(
                &unit(&p, &format!("r{i}@example.jp")),
                &ctx(&format!("d-{i}")),
            )
            .await
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(result) = tasks.join_next().await {
        ids.insert(result.unwrap().expect("sent").remote_id.unwrap());
    }
    assert_eq!(ids.len(), 1000, "one queue id per message");
    assert!(fake.wait_for(1000, Duration::from_secs(5)).await);
    assert!(
        fake.connections() <= 4,
        "{} connections for 1000 messages",
        fake.connections()
    );
    assert!(fake.messages().is_empty(), "count_only keeps nothing");
    eprintln!("1000 messages in {:?}", started.elapsed());
}

#[tokio::test]
async fn addresses_bad_ones_are_refused_carrier_ones_quoted() {
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let ch = channel(&config(fake.port()));
    let e = send(&ch, "taro yamada@example.jp", "d-1")
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("recipient address refused"), "{e}");
    assert_eq!(fake.connections(), 0, "refused before any connection");
    assert!(validate_address("taro yamada@example.jp").is_err());

    assert!(validate_address("taro..yamada.@docomo.ne.jp").is_ok());
    send(&ch, "taro..yamada.@docomo.ne.jp", "d-2")
        .await
        .unwrap();
    let msg = fake.messages().remove(0);
    assert_eq!(
        msg.rcpt_to,
        vec!["\"taro..yamada.\"@docomo.ne.jp".to_string()]
    );
    let parsed = MessageParser::default().parse(&msg.raw).unwrap();
    let to = parsed.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("\"taro..yamada.\"@docomo.ne.jp"));
}

#[tokio::test]
async fn build_validates_and_the_channel_targets_subscribers() {
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: std::env::temp_dir(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let bad = Config {
        from: "nobody".into(),
        ..Config::default()
    };
    let problems = noroshi_email::build(&bad, &env).err().unwrap();
    assert!(problems.iter().any(|p| p.key == "from"));
    let ch = noroshi_email::build(&config(25), &env).unwrap();
    assert_eq!(ch.name(), "email");
    assert_eq!(
        ch.audience(),
        noroshi_channel_core::Audience::EmailSubscribers
    );
    assert!(ch.fetch_reach().await.unwrap().is_empty());
}

/// B.2: the adapter dates its messages by the clock the daemon hands it at build.
#[tokio::test]
async fn build_takes_its_clock_from_the_build_env() {
    use noroshi_channel_core::ChannelConfig;
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let at: chrono::DateTime<chrono::Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: std::env::temp_dir(),
        public_base_url: "http://127.0.0.1:8080/".into(),
        clock: Arc::new(move || at),
    };
    let section = config(fake.port());
    let section: &dyn ChannelConfig = &section;
    assert!(section.enabled() && section.validate().is_empty());
    let ch = section.build("email", &env).unwrap();
    assert_eq!(ch.name(), "email");
    let p = payload(ch.as_ref(), "お知らせ");
    ch.deliver(&unit(&p, "taro@example.jp"), &ctx("d-clock"))
        .await
        .expect("sent");
    assert!(fake.wait_for(1, Duration::from_secs(2)).await);
    let msg = fake.messages().remove(0);
    let date = raw_header(&msg.text(), "Date").unwrap();
    let date = chrono::DateTime::parse_from_rfc2822(&date).unwrap();
    assert_eq!(date, at);
}

#[tokio::test]
async fn fake_speaks_pipelined_smtp_and_undoes_dot_stuffing() {
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let stream = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "));
    // Everything at once, as a PIPELINING client may.
    w.write_all(
        b"EHLO client.test\r\nMAIL FROM:<a@example.jp>\r\nRCPT TO:<b@example.jp>\r\n\
          RCPT TO:<bounce-x@example.jp>\r\nDATA\r\n",
    )
    .await
    .unwrap();
    let mut replies = Vec::new();
    while replies.len() < 12 {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        replies.push(line.trim_end().to_string());
        if line.starts_with("354") {
            break;
        }
    }
    let joined = replies.join("\n");
    for must in [
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SIZE",
        "250 AUTH PLAIN LOGIN",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "354 ",
    ] {
        assert!(joined.contains(must), "{must} missing in:\n{joined}");
    }
    w.write_all(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n")
        .await
        .unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("250 2.0.0 Ok: queued as "), "{line}");
    w.write_all(b"RSET\r\nNOOP\r\nQUIT\r\n").await.unwrap();
    let mut rest = String::new();
    for _ in 0..3 {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        rest.push_str(&line);
    }
    assert_eq!(rest, "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
    let msg = fake.messages().remove(0);
    assert_eq!(msg.raw, b"Subject: x\r\n\r\n.leading dot\r\n");
    assert_eq!(msg.rcpt_to, vec!["b@example.jp".to_string()]);
}

#[tokio::test]
async fn fake_takes_bdat_chunks_verbatim_and_stays_in_step_after_a_refusal() {
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let stream = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let first = "Subject: x\r\n\r\n";
    let last = "..kept as sent\r\n.\r\n";
    // A chunk before any recipient is read and refused; then a message in two chunks.
    let script = format!(
        "EHLO client.test\r\nBDAT 3 LAST\r\nabcRSET\r\nMAIL FROM:<a@example.jp>\r\n\
         RCPT TO:<b@example.jp>\r\nBDAT {} \r\n{first}BDAT {} LAST\r\n{last}QUIT\r\n",
        first.len(),
        last.len()
    );
    w.write_all(script.as_bytes()).await.unwrap();
    let mut replies = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut r, &mut replies)
        .await
        .unwrap();
    assert!(replies.contains("250-CHUNKING\r\n"), "{replies}");
    let tail: Vec<&str> = replies
        .lines()
        .skip_while(|l| *l != "250 AUTH PLAIN LOGIN")
        .skip(1)
        .collect();
    assert_eq!(tail[0], "503 5.5.1 Error: need MAIL command", "{replies}");
    assert_eq!(
        &tail[1..4],
        ["250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok"]
    );
    assert!(tail[4].starts_with("250 2.0.0 Ok: "), "{replies}");
    assert!(tail[5].starts_with("250 2.0.0 Ok: queued as "), "{replies}");
    assert_eq!(tail[6], "221 2.0.0 Bye");
    let msg = fake.messages().remove(0);
    assert_eq!(msg.text(), format!("{first}{last}"));
    assert_eq!(fake.chunked_messages(), 1);
}

#[tokio::test]
async fn starttls_required_but_not_offered_pauses_instead_of_sending_in_clear() {
    // The fake offers no STARTTLS: the adapter must refuse to go on (Auth pauses the
    // channel for an operator) rather than authenticate or send in clear text.
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let mut cfg = config(fake.port());
    cfg.tls = TlsMode::Starttls;
    cfg.username = Some("noroshi".into());
    cfg.password = Some(SecretString::from("pw-never-sent"));
    let ch = channel(&cfg);
    let e = send(&ch, "taro@example.jp", "d-1").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert!(e.message.contains("STARTTLS"), "{e}");
    assert_eq!(fake.message_count(), 0);
    assert_eq!(fake.auth_failures(), 0, "no AUTH was attempted in clear");
}

/// A.3: disaster copies have a connection of their own: with the whole normal pool busy
/// on a slow transaction, a disaster copy goes out on a second connection at once.
#[tokio::test]
async fn a_disaster_copy_never_waits_for_the_normal_pool() {
    let smtp = FakeSmtp::start(FakeSmtpOptions::default()).await;
    smtp.set_data_delay(Duration::from_millis(800));
    let mut cfg = config(smtp.port());
    cfg.pool_size = 1;
    cfg.timeout_secs = 5;
    let ch = Arc::new(channel(&cfg));
    let p = payload(ch.as_ref(), "お知らせ");
    let normal = {
        let (ch, p) = (ch.clone(), p.clone());
        tokio::spawn(async move {
            ch.deliver(&unit(&p, "normal@example.jp"), &ctx("n-1"))
                .await
        })
    };
    // The normal transaction holds the only normal connection.
    while smtp.message_count() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut alert = ctx("d-1");
    alert.priority = Priority::Disaster;
    ch.deliver(&unit(&p, "alert@example.jp"), &alert)
        .await
        .unwrap();
    normal.await.unwrap().unwrap();
    let messages = smtp.messages();
    let on = |to: &str| {
        messages
            .iter()
            .find(|m| m.rcpt_to[0] == to)
            .unwrap()
            .connection
    };
    assert_ne!(
        on("alert@example.jp"),
        on("normal@example.jp"),
        "the disaster copy had its own connection"
    );
    // A drill is not a live alert: it waits for the normal pool like any mail.
    let drill_started = smtp.message_count();
    let mut drill = ctx("d-2");
    drill.priority = Priority::Disaster;
    drill.exercise = true;
    ch.deliver(&unit(&p, "drill@example.jp"), &drill)
        .await
        .unwrap();
    assert_eq!(smtp.message_count(), drill_started + 1);
}

/// `raw` with the MIME boundary and the `Date:` line (both differ from build to build)
/// replaced by fixed text.
fn comparable(raw: &str) -> String {
    let boundary = raw
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a multipart boundary");
    raw.replace(boundary, "BOUNDARY")
        .split("\r\n")
        .map(|line| {
            if line.starts_with("Date: ") {
                "Date: -"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// `PIPELINING` (RFC 2920) and `CHUNKING` (RFC 3030) are used only when the server offers
/// them (`BDAT` only with both), and the message arrives the same either way.
#[tokio::test]
async fn pipelining_and_chunking_are_used_only_when_the_server_offers_them() {
    let mut received = Vec::new();
    for (pipelining, chunking) in [(true, true), (true, false), (false, true)] {
        let offered = format!("PIPELINING {pipelining}, CHUNKING {chunking}");
        let fake = FakeSmtp::start(FakeSmtpOptions {
            pipelining,
            chunking,
            ..FakeSmtpOptions::default()
        })
        .await;
        let ch = channel(&config(fake.port()));
        for i in 0..3 {
            send(&ch, &format!("r{i}@example.jp"), &format!("d-{i}"))
                .await
                .unwrap_or_else(|e| panic!("{offered}: {e}"));
        }
        // A refusal at RCPT in the middle of a pipelined transaction (with BDAT the server
        // still reads the chunk and refuses it too) leaves the connection in step.
        fake.set_rcpt_reply("gone@example.jp", "550 5.1.1 User unknown");
        let e = send(&ch, "gone@example.jp", "d-9").await.unwrap_err();
        assert_eq!(
            (e.class.clone(), e.status),
            (ErrorClass::Permanent, Some(550)),
            "{e}"
        );
        assert!(e.message.starts_with("RCPT TO: "), "{e}");
        send(&ch, "r3@example.jp", "d-3")
            .await
            .expect("sent after a refusal");
        assert_eq!(fake.message_count(), 4);
        assert_eq!(fake.connections(), 1);
        let chunked = if pipelining && chunking { 4 } else { 0 };
        assert_eq!(fake.chunked_messages(), chunked, "{offered}");
        // MAIL and RCPT each arrive with the rest of the transaction behind them.
        let expected = if pipelining { 2 * 5 } else { 0 };
        assert_eq!(fake.pipelined_commands(), expected, "{offered}");
        let msg = fake.messages().remove(0);
        assert_eq!(msg.rcpt_to, vec!["r0@example.jp".to_string()]);
        received.push(msg.text());
    }
    // The same message either way: nothing of DATA's terminator or stuffing in a chunk.
    assert!(received[0].ends_with("--\r\n"), "{}", received[0]);
    assert_eq!(comparable(&received[0]), comparable(&received[1]));
    assert_eq!(comparable(&received[0]), comparable(&received[2]));
    let parsed = MessageParser::default()
        .parse(received[0].as_bytes())
        .expect("a parseable message");
    assert_eq!(parsed.subject(), Some("お知らせ"));
    assert!(parsed
        .body_text(0)
        .is_some_and(|t| t.contains("\n.先頭がドットの行")));
}

#[tokio::test]
async fn a_changed_payload_is_read_again() {
    let fake = FakeSmtp::start(FakeSmtpOptions::default()).await;
    let ch = channel(&config(fake.port()));
    // The same announcement id (`ctx`), its stored payload changed between two copies.
    for (i, title) in ["お知らせ", "お知らせ（訂正）"].iter().enumerate() {
        let p = payload(&ch, title);
        ch.deliver(&unit(&p, "taro@example.jp"), &ctx(&format!("d-{i}")))
            .await
            .expect("sent");
    }
    let subjects: Vec<String> = fake
        .messages()
        .iter()
        .map(|m| {
            let parsed = MessageParser::default()
                .parse(m.raw.as_slice())
                .expect("a message");
            parsed.subject().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(subjects.len(), 2);
    assert!(subjects[0].ends_with("お知らせ"), "{subjects:?}");
    assert!(subjects[1].ends_with("お知らせ（訂正）"), "{subjects:?}");
}
