//! libxml2 (xmllint) against the real cap12.xsd, as an independent judge:
//! - what `to_xml` writes is schema-valid;
//! - on generated mutations of the example, xmllint and `parse` agree about the schema
//!   (a refusal of kind `Rule` counts as "the schema part passed", since those rules are
//!   exactly what the XSD does not check).
//!
//! Skipped, saying so, when xmllint (Debian's libxml2-utils) is not installed.

use std::io::Write as _;
use std::process::{Command, Stdio};

use noroshi_cap::{parse, to_xml, CapErrorKind};

use crate::common::{read_alert_file, replace_once, schema_path, EXAMPLE};
use crate::conformance::VALID;

fn xmllint_found() -> bool {
    let found = Command::new("xmllint")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("SKIPPED: xmllint not found (install libxml2-utils to run the XSD cross-check)");
    }
    found
}

/// Validates with `xmllint --noout --nonet --schema cap12.xsd -`.
fn xsd_check(doc: &[u8]) -> Result<(), String> {
    let mut child = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(schema_path())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running xmllint");
    // xmllint reads all of its input before it writes anything, so this cannot deadlock.
    child.stdin.take().unwrap().write_all(doc).unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn xmllint_judges_the_samples_as_source_md_says() {
    if !xmllint_found() {
        return;
    }
    // A check that the judge itself is working: it accepts the valid samples and
    // canada_errors (whose fault is beyond the XSD), and refuses invalid.cap.xml.
    for name in VALID.iter().chain(&["canada_errors.cap.xml"]) {
        if let Err(e) = xsd_check(&read_alert_file(name)) {
            panic!("xmllint refused {name}: {e}");
        }
    }
    assert!(xsd_check(&read_alert_file("invalid.cap.xml")).is_err());
}

#[test]
fn to_xml_output_is_valid_against_cap12_xsd() {
    if !xmllint_found() {
        return;
    }
    let mut docs = vec![(
        "CHANNELS.md example".to_owned(),
        EXAMPLE.as_bytes().to_vec(),
    )];
    for name in VALID {
        docs.push((name.to_string(), read_alert_file(name)));
    }
    for (name, doc) in docs {
        let written = to_xml(&parse(&doc).unwrap());
        if let Err(e) = xsd_check(written.as_bytes()) {
            panic!("to_xml output for {name} is not valid against cap12.xsd:\n{e}\n{written}");
        }
    }
}

/// A leaf line of the example: `<name>text</name>` on one line.
fn leaf_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let rest = t.strip_prefix('<')?;
    if rest.starts_with(['/', '?', '!']) {
        return None;
    }
    let name = &rest[..rest.find('>')?];
    t.ends_with(&format!("</{name}>")).then_some(name)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Deterministic mutations of the example: every leaf line dropped, every pair of
/// neighbouring leaf lines swapped, every enumerated value miscased, and hand-made ones
/// for types, namespaces, attributes, wildcards and defaults.
fn mutations() -> Vec<(String, String)> {
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    let join = |lines: &[&str]| lines.join("\n");
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = leaf_name(line) else {
            continue;
        };
        let mut dropped = lines.clone();
        dropped.remove(i);
        out.push((format!("drop <{name}> (line {})", i + 1), join(&dropped)));
        if let Some(next) = lines.get(i + 1) {
            if let Some(next_name) = leaf_name(next) {
                if indent(line) == indent(next) && name != next_name {
                    let mut swapped = lines.clone();
                    swapped.swap(i, i + 1);
                    out.push((
                        format!("swap <{name}> and <{next_name}> (line {})", i + 1),
                        join(&swapped),
                    ));
                }
            }
        }
        let enumerated = [
            "status",
            "msgType",
            "scope",
            "category",
            "responseType",
            "urgency",
            "severity",
            "certainty",
        ];
        if enumerated.contains(&name) {
            let mut changed = lines.clone();
            let (open, close) = (line.find('>').unwrap() + 1, line.rfind('<').unwrap());
            let lower = format!(
                "{}{}{}",
                &line[..open],
                line[open..close].to_lowercase(),
                &line[close..]
            );
            changed[i] = &lower;
            out.push((
                format!("lowercase <{name}> (line {})", i + 1),
                join(&changed),
            ));
        }
    }

    let one = |from: &str, to: &str| replace_once(EXAMPLE, from, to);
    let sent = "<sent>2026-11-23T15:00:00+09:00</sent>";
    let ja_web = "<web>https://www.city.suzaka.nagano.jp/</web>";
    let en_area_end = "</geocode>\n    </area>\n  </info>\n</alert>";
    let scope = "<scope>Public</scope>";
    let dsig = "xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"";
    let prefixed = EXAMPLE
        .replace("</", "\u{1}")
        .replace('<', "<cap:")
        .replace('\u{1}', "</cap:")
        .replace("<cap:?xml", "<?xml")
        .replace("xmlns=", "xmlns:cap=");
    let hand_made: Vec<(&str, String)> = vec![
        // Accepted by both.
        ("prefixed elements", prefixed),
        ("source", one("<msgType>Alert</msgType>", "<msgType>Alert</msgType><source>city</source>")),
        ("codes, note, references, incidents", one(scope, &format!("{scope}<code>a</code><code>b</code><note>n</note><references>a,b,2026-11-23T14:00:00+09:00</references><incidents>x y</incidents>"))),
        ("signatures at the end", one("</alert>", &format!("<ds:Signature {dsig}><ds:SignedInfo/></ds:Signature><ds:Signature {dsig}/></alert>"))),
        ("comments, PIs and CDATA", one("<event>避難指示</event>", "<event><!--c-->避難<?pi x?><![CDATA[指示]]></event>")),
        ("empty language takes the default", one("<language>ja-JP</language>", "<language/>")),
        ("end-of-day 24:00:00", one(sent, "<sent>2026-11-23T24:00:00+09:00</sent>")),
        ("leap day", one(sent, "<sent>2024-02-29T15:00:00+09:00</sent>")),
        ("offset -14:00", one(sent, "<sent>2026-11-23T15:00:00-14:00</sent>")),
        ("white space around a date", one(sent, "<sent>\n 2026-11-23T15:00:00+09:00 </sent>")),
        ("decimal heights", one(en_area_end, "</geocode><altitude>1.</altitude><ceiling>.5</ceiling>\n    </area>\n  </info>\n</alert>")),
        ("a full resource", one(ja_web, &format!("{ja_web}<resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType><size>+5</size><uri>http://a b/ü</uri><derefUri>AAAA</derefUri><digest>abc</digest></resource>"))),
        ("schemaLocation hint", one("<alert xmlns", "<alert xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"urn:x http://localhost:8080/x.xsd\" xmlns")),
        ("rule only: identifier with a space", one("<identifier>urn:uuid:", "<identifier>urn uuid:")),
        ("rule only: update without references", one("<msgType>Alert</msgType>", "<msgType>Update</msgType>")),
        ("rule only: empty references on a cancel", one("<msgType>Alert</msgType>\n  <scope>Public</scope>", "<msgType>Cancel</msgType>\n  <scope>Public</scope><references/>")),
        ("rule only: open polygon", one(" 36.6230,138.3000</polygon>", "</polygon>")),
        ("rule only: restricted without restriction", one(scope, "<scope>Restricted</scope>")),
        ("rule only: ceiling without altitude", one(en_area_end, "</geocode><ceiling>5</ceiling>\n    </area>\n  </info>\n</alert>")),
        ("rule only: negative size", one(ja_web, &format!("{ja_web}<resource><resourceDesc>m</resourceDesc><mimeType>t</mimeType><size>-5</size></resource>"))),
        // Refused by both.
        ("Z", one(sent, "<sent>2026-11-23T06:00:00Z</sent>")),
        ("fraction", one(sent, "<sent>2026-11-23T15:00:00.25+09:00</sent>")),
        ("comma offset", one(sent, "<sent>2026-11-23T15:00:00,09:00</sent>")),
        ("month 13", one(sent, "<sent>2026-13-23T15:00:00+09:00</sent>")),
        ("30 February", one(sent, "<sent>2026-02-30T15:00:00+09:00</sent>")),
        ("24:00:01", one(sent, "<sent>2026-11-23T24:00:01+09:00</sent>")),
        ("offset +14:01", one(sent, "<sent>2026-11-23T15:00:00+14:01</sent>")),
        ("year 0000", one(sent, "<sent>0000-11-23T15:00:00+09:00</sent>")),
        ("date only", one(sent, "<sent>2026-11-23</sent>")),
        ("enum with a space", one("<status>Actual</status>", "<status>Actual </status>")),
        ("bad language", one("<language>ja-JP</language>", "<language>ja_JP</language>")),
        ("blank language", one("<language>ja-JP</language>", "<language> </language>")),
        ("empty CDATA language", one("<language>ja-JP</language>", "<language><![CDATA[]]></language>")),
        ("long language", one("<language>ja-JP</language>", "<language>japanese1-JP</language>")),
        ("exponent altitude", one(en_area_end, "</geocode><altitude>1e3</altitude>\n    </area>\n  </info>\n</alert>")),
        ("dot altitude", one(en_area_end, "</geocode><altitude>.</altitude>\n    </area>\n  </info>\n</alert>")),
        ("decimal size", one(ja_web, &format!("{ja_web}<resource><resourceDesc>m</resourceDesc><mimeType>t</mimeType><size>5.0</size></resource>"))),
        ("bad URI bracket", one(ja_web, "<web>http://[x</web>")),
        ("bad URI escape", one(ja_web, "<web>http://h/%zz</web>")),
        ("bad URI two fragments", one(ja_web, "<web>http://h/#a#b</web>")),
        ("bad URI port", one(ja_web, "<web>http://h:80x/</web>")),
        ("unknown element in alert", one(scope, &format!("{scope}<priority>1</priority>"))),
        ("unknown element in info", one("<event>避難指示</event>", "<event>避難指示</event><colour>red</colour>")),
        ("unknown element in area", one("<areaDesc>須坂市 井上地区</areaDesc>", "<areaDesc>須坂市 井上地区</areaDesc><name>x</name>")),
        ("other namespace", one("<sender>", "<sender xmlns=\"urn:x\">")),
        ("no namespace", one("<sender>", "<sender xmlns=\"\">")),
        ("xml:lang attribute", one("<status>", "<status xml:lang=\"en\">")),
        ("xsi:type attribute", one("<status>", "<status xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"string\">")),
        ("text in alert", one(scope, &format!("{scope} hello "))),
        ("element in a string", one("<value>4</value>", "<value><b>4</b></value>")),
        ("signature before info", one(scope, &format!("{scope}<ds:Signature {dsig}/>"))),
        ("signature between infos", one("</info>\n  <info>", &format!("</info><ds:Signature {dsig}/><info>"))),
        ("signature inside info", one("<language>ja-JP</language>", &format!("<language>ja-JP</language><ds:Signature {dsig}/>"))),
        ("duplicate scope", one(scope, &format!("{scope}{scope}"))),
        ("duplicate language", one("<language>ja-JP</language>", "<language>ja-JP</language><language>ja-JP</language>")),
        ("empty info", one("<info>\n    <language>en-US</language>", "<info/><info>\n    <language>en-US</language>")),
        ("empty area", one("<area>\n      <areaDesc>Inoue", "<area/><area>\n      <areaDesc>Inoue")),
        ("resource without mimeType", one(ja_web, &format!("{ja_web}<resource><resourceDesc>m</resourceDesc></resource>"))),
        ("CAP 1.1 namespace", EXAMPLE.replace("emergency:cap:1.2", "emergency:cap:1.1")),
        ("eventCode with a third element", one("<value>4</value>", "<value>4</value><value>5</value>")),
        ("ceiling before altitude", one(en_area_end, "</geocode><ceiling>5</ceiling><altitude>1</altitude>\n    </area>\n  </info>\n</alert>")),
        ("polygon after geocode", one("</geocode>\n    </area>\n  </info>\n  <info>", "</geocode><polygon>1,1 1,2 2,2 1,1</polygon>\n    </area>\n  </info>\n  <info>")),
    ];
    out.extend(
        hand_made
            .into_iter()
            .map(|(name, doc)| (name.to_owned(), doc)),
    );
    out
}

/// Where libxml2 is wrong and `parse` follows the XSD. libxml2 2.9's content-model
/// automaton lets `info` and the trailing XML-DSig wildcard (both `maxOccurs="unbounded"`)
/// interleave once `info` may start, i.e. it validates `(info | ds:*)*` instead of the
/// schema's `info*, ds:*`. Per XML Schema a signature is only allowed after the last
/// `info`, which is also the only place an enveloped CAP signature is ever put.
/// (mutation, the element `parse` names).
const LIBXML2_DEVIATIONS: &[(&str, &str)] = &[
    ("signature before info", "alert/info[0]"),
    ("signature between infos", "alert/info[1]"),
];

#[test]
fn xmllint_and_parse_agree_on_mutations_of_the_example() {
    if !xmllint_found() {
        return;
    }
    let mutations = mutations();
    let mut disagreements = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for (name, doc) in &mutations {
        let xsd = xsd_check(doc.as_bytes());
        let ours = parse(doc.as_bytes());
        if let Some(&(_, element)) = LIBXML2_DEVIATIONS.iter().find(|d| d.0 == name) {
            // Pinned, so a change on either side is noticed.
            assert!(
                xsd.is_ok(),
                "{name}: libxml2 no longer accepts this: {xsd:?}"
            );
            let e = ours.expect_err(name);
            assert_eq!(
                (e.kind, e.element.as_str()),
                (CapErrorKind::Schema, element),
                "{name}"
            );
            continue;
        }
        if std::env::var_os("CAP_SHOW_ERRORS").is_some() {
            eprintln!(
                "{name}: {}",
                ours.as_ref()
                    .map_or_else(ToString::to_string, |_| "accepted".into())
            );
        }
        // Rule refusals are beyond the XSD: for the comparison they count as schema-valid.
        let ours_schema_ok = match &ours {
            Ok(_) => true,
            Err(e) => e.kind == CapErrorKind::Rule,
        };
        if xsd.is_ok() {
            valid += 1;
        } else {
            invalid += 1;
        }
        if xsd.is_ok() != ours_schema_ok {
            disagreements.push(format!(
                "{name}: xmllint {} but parse {}",
                match &xsd {
                    Ok(()) => "accepts".to_owned(),
                    Err(e) => format!("refuses ({})", e.trim()),
                },
                match &ours {
                    Ok(_) => "accepts".to_owned(),
                    Err(e) => format!("refuses ({e})"),
                }
            ));
        }
    }
    eprintln!(
        "{} mutations: {valid} schema-valid, {invalid} schema-invalid",
        mutations.len()
    );
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
    // The comparison means something only if both outcomes occur often.
    assert!(
        valid >= 20 && invalid >= 60,
        "{valid} valid, {invalid} invalid"
    );
}
