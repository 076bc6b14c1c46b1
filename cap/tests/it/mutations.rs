//! One mistake at a time, made to the CHANNELS.md example: each is refused, naming the
//! element, with the right kind.

use noroshi_cap::{parse, CapErrorKind, MAX_BYTES};

use crate::common::{assert_refused, replace_once, EXAMPLE};

use CapErrorKind::{Encoding, Forbidden, Malformed, Rule, Schema, TooLarge};

const SENT: &str = "<sent>2026-11-23T15:00:00+09:00</sent>";
const JA_EXPIRES: &str = "<expires>2026-11-24T15:00:00+09:00</expires>\n    <senderName>須坂市";

fn mutate(from: &str, to: &str) -> String {
    replace_once(EXAMPLE, from, to)
}

// --- The schema -------------------------------------------------------------------------

#[test]
fn a_missing_sent_is_named() {
    let e = assert_refused(mutate(SENT, ""), Schema, "alert/sent");
    assert!(
        e.detail.contains("missing the required element `sent`"),
        "{e}"
    );
}

#[test]
fn elements_out_of_order_are_named() {
    let doc = mutate(
        "<status>Actual</status>\n  <msgType>Alert</msgType>",
        "<msgType>Alert</msgType>\n  <status>Actual</status>",
    );
    let e = assert_refused(doc, Schema, "alert/status");
    assert!(e.detail.contains("out of order"), "{e}");

    // An optional element after the one it must precede.
    let doc = mutate(
        "<scope>Public</scope>",
        "<scope>Public</scope>\n  <source>Suzaka City</source>",
    );
    let e = assert_refused(doc, Schema, "alert/source");
    assert!(e.detail.contains("must come before `scope`"), "{e}");

    // Inside info: headline before senderName.
    let doc = mutate(
        "<senderName>須坂市</senderName>\n    <headline>【警戒レベル4】避難指示 須坂市 井上地区</headline>",
        "<headline>【警戒レベル4】避難指示 須坂市 井上地区</headline>\n    <senderName>須坂市</senderName>",
    );
    assert_refused(doc, Schema, "alert/info[0]/senderName");
}

#[test]
fn a_bad_enumeration_value_is_named_with_the_allowed_values() {
    let e = assert_refused(
        mutate("<urgency>Immediate</urgency>\n    <severity>Severe</severity>\n    <certainty>Likely</certainty>\n    <eventCode>",
               "<urgency>Now</urgency>\n    <severity>Severe</severity>\n    <certainty>Likely</certainty>\n    <eventCode>"),
        Schema,
        "alert/info[0]/urgency",
    );
    assert!(
        e.detail
            .contains("Immediate, Expected, Future, Past, Unknown"),
        "{e}"
    );
    // Case and surrounding spaces matter, as in the schema.
    assert_refused(
        mutate("<status>Actual</status>", "<status>actual</status>"),
        Schema,
        "alert/status",
    );
    assert_refused(
        mutate("<scope>Public</scope>", "<scope> Public</scope>"),
        Schema,
        "alert/scope",
    );
    let doc = EXAMPLE.replacen(
        "<category>Met</category>",
        "<category>Weather</category>",
        1,
    );
    assert_refused(doc, Schema, "alert/info[0]/category[0]");
}

#[test]
fn a_z_or_a_fraction_in_a_date_is_refused() {
    let e = assert_refused(
        mutate(SENT, "<sent>2026-11-23T06:00:00Z</sent>"),
        Schema,
        "alert/sent",
    );
    assert!(e.detail.contains("`Z` is not allowed"), "{e}");
    let e = assert_refused(
        mutate(SENT, "<sent>2026-11-23T15:00:00.5+09:00</sent>"),
        Schema,
        "alert/sent",
    );
    assert!(e.detail.contains("fractions"), "{e}");
    assert_refused(
        mutate(
            JA_EXPIRES,
            "<expires>2026-11-24T06:00:00Z</expires>\n    <senderName>須坂市",
        ),
        Schema,
        "alert/info[0]/expires",
    );
    // Shaped right, but not a real instant.
    for bad in [
        "2026-02-29T15:00:00+09:00",
        "2026-13-01T15:00:00+09:00",
        "2026-11-23T24:00:01+09:00",
        "2026-11-23T15:00:00+15:00",
        "2026-11-23T15:00:00,09:00",
        "0000-11-23T15:00:00+09:00",
    ] {
        assert_refused(
            mutate(SENT, &format!("<sent>{bad}</sent>")),
            Schema,
            "alert/sent",
        );
    }
    // XML Schema's end-of-day 24:00:00 is the next day's midnight.
    let a = parse(mutate(SENT, "<sent>2026-12-31T24:00:00+09:00</sent>").as_bytes()).unwrap();
    assert_eq!(a.sent.value().to_rfc3339(), "2027-01-01T00:00:00+09:00");
    assert_eq!(a.sent.as_str(), "2026-12-31T24:00:00+09:00");
    // xs:dateTime collapses white space, so this is fine.
    parse(mutate(SENT, "<sent>\n 2024-02-29T15:00:00-00:00 </sent>").as_bytes()).unwrap();
}

