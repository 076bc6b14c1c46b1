//! Property tests: whatever a submitter sends, acceptance never panics, every refusal names
//! its field, and every channel's rendering stays within that platform's limits.

use std::sync::Arc;

use chrono::Utc;
use noroshi_channel_core::{Announcement, BuildEnv, Channel, LangText, Priority};
use proptest::prelude::*;

use super::*;

/// Every adapter, built from configuration as the daemon builds them (the credentials
/// are placeholders: rendering never uses them).
fn all_channels() -> Vec<Arc<dyn Channel>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noroshi.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[channels.line]
enabled = true
channel_access_token = "t"
[channels.x]
enabled = true
consumer_key = "k"
consumer_secret = "s"
access_token = "a"
access_token_secret = "b"
[channels.facebook]
enabled = true
page_id = "1"
page_access_token = "t"
[channels.email]
enabled = true
smtp_host = "127.0.0.1"
from = "市 <info@city.example.jp>"
tls = "none"
[channels.website]
enabled = true
output_dir = "{site}"
[channels.webhook.cms]
enabled = true
url = "http://127.0.0.1:9/hook"
max_length = 2000
"#,
            site = dir.path().join("site").display()
        ),
    )
    .unwrap();
    let loaded = crate::config::load_with_env(Some(&path), Vec::new()).unwrap();
    let env = BuildEnv {
        http: reqwest::Client::new(),
        data_dir: dir.path().to_path_buf(),
        public_base_url: "https://noroshi.city.example.jp/".into(),
        clock: noroshi_channel_core::system_clock(),
    };
    let channels: Vec<_> = crate::registry::build_channels(&loaded.config.channels, &env)
        .unwrap_or_else(|p| panic!("{p:?}"))
        .into_iter()
        .map(|r| r.channel)
        .collect();
    assert_eq!(channels.len(), 6);
    // Keep the website's folder for the process: renders never write, but builds may check.
    std::mem::forget(dir);
    channels
}

fn channels() -> &'static [Arc<dyn Channel>] {
    static ALL: std::sync::OnceLock<Vec<Arc<dyn Channel>>> = std::sync::OnceLock::new();
    ALL.get_or_init(all_channels)
}

/// Text as submitters write it, and worse: Japanese, emoji, URLs, control characters,
/// combining marks, very long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[あ-んア-ン漢字避難所開設のお知らせ。、\\n ]{0,400}",
        "(https://www\\.city\\.example\\.jp/[a-z]{1,10} |[a-zA-Z0-9 ]{1,20}|😀|\u{0301}|\\x00|\\r\\n){0,60}",
        "[ぁ-ゖ]{1500,6000}",
    ]
}

fn announcement() -> impl Strategy<Value = Announcement> {
    (
        text(),
        text(),
        proptest::option::of(prop_oneof![
            Just("https://www.city.example.jp/bousai/".to_string()),
            "[a-z:/.]{0,30}",
        ]),
        prop_oneof![
            Just(Priority::Normal),
            Just(Priority::Urgent),
            Just(Priority::Disaster)
        ],
        any::<bool>(),
        proptest::option::of(text()),
        proptest::collection::vec(("(en|ja-easy|zh-Hans|x|[a-z]{2})", text(), text()), 0..3),
    )
        .prop_map(
            |(title, body, link, priority, exercise, text_override, variants)| Announcement {
                id: "0193a000-0000-7000-8000-000000000001".into(),
                title,
                body,
                link,
                priority,
                lang: "ja".into(),
                tags: vec![],
                exercise,
                text_override,
                images: vec![],
                image_alts: vec![],
                page_url: Some("https://noroshi.city.example.jp/site/a/1.html".into()),
                published_at: Utc::now(),
                variants: variants
                    .into_iter()
                    .map(|(lang, title, body)| LangText { lang, title, body })
                    .collect(),
                cap: None,
                replaces: None,
            },
        )
}

