//! Every sample alert of shared/conformance/oasis-cap-1.2/alerts, with the outcome
//! SOURCE.md gives for it.

use noroshi_cap::{
    parse, CapErrorKind, Category, Circle, MsgType, Point, ResponseType, Scope, Status,
};

use crate::common::{alerts_dir, assert_refused, read_alert_file};

/// The files parse must accept.
pub const VALID: &[&str] = &[
    "australia.cap.xml",
    "canada.cap.xml",
    "canada_signed.cap.xml",
    "earthquake-iso8859-1.cap.xml",
    "wcatwc-warning.cap.xml",
];

/// The files parse must refuse: (file, kind, element).
const REFUSED: &[(&str, CapErrorKind, &str)] = &[
    // Schema-valid, but an Update with an empty <references/>.
    (
        "canada_errors.cap.xml",
        CapErrorKind::Rule,
        "alert/references",
    ),
    // No <scope>.
    ("invalid.cap.xml", CapErrorKind::Schema, "alert/scope"),
    // A DOCTYPE with external entities, an XInclude and a schemaLocation.
    ("xee.cap.xml", CapErrorKind::Forbidden, "(document)"),
];

#[test]
fn every_file_in_the_directory_has_an_expected_outcome() {
    let mut names: Vec<String> = std::fs::read_dir(alerts_dir())
        .expect("the conformance alerts directory")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 8,
        "expected the eight sample alerts, found {names:?}"
    );
    for name in &names {
        let known = VALID.contains(&name.as_str()) || REFUSED.iter().any(|r| r.0 == name);
        assert!(
            known,
            "{name} has no expected outcome in this test; add one"
        );
    }
}

#[test]
fn valid_samples_are_accepted() {
    for name in VALID {
        if let Err(e) = parse(&read_alert_file(name)) {
            panic!("{name} should be accepted, but: {e}");
        }
    }
}

#[test]
fn invalid_samples_are_refused_naming_the_element() {
    for &(name, kind, element) in REFUSED {
        let e = assert_refused(read_alert_file(name), kind, element);
        eprintln!("{name}: {e}");
    }
}

#[test]
fn xee_is_refused_for_its_doctype_before_anything_is_resolved() {
    let e = assert_refused(
        read_alert_file("xee.cap.xml"),
        CapErrorKind::Forbidden,
        "(document)",
    );
    assert!(e.detail.contains("DOCTYPE"), "{e}");
    // This crate has no network or file-system code at all, so "nothing was fetched"
    // holds by construction; the refusal above happens before any content is read.
    assert!(e.detail.contains("line 3"), "the DOCTYPE is on line 3: {e}");
}

#[test]
fn canada_errors_passes_the_schema_part_and_fails_the_rule() {
    let e = assert_refused(
        read_alert_file("canada_errors.cap.xml"),
        CapErrorKind::Rule,
        "alert/references",
    );
    assert!(e.detail.contains("Update"), "{e}");
}

#[test]
fn invalid_cap_names_the_missing_scope() {
    let e = assert_refused(
        read_alert_file("invalid.cap.xml"),
        CapErrorKind::Schema,
        "alert/scope",
    );
    assert!(e.detail.contains("missing"), "{e}");
}

#[test]
fn australia_uses_a_prefix_and_has_circles() {
    let a = parse(&read_alert_file("australia.cap.xml")).unwrap();
    assert_eq!(a.identifier, "tag:www.rfs.nsw.gov.au2011-10-06:40184");
    assert_eq!(a.sent.as_str(), "2011-10-05T23:04:00+10:00");
    assert_eq!(a.sent.value().offset().local_minus_utc(), 10 * 3600);
    assert_eq!(
        a.codes,
        ["urn:oasis:names:tc:emergency:cap:1.2:profile:CAP-AU:1.0"]
    );
    assert_eq!(a.infos.len(), 2);
    let info = &a.infos[0];
    assert_eq!(info.language, "en-AU");
    assert_eq!(info.categories, [Category::Fire, Category::Met]);
    assert_eq!(info.response_types, [ResponseType::Evacuate]);
    assert_eq!(info.event_codes.len(), 2);
    assert_eq!(info.parameters.len(), 7);
    // `<cap:value />` is an empty string, not a missing one.
    assert_eq!(
        info.parameters[5],
        ("AllocatedResources".into(), String::new())
    );
    assert!(info.description.as_deref().unwrap().contains("<br />"));
    assert_eq!(info.resources[0].mime_type, "text/html");
    assert_eq!(
        info.areas[0].circles,
        [Circle {
            center: Point {
                lat: -35.3888,
                lon: 147.0598
            },
            radius_km: 25.0
        }]
    );
}

#[test]
fn canada_is_an_update_with_two_references() {
    let a = parse(&read_alert_file("canada.cap.xml")).unwrap();
    assert_eq!(a.msg_type, MsgType::Update);
    assert_eq!(a.scope, Scope::Public);
    assert_eq!(a.restriction.as_deref(), Some(""));
    assert_eq!(a.references.len(), 2);
    assert_eq!(a.references[0].sender, "cap@ec.gc.ca");
    assert_eq!(a.references[0].identifier, "2.49.0.1.124.a3f342a4.2012");
    assert_eq!(a.references[0].sent.as_str(), "2012-05-02T21:45:05-00:00");
    assert_eq!(a.infos[1].language, "fr-CA");
    assert!(a.infos[1]
        .description
        .as_deref()
        .unwrap()
        .contains("épreuve"));
    assert_eq!(a.infos[0].areas[0].polygons[0].points.len(), 17);
}

#[test]
fn canada_signed_keeps_the_alert_and_ignores_its_two_signatures() {
    let a = parse(&read_alert_file("canada_signed.cap.xml")).unwrap();
    assert_eq!(a.references.len(), 9);
    assert_eq!(a.status, Status::Actual);
    let written = noroshi_cap::to_xml(&a);
    assert!(!written.contains("Signature"));
}

#[test]
fn earthquake_is_read_as_iso_8859_1() {
    let a = parse(&read_alert_file("earthquake-iso8859-1.cap.xml")).unwrap();
    let info = &a.infos[0];
    // No <language>: the schema's default.
    assert_eq!(info.language, "en-US");
    assert!(info.headline.as_deref().unwrap().contains("Usulután"));
    assert!(info.areas[0].area_desc.contains("Usulután"));
    assert_eq!(info.areas[0].circles[0].radius_km, 0.0);
}

#[test]
fn wcatwc_is_an_update_with_one_reference() {
    let a = parse(&read_alert_file("wcatwc-warning.cap.xml")).unwrap();
    assert_eq!(a.msg_type, MsgType::Update);
    assert_eq!(a.references.len(), 1);
    assert_eq!(
        a.references[0].to_string(),
        "PAAQ,PAAQ-1-lqw6d6,2011-09-02T10:55:55-00:00"
    );
    assert_eq!(a.incidents.as_deref(), Some("lqw6d6"));
    assert_eq!(a.infos[0].resources.len(), 3);
}

#[test]
fn every_valid_sample_round_trips_through_to_xml() {
    for name in VALID {
        let a = parse(&read_alert_file(name)).unwrap();
        let again = parse(noroshi_cap::to_xml(&a).as_bytes())
            .unwrap_or_else(|e| panic!("{name}: to_xml output refused: {e}"));
        assert_eq!(again, a, "{name}");
    }
}