#[test]
fn unknown_duplicated_or_foreign_elements_are_named() {
    let e = assert_refused(
        mutate(
            "<scope>Public</scope>",
            "<scope>Public</scope><priority>1</priority>",
        ),
        Schema,
        "alert/priority",
    );
    assert!(e.detail.contains("not an element of CAP 1.2"), "{e}");
    assert_refused(
        mutate(
            "<event>Evacuation Order</event>",
            "<event>Evacuation Order</event><colour>red</colour>",
        ),
        Schema,
        "alert/info[1]/colour",
    );
    let e = assert_refused(mutate(SENT, &format!("{SENT}{SENT}")), Schema, "alert/sent");
    assert!(e.detail.contains("more than once"), "{e}");
    assert_refused(
        mutate("<sender>", "<sender xmlns=\"urn:example:other\">"),
        Schema,
        "alert/sender",
    );
    // A signature is only allowed at the end: the schema's wildcard takes it, and then
    // the infos after it are out of place.
    let e = assert_refused(
        mutate(
            "<scope>Public</scope>",
            "<scope>Public</scope><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/>",
        ),
        Schema,
        "alert/info[0]",
    );
    assert!(e.detail.contains("must come before `Signature`"), "{e}");
}

#[test]
fn the_root_must_be_a_cap_1_2_alert() {
    let e = assert_refused(
        EXAMPLE.replace(
            "urn:oasis:names:tc:emergency:cap:1.2",
            "urn:oasis:names:tc:emergency:cap:1.1",
        ),
        Schema,
        "alert",
    );
    assert!(e.detail.contains("only CAP 1.2"), "{e}");
    assert_refused(
        mutate(" xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\"", ""),
        Schema,
        "alert",
    );
}

#[test]
fn attributes_text_and_children_where_the_schema_has_none_are_refused() {
    assert_refused(
        mutate("<status>", "<status lang=\"en\">"),
        Schema,
        "alert/status",
    );
    assert_refused(
        mutate(
            "<areaDesc>須坂市 井上地区</areaDesc>",
            "<areaDesc>須坂市 井上地区</areaDesc>stray text",
        ),
        Schema,
        "alert/info[0]/area[0]",
    );
    assert_refused(
        mutate("<value>4</value>", "<value><b>4</b></value>"),
        Schema,
        "alert/info[0]/eventCode[0]/value",
    );
    // The schema-location hint is allowed (and never followed).
    parse(
        mutate(
            "<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">",
            "<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xsi:schemaLocation=\"urn:oasis:names:tc:emergency:cap:1.2 http://localhost:8080/cap.xsd\">",
        )
        .as_bytes(),
    )
    .unwrap();
}

#[test]
fn required_info_and_area_parts_are_named() {
    assert_refused(
        mutate("<event>避難指示</event>", ""),
        Schema,
        "alert/info[0]/event",
    );
    let no_category = EXAMPLE.replacen("<category>Met</category>", "", 1);
    assert_refused(no_category, Schema, "alert/info[0]/category");
    assert_refused(
        mutate("<areaDesc>Inoue district, Suzaka City</areaDesc>", ""),
        Schema,
        "alert/info[1]/area[0]/areaDesc",
    );
    assert_refused(
        mutate("<language>ja-JP</language>", "<language>ja_JP</language>"),
        Schema,
        "alert/info[0]/language",
    );
}

// --- The rules beyond the schema ---------------------------------------------------------

