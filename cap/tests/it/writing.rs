//! `to_xml`, `validate`, `file_name`, and the small public helpers.

use chrono::{FixedOffset, TimeZone, Utc};
use noroshi_cap::{
    file_name, parse, to_xml, validate, Alert, CapDateTime, CapErrorKind, Category, Certainty,
    Info, MsgType, ResponseType, Scope, Severity, Status, Urgency,
};

use crate::common::EXAMPLE;

fn example() -> Alert {
    parse(EXAMPLE.as_bytes()).unwrap()
}

#[test]
fn to_xml_writes_a_declaration_the_namespace_and_schema_order() {
    let xml = to_xml(&example());
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n"));
    assert!(!xml.contains("DOCTYPE"));
    let order = [
        "<identifier>",
        "<sender>",
        "<sent>",
        "<status>",
        "<msgType>",
        "<scope>",
        "<info>",
    ];
    let positions: Vec<usize> = order.iter().map(|tag| xml.find(tag).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{xml}");
    assert!(xml.contains(
        "<polygon>36.623,138.3 36.623,138.32 36.605,138.32 36.605,138.3 36.623,138.3</polygon>"
    ));
}

#[test]
fn to_xml_escapes_text() {
    let mut a = example();
    a.infos[0].description = Some("a<b & c>d ]]> \"q\" 'a'\r\n\u{1}".into());
    let xml = to_xml(&a);
    assert!(
        xml.contains("a&lt;b &amp; c&gt;d ]]&gt; \"q\" 'a'&#13;\n\u{FFFD}"),
        "{xml}"
    );
    let back = parse(xml.as_bytes()).unwrap();
    assert_eq!(
        back.infos[0].description.as_deref(),
        Some("a<b & c>d ]]> \"q\" 'a'\r\n\u{FFFD}")
    );
}

#[test]
fn validate_names_what_a_model_gets_wrong() {
    validate(&example()).unwrap();

    let mut a = example();
    a.infos[1].categories.clear();
    let e = validate(&a).unwrap_err();
    assert_eq!(
        (e.kind, e.element.as_str()),
        (CapErrorKind::Schema, "alert/info[1]/category")
    );

    let mut a = example();
    a.msg_type = MsgType::Cancel;
    let e = validate(&a).unwrap_err();
    assert_eq!(
        (e.kind, e.element.as_str()),
        (CapErrorKind::Rule, "alert/references")
    );

    let mut a = example();
    a.infos[0].language = "日本語".into();
    assert_eq!(validate(&a).unwrap_err().element, "alert/info[0]/language");
}

#[test]
fn a_model_built_in_code_is_valid() {
    // What the daemon does when it writes its own alert.
    let jst = FixedOffset::east_opt(9 * 3600).unwrap();
    let sent =
        CapDateTime::from_datetime(jst.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap()).unwrap();
    assert_eq!(sent.as_str(), "2026-11-23T15:00:00+09:00");
    let alert = Alert {
        identifier: "urn:uuid:0193c2f4-5e6a-7b1c-9d2e-3f4a5b6c7d8e".into(),
        sender: "bousai@city.suzaka.nagano.jp".into(),
        sent: sent.clone(),
        status: Status::Exercise,
        msg_type: MsgType::Alert,
        source: Some("Noroshi".into()),
        scope: Scope::Public,
        restriction: None,
        addresses: None,
        codes: Vec::new(),
        note: None,
        references: Vec::new(),
        incidents: None,
        infos: vec![Info {
            language: "ja-JP".into(),
            categories: vec![Category::Safety],
            event: "避難情報".into(),
            response_types: vec![ResponseType::Shelter],
            urgency: Urgency::Expected,
            severity: Severity::Minor,
            certainty: Certainty::Observed,
            expires: Some(sent),
            headline: Some("避難所開設のお知らせ".into()),
            ..Info::default()
        }],
    };
    validate(&alert).unwrap();
    assert_eq!(parse(to_xml(&alert).as_bytes()).unwrap(), alert);
}

#[test]
fn cap_date_times_are_written_the_cap_way() {
    let utc = Utc
        .with_ymd_and_hms(2026, 11, 23, 6, 0, 0)
        .unwrap()
        .fixed_offset();
    let written = CapDateTime::from_datetime(utc).unwrap();
    assert_eq!(written.as_str(), "2026-11-23T06:00:00-00:00");
    assert_eq!(written.value(), utc);
    // Fractions of a second are dropped.
    let fraction = utc + chrono::Duration::milliseconds(1500);
    assert_eq!(
        CapDateTime::from_datetime(fraction).unwrap().as_str(),
        "2026-11-23T06:00:01-00:00"
    );
    let far = Utc
        .with_ymd_and_hms(10000, 1, 1, 0, 0, 0)
        .unwrap()
        .fixed_offset();
    assert_eq!(CapDateTime::from_datetime(far), None);
    assert_eq!(CapDateTime::parse("2026-11-23T06:00:00Z"), None);
    assert_eq!(
        CapDateTime::parse("2026-11-23T06:00:00+14:00")
            .unwrap()
            .to_string(),
        "2026-11-23T06:00:00+14:00"
    );
}

#[test]
fn enums_use_the_exact_cap_spelling() {
    assert_eq!(Category::Cbrne.as_str(), "CBRNE");
    assert_eq!(ResponseType::AllClear.as_str(), "AllClear");
    assert_eq!(MsgType::from_cap_str("Ack"), Some(MsgType::Ack));
    assert_eq!(Status::from_cap_str("actual"), None);
    macro_rules! round_trip {
        ($($t:ty),*) => {$(
            for v in <$t>::ALL {
                assert_eq!(<$t>::from_cap_str(v.as_str()), Some(*v));
                assert_eq!(v.to_string(), v.as_str());
            }
        )*};
    }
    round_trip!(
        Status,
        MsgType,
        Scope,
        Category,
        ResponseType,
        Urgency,
        Severity,
        Certainty
    );
    assert_eq!(Category::ALL.len(), 12);
    assert_eq!(ResponseType::ALL.len(), 9);
}

fn is_path_safe(name: &str) -> bool {
    !name.starts_with('.')
        && name.ends_with(".xml")
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[test]
fn file_names_are_stable_path_safe_and_distinct() {
    let a = example();
    let name = file_name(&a);
    assert!(
        name.starts_with("20261123T150000p0900-urn_uuid_0193c2f4-5e6a-7b1c-9d2e-3f4a5b6c7d8e-"),
        "{name}"
    );
    assert!(is_path_safe(&name), "{name}");
    let hash = &name[name.len() - 12..name.len() - 4];
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{name}"
    );
    // Deterministic, and equal for an equal alert read back.
    assert_eq!(file_name(&parse(to_xml(&a).as_bytes()).unwrap()), name);

    // Identifiers that sanitise alike, and other senders, still get different names.
    let with = |sender: &str, identifier: &str, sent: &str| {
        let mut b = a.clone();
        b.sender = sender.into();
        b.identifier = identifier.into();
        b.sent = CapDateTime::parse(sent).unwrap();
        file_name(&b)
    };
    let t = "2026-11-23T15:00:00+09:00";
    let names = [
        with("s", "a:b", t),
        with("s", "a/b", t),
        with("s", "a_b", t),
        with("t", "a:b", t),
        with("s", "a:b", "2026-11-23T06:00:00-00:00"),
        with("s", "a:b", "2026-11-23T06:00:00+00:00"),
    ];
    for (i, x) in names.iter().enumerate() {
        assert!(is_path_safe(x), "{x}");
        for y in &names[i + 1..] {
            assert_ne!(x, y);
        }
    }
    assert!(
        names[4].starts_with("20261123T060000m0000-a_b-"),
        "{}",
        names[4]
    );

    // Long and non-ASCII identifiers are cut and replaced; path tricks go nowhere.
    let long = with("s", &"x".repeat(500), t);
    assert!(long.len() <= 103 && is_path_safe(&long), "{long}");
    let tricky = with("s", "../../etc/passwd", t);
    assert!(is_path_safe(&tricky) && !tricky.contains('/'), "{tricky}");
    let japanese = with("s", "須坂市-避難指示-0001", t);
    assert!(
        japanese.starts_with("20261123T150000p0900-___-____-0001-"),
        "{japanese}"
    );
}
