//! Writing: a CAP 1.2 document from the model, and the file name it is published under.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::decode::is_xml_char;
use crate::model::{Alert, Area, CapDateTime, Info, Resource};
use crate::NAMESPACE;

/// Writes `alert` as a CAP 1.2 document: UTF-8 with an XML declaration, the CAP namespace
/// as the default namespace, elements in the schema's order, two-space indentation.
///
/// If `alert` passes [`crate::validate`], the output is valid against `cap12.xsd` and
/// [`crate::parse`] reads it back as an equal `Alert`. Text is escaped (`&`, `<`, `>`, and
/// carriage returns as `&#13;` so that they survive XML's line-end normalisation);
/// characters that XML 1.0 cannot carry at all (C0 controls other than tab, line feed and
/// carriage return; U+FFFE; U+FFFF) are written as U+FFFD. `info/language` is always
/// written, even when it is the default `en-US`. XML-DSig signatures are not kept in the
/// model, so none are written.
pub fn to_xml(alert: &Alert) -> String {
    let mut w = Writer {
        out: String::with_capacity(2048),
        depth: 0,
    };
    w.out
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(w.out, "<alert xmlns=\"{NAMESPACE}\">");
    w.depth = 1;
    w.leaf("identifier", &alert.identifier);
    w.leaf("sender", &alert.sender);
    w.leaf("sent", alert.sent.as_str());
    w.leaf("status", alert.status.as_str());
    w.leaf("msgType", alert.msg_type.as_str());
    w.optional("source", alert.source.as_deref());
    w.leaf("scope", alert.scope.as_str());
    w.optional("restriction", alert.restriction.as_deref());
    w.optional("addresses", alert.addresses.as_deref());
    for code in &alert.codes {
        w.leaf("code", code);
    }
    w.optional("note", alert.note.as_deref());
    if !alert.references.is_empty() {
        let references = alert
            .references
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        w.leaf("references", &references);
    }
    w.optional("incidents", alert.incidents.as_deref());
    for info in &alert.infos {
        w.info(info);
    }
    w.out.push_str("</alert>\n");
    w.out
}

struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.out, "<{name}>");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        let _ = writeln!(self.out, "</{name}>");
    }

    fn leaf(&mut self, name: &str, text: &str) {
        self.indent();
        let _ = write!(self.out, "<{name}>");
        escape_into(&mut self.out, text);
        let _ = writeln!(self.out, "</{name}>");
    }

    fn optional(&mut self, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    fn date(&mut self, name: &str, value: Option<&CapDateTime>) {
        self.optional(name, value.map(CapDateTime::as_str));
    }

    fn pairs(&mut self, name: &str, pairs: &[(String, String)]) {
        for (value_name, value) in pairs {
            self.open(name);
            self.leaf("valueName", value_name);
            self.leaf("value", value);
            self.close(name);
        }
    }

    fn info(&mut self, info: &Info) {
        self.open("info");
        self.leaf("language", &info.language);
        for category in &info.categories {
            self.leaf("category", category.as_str());
        }
        self.leaf("event", &info.event);
        for response in &info.response_types {
            self.leaf("responseType", response.as_str());
        }
        self.leaf("urgency", info.urgency.as_str());
        self.leaf("severity", info.severity.as_str());
        self.leaf("certainty", info.certainty.as_str());
        self.optional("audience", info.audience.as_deref());
        self.pairs("eventCode", &info.event_codes);
        self.date("effective", info.effective.as_ref());
        self.date("onset", info.onset.as_ref());
        self.date("expires", info.expires.as_ref());
        self.optional("senderName", info.sender_name.as_deref());
        self.optional("headline", info.headline.as_deref());
        self.optional("description", info.description.as_deref());
        self.optional("instruction", info.instruction.as_deref());
        self.optional("web", info.web.as_deref());
        self.optional("contact", info.contact.as_deref());
        self.pairs("parameter", &info.parameters);
        for resource in &info.resources {
            self.resource(resource);
        }
        for area in &info.areas {
            self.area(area);
        }
        self.close("info");
    }

    fn resource(&mut self, resource: &Resource) {
        self.open("resource");
        self.leaf("resourceDesc", &resource.resource_desc);
        self.leaf("mimeType", &resource.mime_type);
        if let Some(size) = resource.size {
            self.leaf("size", &size.to_string());
        }
        self.optional("uri", resource.uri.as_deref());
        self.optional("derefUri", resource.deref_uri.as_deref());
        self.optional("digest", resource.digest.as_deref());
        self.close("resource");
    }

    fn area(&mut self, area: &Area) {
        self.open("area");
        self.leaf("areaDesc", &area.area_desc);
        for polygon in &area.polygons {
            self.leaf("polygon", &polygon.to_string());
        }
        for circle in &area.circles {
            self.leaf("circle", &circle.to_string());
        }
        self.pairs("geocode", &area.geocodes);
        // f64's Display never uses exponent notation, so this is a valid xs:decimal.
        if let Some(altitude) = area.altitude {
            self.leaf("altitude", &altitude.to_string());
        }
        if let Some(ceiling) = area.ceiling {
            self.leaf("ceiling", &ceiling.to_string());
        }
        self.close("area");
    }
}

/// Escapes text content. `>` is escaped too, so `]]>` can never appear.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// How many characters of the identifier a file name keeps.
const ID_CHARS: usize = 64;

/// The file name to publish `alert` under (CHANNELS.md §5.4), for example
/// `20261123T150000p0900-urn_uuid_0193c2f4-5e6a-7b1c-9d2e-3f4a5b6c7d8e-1a2b3c4d.xml`:
///
/// - `sent` without separators, its offset sign written `p` or `m` (so `+09:00` and
///   `-00:00` stay distinct and no `+` reaches a URL);
/// - the identifier with every character other than ASCII letters, digits, `-`, `.` and
///   `_` replaced by `_`, cut to 64 characters;
/// - the first 8 hex digits of SHA-256 over sender and identifier, which keeps apart
///   messages whose identifiers only differ in replaced or cut characters, or that come
///   from different senders.
///
/// Only ASCII letters, digits, `-`, `_` and `.` are used, it never starts with a dot and is
/// at most 103 characters long, and the same alert always gets the same name.
pub fn file_name(alert: &Alert) -> String {
    let mut id: String = alert
        .identifier
        .chars()
        .take(ID_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        id.push_str("alert");
    }
    let mut hasher = Sha256::new();
    hasher.update(alert.sender.as_bytes());
    // A separator that neither field can contain (XML cannot carry NUL), so that
    // ("ab", "c") and ("a", "bc") hash differently.
    hasher.update([0u8]);
    hasher.update(alert.identifier.as_bytes());
    let digest = hasher.finalize();
    let mut hash = String::with_capacity(8);
    for byte in &digest[..4] {
        let _ = write!(hash, "{byte:02x}");
    }
    format!("{}-{id}-{hash}.xml", stamp(&alert.sent))
}

/// `2026-11-23T15:00:00+09:00` → `20261123T150000p0900`.
fn stamp(sent: &CapDateTime) -> String {
    sent.as_str()
        .char_indices()
        .filter_map(|(i, c)| match (i, c) {
            // The sign of the offset is always at byte 19 of a CAP date-time.
            (19, '+') => Some('p'),
            (19, '-') => Some('m'),
            (_, '-' | ':') => None,
            (_, c) => Some(c),
        })
        .collect()
}