#[test]
fn an_identifier_or_sender_with_a_space_or_comma_is_refused() {
    let e = assert_refused(
        mutate(
            "<identifier>urn:uuid:0193c2f4-5e6a-7b1c-9d2e-3f4a5b6c7d8e</identifier>",
            "<identifier>urn:uuid:0193c2f4 5e6a</identifier>",
        ),
        Rule,
        "alert/identifier",
    );
    assert!(e.detail.contains("a space"), "{e}");
    assert_refused(
        mutate("<identifier>urn:uuid:", "<identifier>a,b&amp;c:"),
        Rule,
        "alert/identifier",
    );
    // An ideographic space (U+3000) is white space too.
    assert_refused(
        mutate(
            "<sender>bousai@city.suzaka.nagano.jp</sender>",
            "<sender>須坂市\u{3000}防災</sender>",
        ),
        Rule,
        "alert/sender",
    );
}

#[test]
fn an_update_needs_well_formed_references() {
    let update = mutate("<msgType>Alert</msgType>", "<msgType>Update</msgType>");
    let e = assert_refused(&update, Rule, "alert/references");
    assert!(e.detail.contains("`Update`"), "{e}");
    for msg_type in ["Cancel", "Ack", "Error"] {
        assert_refused(
            mutate(
                "<msgType>Alert</msgType>",
                &format!("<msgType>{msg_type}</msgType>"),
            ),
            Rule,
            "alert/references",
        );
    }
    let with = |references: &str| {
        replace_once(
            &update,
            "<scope>Public</scope>",
            &format!("<scope>Public</scope>\n  <references>{references}</references>"),
        )
    };
    assert_refused(with(""), Rule, "alert/references");
    assert_refused(
        with("bousai@city.suzaka.nagano.jp,abc"),
        Rule,
        "alert/references",
    );
    assert_refused(
        with("bousai@city.suzaka.nagano.jp,abc,2026-11-23T06:00:00Z"),
        Rule,
        "alert/references",
    );
    let a = parse(
        with(" bousai@city.suzaka.nagano.jp,abc,2026-11-23T14:00:00+09:00\n   x@y,def,2026-11-23T14:30:00+09:00 ")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(a.references.len(), 2);
    assert_eq!(a.references[1].identifier, "def");
}

#[test]
fn restricted_and_private_scopes_need_their_element() {
    assert_refused(
        mutate("<scope>Public</scope>", "<scope>Restricted</scope>"),
        Rule,
        "alert/restriction",
    );
    parse(
        mutate(
            "<scope>Public</scope>",
            "<scope>Restricted</scope><restriction>市職員のみ</restriction>",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_refused(
        mutate(
            "<scope>Public</scope>",
            "<scope>Private</scope><addresses> </addresses>",
        ),
        Rule,
        "alert/addresses",
    );
}

#[test]
fn polygons_circles_and_heights_follow_the_rules() {
    const POLYGON: &str =
        "36.6230,138.3000 36.6230,138.3200 36.6050,138.3200 36.6050,138.3000 36.6230,138.3000";
    let polygon = "alert/info[0]/area[0]/polygon[0]";
    assert_refused(
        mutate(
            POLYGON,
            "36.6230,138.3000 36.6230,138.3200 36.6230,138.3000",
        ),
        Rule,
        polygon,
    );
    let e = assert_refused(
        mutate(
            POLYGON,
            "36.6230,138.3000 36.6230,138.3200 36.6050,138.3200 36.6050,138.3000",
        ),
        Rule,
        polygon,
    );
    assert!(e.detail.contains("closed"), "{e}");
    assert_refused(mutate(POLYGON, "36.6230 138.3000"), Rule, polygon);
    assert_refused(
        mutate(
            POLYGON,
            "96.6230,138.3000 36.6230,138.3200 36.6050,138.3200 96.6230,138.3000",
        ),
        Rule,
        polygon,
    );
    let circle = |text: &str| {
        mutate(
            "<geocode>\n        <valueName>JIS X 0402</valueName>\n        <value>202070</value>\n      </geocode>\n    </area>\n  </info>\n  <info>",
            &format!("<circle>{text}</circle>\n    </area>\n  </info>\n  <info>"),
        )
    };
    parse(circle("36.61,138.31 2.5").as_bytes()).unwrap();
    for bad in [
        "36.61,138.31",
        "36.61,138.31 -1",
        "36.61,138.31 2 km",
        "36.61;138.31 2",
    ] {
        assert_refused(circle(bad), Rule, "alert/info[0]/area[0]/circle[0]");
    }
    let heights = |text: &str| {
        mutate(
            "<value>202070</value>\n      </geocode>\n    </area>\n  </info>\n</alert>",
            &format!(
                "<value>202070</value>\n      </geocode>{text}\n    </area>\n  </info>\n</alert>"
            ),
        )
    };
    let a = parse(heights("<altitude>100</altitude><ceiling>1500.5</ceiling>").as_bytes()).unwrap();
    assert_eq!(a.infos[1].areas[0].ceiling, Some(1500.5));
    assert_refused(
        heights("<ceiling>1500</ceiling>"),
        Rule,
        "alert/info[1]/area[0]/ceiling",
    );
    assert_refused(
        heights("<altitude>1e3</altitude>"),
        Schema,
        "alert/info[1]/area[0]/altitude",
    );
}

#[test]
fn a_resource_size_must_be_a_byte_count() {
    let resource = |size: &str| {
        mutate(
            "<area>\n      <areaDesc>須坂市",
            &format!(
                "<resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType>\
                 <size>{size}</size></resource>\n    <area>\n      <areaDesc>須坂市"
            ),
        )
    };
    assert_eq!(
        parse(resource("1024").as_bytes()).unwrap().infos[0].resources[0].size,
        Some(1024)
    );
    assert_refused(resource("-1"), Rule, "alert/info[0]/resource[0]/size");
    assert_refused(resource("1 KB"), Schema, "alert/info[0]/resource[0]/size");
}

// --- Safety, encoding, well-formedness ---------------------------------------------------

#[test]
fn a_billion_laughs_document_is_refused_without_expansion() {
    let mut doc =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE alert [\n  <!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let previous = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!(
            "  <!ENTITY lol{i} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
    }
    doc.push_str("]>\n");
    doc.push_str(
        &EXAMPLE
            .replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "", 1)
            .replace("<event>避難指示</event>", "<event>&lol9;</event>"),
    );
    let e = assert_refused(&doc, Forbidden, "(document)");
    assert!(e.detail.contains("DOCTYPE"), "{e}");
}

#[test]
fn undeclared_entities_are_refused_and_character_references_are_expanded() {
    let e = assert_refused(
        mutate("<event>避難指示</event>", "<event>避難&nbsp;指示</event>"),
        Forbidden,
        "(document)",
    );
    assert!(e.detail.contains("&nbsp;"), "{e}");
    let a = parse(
        mutate(
            "<event>避難指示</event>",
            "<event>&#36991;&#x96E3;&lt;&amp;&gt;&quot;&apos;</event>",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(a.infos[0].event, "避難<&>\"'");
    assert_refused(
        mutate("<event>避難指示</event>", "<event>&#1;</event>"),
        Malformed,
        "(document)",
    );
    assert_refused(
        mutate("<event>避難指示</event>", "<event>a & b</event>"),
        Malformed,
        "(document)",
    );
}

#[test]
fn encodings_the_parser_cannot_or_will_not_convert_are_refused() {
    let declare =
        |label: &str| EXAMPLE.replacen("encoding=\"UTF-8\"", &format!("encoding=\"{label}\""), 1);
    let e = assert_refused(declare("ISO-2022-JP"), Encoding, "(document)");
    assert!(e.detail.contains("ISO-2022-JP"), "{e}");
    let e = assert_refused(declare("x-klingon"), Encoding, "(document)");
    assert!(e.detail.contains("unknown"), "{e}");
    // Declared UTF-16 without a byte order mark (the bytes are UTF-8).
    assert_refused(declare("UTF-16"), Encoding, "(document)");
    // Declared US-ASCII but the Japanese text is not.
    assert_refused(declare("US-ASCII"), Encoding, "(document)");
    // Not UTF-8 at all, and nothing declared.
    let mut bytes = EXAMPLE.as_bytes().to_vec();
    let at = EXAMPLE.find("避難指示").unwrap();
    bytes[at] = 0xFF;
    assert_refused(&bytes, Encoding, "(document)");
}

#[test]
fn shift_jis_euc_jp_and_utf_16_documents_are_converted() {
    let expected = parse(EXAMPLE.as_bytes()).unwrap();
    for encoding in [encoding_rs::SHIFT_JIS, encoding_rs::EUC_JP] {
        let doc = EXAMPLE.replacen(
            "encoding=\"UTF-8\"",
            &format!("encoding=\"{}\"", encoding.name()),
            1,
        );
        let (bytes, _, unmappable) = encoding.encode(&doc);
        assert!(!unmappable);
        assert_eq!(parse(&bytes).unwrap(), expected, "{}", encoding.name());
    }
    let doc = EXAMPLE.replacen("encoding=\"UTF-8\"", "encoding=\"UTF-16\"", 1);
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
    assert_eq!(parse(&utf16).unwrap(), expected);
    // A byte order mark that contradicts the declaration.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(EXAMPLE.replacen("UTF-8", "Shift_JIS", 1).as_bytes());
    assert_refused(&bom, Encoding, "(document)");
}

#[test]
fn an_over_size_document_is_refused_before_parsing() {
    // Valid XML, just too long: the size is checked first.
    let padding = " ".repeat(MAX_BYTES + 1 - EXAMPLE.len());
    let doc = EXAMPLE.replacen("</alert>", &format!("{padding}</alert>"), 1);
    assert_eq!(doc.len(), MAX_BYTES + 1);
    let e = assert_refused(&doc, TooLarge, "(document)");
    assert!(e.detail.contains("1048576"), "{e}");
    // Exactly the limit is fine.
    let padding = " ".repeat(MAX_BYTES - EXAMPLE.len());
    let doc = EXAMPLE.replacen("</alert>", &format!("{padding}</alert>"), 1);
    assert_eq!(doc.len(), MAX_BYTES);
    parse(doc.as_bytes()).unwrap();
}

#[test]
fn a_large_valid_alert_is_read_in_full() {
    // Close to the size limit: thousands of geocodes, as a national alert might carry.
    let geocode = "<geocode><valueName>JIS X 0402</valueName><value>202070</value></geocode>\n";
    let count = (MAX_BYTES - EXAMPLE.len() - 100) / geocode.len();
    let doc = mutate(
        "<areaDesc>Inoue district, Suzaka City</areaDesc>",
        &format!(
            "<areaDesc>Inoue district, Suzaka City</areaDesc>\n{}",
            geocode.repeat(count)
        ),
    );
    assert!(doc.len() <= MAX_BYTES && doc.len() > MAX_BYTES - 1000);
    let a = parse(doc.as_bytes()).unwrap();
    assert_eq!(a.infos[1].areas[0].geocodes.len(), count + 1);
}

#[test]
fn documents_that_are_not_well_formed_are_refused() {
    for doc in [
        String::new(),
        "not xml".to_owned(),
        mutate("</scope>", "</Scope>"),
        mutate("</alert>", ""),
        mutate("</alert>", "</alert><alert/>"),
        format!(" {EXAMPLE}"),
        mutate("<status>", "<status><!-- a -- b -->"),
        mutate("<scope>Public</scope>", "<scope>Public</scope><x:y/>"),
        mutate("<event>避難指示</event>", "<event>]]></event>"),
        format!(
            "{}{}{}",
            "<a>".repeat(100),
            EXAMPLE.replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1),
            "</a>".repeat(100)
        ),
    ] {
        let e = assert_refused(&doc, Malformed, "(document)");
        assert!(e.detail.starts_with("line "), "{e}");
    }
}

#[test]
fn carriage_returns_are_normalised_unless_escaped() {
    let a = parse(mutate("<event>避難指示</event>", "<event>a\r\nb\rc&#13;d</event>").as_bytes())
        .unwrap();
    assert_eq!(a.infos[0].event, "a\nb\nc\rd");
    let b = parse(noroshi_cap::to_xml(&a).as_bytes()).unwrap();
    assert_eq!(b, a);
}

#[test]
fn cdata_comments_and_processing_instructions_are_handled_like_the_schema() {
    let a = parse(
        mutate(
            "<event>避難指示</event>",
            "<?page 1?><event>避難<!-- c -->指示<![CDATA[<&>]]></event>",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(a.infos[0].event, "避難指示<&>");
}
