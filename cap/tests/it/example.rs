//! The CHANNELS.md §5.3 example alert.

use noroshi_cap::{
    parse, Category, Certainty, MsgType, Point, ResponseType, Scope, Severity, Status, Urgency,
};

use crate::common::EXAMPLE;

#[test]
fn the_example_parses_into_the_expected_model() {
    let a = parse(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(
        a.identifier,
        "urn:uuid:0193c2f4-5e6a-7b1c-9d2e-3f4a5b6c7d8e"
    );
    assert_eq!(a.sender, "bousai@city.suzaka.nagano.jp");
    assert_eq!(a.sent.as_str(), "2026-11-23T15:00:00+09:00");
    assert_eq!(
        a.sent.value().to_rfc3339(),
        "2026-11-23T15:00:00+09:00",
        "the parsed instant keeps its offset"
    );
    assert_eq!(a.status, Status::Actual);
    assert_eq!(a.msg_type, MsgType::Alert);
    assert_eq!(a.scope, Scope::Public);
    assert_eq!(a.source, None);
    assert!(a.references.is_empty());
    assert!(a.codes.is_empty());
    assert_eq!(a.infos.len(), 2);

    let ja = &a.infos[0];
    assert_eq!(ja.language, "ja-JP");
    assert_eq!(ja.categories, [Category::Met]);
    assert_eq!(ja.event, "避難指示");
    assert_eq!(ja.response_types, [ResponseType::Evacuate]);
    assert_eq!(
        (ja.urgency, ja.severity, ja.certainty),
        (Urgency::Immediate, Severity::Severe, Certainty::Likely)
    );
    assert_eq!(ja.event_codes, [("警戒レベル".to_owned(), "4".to_owned())]);
    assert_eq!(
        ja.effective.as_ref().unwrap().as_str(),
        "2026-11-23T15:00:00+09:00"
    );
    assert_eq!(ja.onset, None);
    assert_eq!(
        ja.expires.as_ref().unwrap().as_str(),
        "2026-11-24T15:00:00+09:00"
    );
    assert_eq!(ja.sender_name.as_deref(), Some("須坂市"));
    assert_eq!(
        ja.headline.as_deref(),
        Some("【警戒レベル4】避難指示 須坂市 井上地区")
    );
    assert_eq!(
        ja.web.as_deref(),
        Some("https://www.city.suzaka.nagano.jp/")
    );
    assert_eq!(ja.areas.len(), 1);
    let area = &ja.areas[0];
    assert_eq!(area.area_desc, "須坂市 井上地区");
    assert_eq!(area.polygons.len(), 1);
    let points = &area.polygons[0].points;
    assert_eq!(points.len(), 5);
    assert_eq!(
        points[0],
        Point {
            lat: 36.623,
            lon: 138.3
        }
    );
    assert_eq!(points[0], points[4]);
    assert_eq!(
        area.geocodes,
        [("JIS X 0402".to_owned(), "202070".to_owned())]
    );
    assert_eq!((area.altitude, area.ceiling), (None, None));

    let en = &a.infos[1];
    assert_eq!(en.language, "en-US");
    assert_eq!(en.event, "Evacuation Order");
    assert_eq!(en.effective, None);
    assert_eq!(en.description, None);
    assert_eq!(en.areas[0].area_desc, "Inoue district, Suzaka City");
    assert!(en.areas[0].polygons.is_empty());
}

#[test]
fn the_example_round_trips() {
    let a = parse(EXAMPLE.as_bytes()).unwrap();
    let written = noroshi_cap::to_xml(&a);
    assert_eq!(parse(written.as_bytes()).unwrap(), a);
    // And writing is a fixed point after one round.
    assert_eq!(
        noroshi_cap::to_xml(&parse(written.as_bytes()).unwrap()),
        written
    );
}

#[test]
fn the_example_is_still_accepted_with_a_bom_crlf_comments_and_a_signature() {
    let mut doc = EXAMPLE.replace('\n', "\r\n");
    doc = doc.replace(
        "</alert>",
        "<!-- signed below --><Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\">\
         <SignedInfo><Reference URI=\"\"/></SignedInfo></Signature></alert>",
    );
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(doc.as_bytes());
    let a = parse(&bytes).unwrap();
    assert_eq!(a, parse(EXAMPLE.as_bytes()).unwrap());
}