fn submission_json() -> impl Strategy<Value = serde_json::Value> {
    let name = prop_oneof![
        Just("line"),
        Just("x"),
        Just("facebook"),
        Just("email"),
        Just("website"),
        Just("webhook.cms"),
        Just("telegram"),
        Just(""),
    ];
    (
        text(),
        text(),
        proptest::option::of(prop_oneof![Just("normal"), Just("urgent"), Just("disaster"), Just("panic")]),
        proptest::option::of(proptest::collection::vec(name.clone(), 0..4)),
        proptest::collection::vec((name, text()), 0..2),
        proptest::collection::vec(("(en|ja-easy|[a-z]{1,9}|)", text(), text()), 0..2),
        proptest::option::of(prop_oneof![Just("2026-12-01T09:00:00+09:00".to_string()), ".{0,30}"]),
        proptest::collection::vec(".{0,70}", 0..3),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just("ja".to_string()), "[a-z-]{0,12}"]),
    )
        .prop_map(
            |(title, body, priority, channels, overrides, variants, scheduled_at, tags, exercise, lang)| {
                let mut v = serde_json::json!({ "title": title, "body": body, "exercise": exercise, "tags": tags });
                if let Some(p) = priority {
                    v["priority"] = p.into();
                }
                if let Some(c) = channels {
                    v["channels"] = c.into();
                }
                if let Some(s) = scheduled_at {
                    v["scheduled_at"] = s.into();
                }
                if let Some(l) = lang {
                    v["lang"] = l.into();
                }
                v["overrides"] = overrides
                    .into_iter()
                    .map(|(n, t)| (n.to_string(), serde_json::json!({ "text": t })))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                v["variants"] = variants
                    .into_iter()
                    .map(|(l, t, b)| (l, serde_json::json!({ "title": t, "body": b })))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                v
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every renderer: no panic; a refusal names its rule; a rendering has units and its
    /// counted length within the platform's limit.
    #[test]
    fn every_renderer_stays_within_its_platform(a in announcement()) {
        for c in channels() {
            match c.render(&a) {
                Ok(r) => {
                    prop_assert!(!r.units.is_empty(), "{}: no units", c.name());
                    if let Some(limit) = r.preview.limit {
                        // A long-text policy may split (a thread); each unit is still checked
                        // by the adapter. The preview of a single post is within the limit.
                        if r.units.len() == 1 {
                            prop_assert!(r.preview.length <= limit, "{}: {} > {limit}", c.name(), r.preview.length);
                        }
                    }
                }
                Err(e) => {
                    prop_assert!(!e.rule.is_empty(), "{}: a refusal without a rule", c.name());
                    prop_assert!(!e.message.is_empty(), "{}: a refusal without a message", c.name());
                }
            }
        }
    }

    /// Any submission: accepted, or refused naming the field (and, for a channel's refusal,
    /// the channel and its rule); never a panic.
    #[test]
    fn any_submission_is_accepted_or_refused_naming_its_field(json in submission_json(), disaster in any::<bool>()) {
        let Ok(s) = serde_json::from_value::<Submission>(json) else { return Ok(()) };
        let known: Vec<String> = channels().iter().map(|c| c.name().to_string()).collect();
        let templates = crate::desk::templates::Templates::default();
        let ctx = AcceptContext {
            channels: channels(),
            known: &known,
            website_base_url: Some("https://noroshi.city.example.jp/site/"),
            exercise_marker: "【訓練】",
            can_send_disaster: disaster,
            allow_private_fetch: false,
            templates: &templates,
            cap_message: None,
            replaces: None,
        };
        match plan(&s, &ctx, "0193a000-0000-7000-8000-000000000002".into(), "desk", None, None, Utc::now()) {
            Ok(p) => {
                prop_assert!(!p.channels.is_empty());
                for c in &p.channels {
                    prop_assert!(!c.units.is_empty(), "{}", c.channel);
                }
            }
            Err(Refusal::Invalid { field, detail } | Refusal::NotAllowed { field, detail }) => {
                prop_assert!(!field.is_empty(), "no field: {detail}");
                prop_assert!(!detail.is_empty());
            }
            Err(Refusal::Channels(refusals)) => {
                prop_assert!(!refusals.is_empty());
                for r in refusals {
                    prop_assert!(!r.field.is_empty() && r.channel.is_some() && r.rule.is_some(), "{r:?}");
                }
            }
        }
    }
}
