//! Shared test data: where the conformance files are, and the CHANNELS.md example.

use std::path::PathBuf;

use noroshi_cap::{CapError, CapErrorKind};

/// shared/conformance/oasis-cap-1.2 (the repository is /work/main, shared is /work/shared).
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/oasis-cap-1.2"
    ))
}

pub fn alerts_dir() -> PathBuf {
    conformance_dir().join("alerts")
}

pub fn schema_path() -> PathBuf {
    conformance_dir().join("schema/cap12.xsd")
}

pub fn read_alert_file(name: &str) -> Vec<u8> {
    let path = alerts_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The example alert of CHANNELS.md §5.3, verbatim.
pub const EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>urn:uuid:0193c2f4-5e6a-7b1c-9d2e-3f4a5b6c7d8e</identifier>
  <sender>bousai@city.suzaka.nagano.jp</sender>
  <sent>2026-11-23T15:00:00+09:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>ja-JP</language>
    <category>Met</category>
    <event>避難指示</event>
    <responseType>Evacuate</responseType>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <eventCode>
      <valueName>警戒レベル</valueName>
      <value>4</value>
    </eventCode>
    <effective>2026-11-23T15:00:00+09:00</effective>
    <expires>2026-11-24T15:00:00+09:00</expires>
    <senderName>須坂市</senderName>
    <headline>【警戒レベル4】避難指示 須坂市 井上地区</headline>
    <description>千曲川の水位が上昇しています。井上地区に避難指示を発令しました。</description>
    <instruction>危険な場所から全員避難してください。避難所：須坂市役所</instruction>
    <web>https://www.city.suzaka.nagano.jp/</web>
    <area>
      <areaDesc>須坂市 井上地区</areaDesc>
      <polygon>36.6230,138.3000 36.6230,138.3200 36.6050,138.3200 36.6050,138.3000 36.6230,138.3000</polygon>
      <geocode>
        <valueName>JIS X 0402</valueName>
        <value>202070</value>
      </geocode>
    </area>
  </info>
  <info>
    <language>en-US</language>
    <category>Met</category>
    <event>Evacuation Order</event>
    <responseType>Evacuate</responseType>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <expires>2026-11-24T15:00:00+09:00</expires>
    <senderName>Suzaka City</senderName>
    <headline>[Level 4] Evacuation order: Inoue district, Suzaka City</headline>
    <area>
      <areaDesc>Inoue district, Suzaka City</areaDesc>
      <geocode>
        <valueName>JIS X 0402</valueName>
        <value>202070</value>
      </geocode>
    </area>
  </info>
</alert>
"#;

/// Replaces exactly one occurrence of `from` in `text` (so a test cannot silently edit
/// nothing, or more than it meant to).
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` should occur exactly once in the document being mutated"
    );
    text.replacen(from, to, 1)
}

/// Parses and expects a refusal, with a non-empty element and detail.
pub fn refused(xml: impl AsRef<[u8]>) -> CapError {
    match noroshi_cap::parse(xml.as_ref()) {
        Ok(alert) => panic!("expected a refusal, but it parsed: {alert:#?}"),
        Err(e) => {
            assert!(!e.element.is_empty() && !e.detail.is_empty(), "{e:?}");
            e
        }
    }
}

/// Asserts a refusal of `kind` naming `element`, and returns it for further checks.
#[track_caller]
pub fn assert_refused(xml: impl AsRef<[u8]>, kind: CapErrorKind, element: &str) -> CapError {
    let e = refused(xml);
    assert_eq!(
        (e.kind, e.element.as_str()),
        (kind, element),
        "unexpected refusal: {e}"
    );
    e
}
