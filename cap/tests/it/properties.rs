//! Properties, with proptest (256 cases each, so the whole suite stays at a few seconds):
//! - `parse` never panics, on arbitrary bytes and on arbitrary edits of valid documents,
//!   and every refusal says where and why;
//! - any valid `Alert` survives `to_xml` then `parse` unchanged, validates, and is written
//!   without a DOCTYPE; its file name is path-safe.

use proptest::prelude::*;
use proptest::sample::{select, Index};

use noroshi_cap::{
    file_name, parse, to_xml, validate, Alert, Area, CapDateTime, Category, Certainty, Circle,
    Info, MsgType, Point, Polygon, Reference, Resource, ResponseType, Scope, Severity, Status,
    Urgency,
};

use crate::common::{read_alert_file, EXAMPLE};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Parses, and if refused, checks the refusal says where and why.
fn parse_checked(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = parse(bytes) {
        prop_assert!(!e.element.is_empty(), "empty element in {e:?}");
        prop_assert!(!e.detail.is_empty(), "empty detail in {e:?}");
    }
    Ok(())
}

/// One edit of a document: bytes and lines, since most parser paths are reached by
/// structural damage rather than noise.
#[derive(Debug, Clone)]
enum Edit {
    DeleteByte(Index),
    InsertByte(Index, u8),
    ReplaceByte(Index, u8),
    InsertMarkup(Index, &'static str),
    DeleteRange(Index, usize),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    const MARKUP: &[&str] = &[
        "<",
        ">",
        "&",
        "&amp;",
        "&#0;",
        "&#x10FFFF;",
        "&lt",
        "]]>",
        "<![CDATA[",
        "<!--",
        "-->",
        "<?x?>",
        "<!DOCTYPE a>",
        "</info>",
        "<info>",
        "<area/>",
        "xmlns=\"\"",
        "<x:y>",
        "\"",
        "'",
        "\u{0}",
        "\u{FEFF}",
        "\r",
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/>",
    ];
    prop_oneof![
        any::<Index>().prop_map(Edit::DeleteByte),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::InsertByte(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::ReplaceByte(i, b)),
        (any::<Index>(), select(MARKUP)).prop_map(|(i, m)| Edit::InsertMarkup(i, m)),
        (any::<Index>(), 1usize..40).prop_map(|(i, n)| Edit::DeleteRange(i, n)),
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(doc: &mut Vec<u8>, edit: &Edit) {
    if doc.is_empty() {
        doc.push(b'<');
    }
    let lines =
        |doc: &[u8]| -> Vec<Vec<u8>> { doc.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect() };
    match edit {
        Edit::DeleteByte(i) => {
            doc.remove(i.index(doc.len()));
        }
        Edit::InsertByte(i, b) => doc.insert(i.index(doc.len() + 1), *b),
        Edit::ReplaceByte(i, b) => {
            let at = i.index(doc.len());
            doc[at] = *b;
        }
        Edit::InsertMarkup(i, markup) => {
            let at = i.index(doc.len() + 1);
            doc.splice(at..at, markup.bytes());
        }
        Edit::DeleteRange(i, n) => {
            let at = i.index(doc.len());
            let end = (at + n).min(doc.len());
            doc.drain(at..end);
        }
        Edit::DeleteLine(i) | Edit::DuplicateLine(i) => {
            let mut l = lines(doc);
            let at = i.index(l.len());
            if matches!(edit, Edit::DeleteLine(_)) {
                l.remove(at);
            } else {
                let copy = l[at].clone();
                l.insert(at, copy);
            }
            *doc = l.join(&b'\n');
        }
        Edit::SwapLines(a, b) => {
            let mut l = lines(doc);
            let (a, b) = (a.index(l.len()), b.index(l.len()));
            l.swap(a, b);
            *doc = l.join(&b'\n');
        }
    }
}

// --- Generators for valid alerts --------------------------------------------------------

/// An identifier or sender: no white space, commas, `<` or `&`.
fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:@/+=-]{1,24}"
}

/// Free text, with the characters that need escaping, a carriage return, and Japanese.
fn text() -> BoxedStrategy<String> {
    "[ -~\t\n\r\u{3000}-\u{30FF}\u{4E00}-\u{4E2F}éü]{0,24}".boxed()
}

fn opt_text() -> BoxedStrategy<Option<String>> {
    proptest::option::of(text()).boxed()
}

fn date_time() -> impl Strategy<Value = CapDateTime> {
    (
        1i32..=9999,
        1u32..=12,
        1u32..=28,
        0u32..=23,
        0u32..=59,
        0u32..=59,
        -14i32..=14,
        select(&[0u32, 15, 30, 45][..]),
    )
        .prop_map(|(y, mo, d, h, mi, s, oh, om)| {
            let om = if oh.abs() == 14 { 0 } else { om };
            // -00:00 is CAP's way of writing UTC; +00:00 is allowed too.
            let sign = if oh < 0 || (oh == 0 && om == 0 && y % 2 == 0) {
                '-'
            } else {
                '+'
            };
            let text = format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}:{om:02}",
                oh.abs()
            );
            CapDateTime::parse(&text).unwrap_or_else(|| panic!("{text} should be a CAP date-time"))
        })
}

fn language() -> impl Strategy<Value = String> {
    "[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8}){0,2}"
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..3)
}

fn point() -> impl Strategy<Value = Point> {
    (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lon)| Point { lat, lon })
}

fn polygon() -> impl Strategy<Value = Polygon> {
    proptest::collection::vec(point(), 3..7).prop_map(|mut points| {
        points.push(points[0]);
        Polygon { points }
    })
}

fn circle() -> impl Strategy<Value = Circle> {
    (point(), 0.0f64..1000.0).prop_map(|(center, radius_km)| Circle { center, radius_km })
}

fn area() -> impl Strategy<Value = Area> {
    (
        text(),
        proptest::collection::vec(polygon(), 0..2),
        proptest::collection::vec(circle(), 0..2),
        pairs(),
        proptest::option::of(-1.0e6f64..1.0e6),
        proptest::option::of(-1.0e6f64..1.0e6),
    )
        .prop_map(
            |(area_desc, polygons, circles, geocodes, altitude, ceiling)| Area {
                area_desc,
                polygons,
                circles,
                geocodes,
                altitude,
                // A ceiling only with an altitude.
                ceiling: ceiling.filter(|_| altitude.is_some()),
            },
        )
}

fn uri() -> impl Strategy<Value = String> {
    "https://[a-z]{1,10}\\.jp/[a-z0-9/._~-]{0,12}(\\?[a-z]=[0-9]{1,3})?"
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        text(),
        text(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(uri()),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(resource_desc, mime_type, size, uri, deref_uri, digest)| Resource {
                resource_desc,
                mime_type,
                size,
                uri,
                deref_uri,
                digest,
            },
        )
}

fn info() -> impl Strategy<Value = Info> {
    let head = (
        language(),
        proptest::collection::vec(select(Category::ALL), 1..3),
        text(),
        proptest::collection::vec(select(ResponseType::ALL), 0..3),
        select(Urgency::ALL),
        select(Severity::ALL),
        select(Certainty::ALL),
        opt_text(),
        pairs(),
    );
    let dates = (
        proptest::option::of(date_time()),
        proptest::option::of(date_time()),
        proptest::option::of(date_time()),
    );
    let words = (
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        proptest::option::of(uri()),
        opt_text(),
    );
    let lists = (
        pairs(),
        proptest::collection::vec(resource(), 0..2),
        proptest::collection::vec(area(), 0..3),
    );
    (head, dates, words, lists).prop_map(
        |(
            (
                language,
                categories,
                event,
                response_types,
                urgency,
                severity,
                certainty,
                audience,
                event_codes,
            ),
            (effective, onset, expires),
            (sender_name, headline, description, instruction, web, contact),
            (parameters, resources, areas),
        )| Info {
            language,
            categories,
            event,
            response_types,
            urgency,
            severity,
            certainty,
            audience,
            event_codes,
            effective,
            onset,
            expires,
            sender_name,
            headline,
            description,
            instruction,
            web,
            contact,
            parameters,
            resources,
            areas,
        },
    )
}

fn reference() -> impl Strategy<Value = Reference> {
    (id(), id(), date_time()).prop_map(|(sender, identifier, sent)| Reference {
        sender,
        identifier,
        sent,
    })
}

fn alert() -> impl Strategy<Value = Alert> {
    let head = (
        id(),
        id(),
        date_time(),
        select(Status::ALL),
        select(MsgType::ALL),
        opt_text(),
        select(Scope::ALL),
    );
    let middle = (
        opt_text(),
        opt_text(),
        proptest::collection::vec(text(), 0..3),
        opt_text(),
        proptest::collection::vec(reference(), 0..3),
        opt_text(),
    );
    let infos = proptest::collection::vec(info(), 0..3);
    (head, middle, infos).prop_map(
        |(
            (identifier, sender, sent, status, msg_type, source, scope),
            (restriction, addresses, codes, note, mut references, incidents),
            infos,
        )| {
            // Keep the rules: who a restricted or private message is for, and what an
            // update, cancel, ack or error refers to.
            let needed = |value: Option<String>, wanted: bool, fallback: &str| match value {
                Some(v) if !v.trim().is_empty() => Some(v),
                _ if wanted => Some(fallback.to_owned()),
                other => other,
            };
            let restriction = needed(restriction, scope == Scope::Restricted, "市職員のみ");
            let addresses = needed(addresses, scope == Scope::Private, "bousai@example.jp");
            if msg_type != MsgType::Alert && references.is_empty() {
                references.push(Reference {
                    sender: sender.clone(),
                    identifier: format!("{identifier}-earlier"),
                    sent: sent.clone(),
                });
            }
            Alert {
                identifier,
                sender,
                sent,
                status,
                msg_type,
                source,
                scope,
                restriction,
                addresses,
                codes,
                note,
                references,
                incidents,
                infos,
            }
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_checked(&bytes)?;
    }

    #[test]
    fn parse_never_panics_on_xml_like_text(text in "[<>/?!=\"' &;#:xmlnsalertifo\\[\\]\n-]{0,200}") {
        parse_checked(text.as_bytes())?;
    }

    #[test]
    fn parse_never_panics_on_edited_valid_documents(
        which in 0usize..3,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let mut doc = match which {
            0 => EXAMPLE.as_bytes().to_vec(),
            1 => read_alert_file("canada_signed.cap.xml"),
            _ => read_alert_file("earthquake-iso8859-1.cap.xml"),
        };
        for e in &edits {
            apply(&mut doc, e);
        }
        parse_checked(&doc)?;
    }

    #[test]
    fn valid_alerts_round_trip_through_to_xml(a in alert()) {
        let xml = to_xml(&a);
        prop_assert!(!xml.contains("<!DOCTYPE") && !xml.contains("<!ENTITY"));
        match parse(xml.as_bytes()) {
            Ok(back) => prop_assert_eq!(back, a.clone()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{xml}"))),
        }
        prop_assert!(validate(&a).is_ok());
        let name = file_name(&a);
        prop_assert!(
            name.ends_with(".xml") && !name.starts_with('.') && name.len() <= 103
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "{}", name
        );
    }
}
