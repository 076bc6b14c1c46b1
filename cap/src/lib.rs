//! OASIS Common Alerting Protocol 1.2 for Noroshi (CHANNELS.md §5.3 and §5.4).
//!
//! - [`parse`] reads a CAP 1.2 document safely and checks it the way `cap12.xsd` does,
//!   then against the CAP rules the schema leaves out; a refusal is a [`CapError`] naming
//!   the element (`alert/info[0]/urgency`) and saying what is wrong.
//! - [`to_xml`] writes an [`Alert`] back as a schema-valid document; [`validate`] checks a
//!   model before it is published.
//! - [`file_name`] gives the stable, path-safe name a message is published under.
//!
//! Safety: documents over [`MAX_BYTES`] are refused unread; a `DOCTYPE` is refused, so there
//! are no DTDs, entity declarations, external entities or entity expansion; only XML's five
//! predefined entities and numeric character references are accepted; nothing is ever
//! fetched (this crate has no network or file code at all).
//!
//! ```
//! let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
//! <alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
//!   <identifier>KSTO1055887203</identifier>
//!   <sender>KSTO@NWS.NOAA.GOV</sender>
//!   <sent>2003-06-17T14:57:00-07:00</sent>
//!   <status>Actual</status>
//!   <msgType>Alert</msgType>
//!   <scope>Public</scope>
//! </alert>"#;
//! let alert = noroshi_cap::parse(xml).unwrap();
//! assert_eq!(alert.status, noroshi_cap::Status::Actual);
//! assert_eq!(noroshi_cap::parse(noroshi_cap::to_xml(&alert).as_bytes()).unwrap(), alert);
//!
//! let error = noroshi_cap::parse(&xml[..xml.len() - 8]).unwrap_err();
//! assert_eq!(error.element, "(document)");
//! ```

mod decode;
mod error;
mod model;
mod rules;
mod schema;
mod uri;
mod write;
mod xml;

pub use error::{CapError, CapErrorKind};
pub use model::{
    Alert, Area, CapDateTime, Category, Certainty, Circle, Info, MsgType, Point, Polygon,
    Reference, Resource, ResponseType, Scope, Severity, Status, Urgency,
};
pub use write::{file_name, to_xml};

/// The CAP 1.2 namespace, which `alert` and every CAP element must be in.
pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// The media type of a CAP document.
pub const MEDIA_TYPE: &str = "application/cap+xml";

/// The XML-DSig namespace, whose elements (an enveloped `Signature`) may end an `alert`.
pub(crate) const DSIG_NAMESPACE: &str = "http://www.w3.org/2000/09/xmldsig#";

/// The largest document [`parse`] reads: 1 MiB. Real alerts are a few kilobytes; Google's
/// public-alerts guidance caps a whole feed at 900 KB.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Reads a CAP 1.2 document.
///
/// In order: the size ([`MAX_BYTES`]); the encoding (a byte order mark, else the XML
/// declaration's `encoding`, else UTF-8; any encoding of the WHATWG Encoding Standard that
/// keeps ASCII as ASCII is converted, stateful ones such as ISO-2022-JP are refused);
/// well-formedness and safety (no `DOCTYPE`, no entities but the predefined five);
/// validity against `cap12.xsd`; then the CAP rules the schema does not express:
///
/// - `identifier` and `sender` are non-empty and have no white space, `,`, `<` or `&`;
/// - `Update`, `Cancel`, `Ack` and `Error` name earlier messages in `references`, whose
///   entries must be well-formed `sender,identifier,sent` triples;
/// - `Restricted` needs a non-blank `restriction`, `Private` non-blank `addresses`;
/// - a `polygon` has at least four `lat,lon` points and is closed (first = last); a
///   `circle` is `lat,lon radius`; coordinates are in range;
/// - `ceiling` only with `altitude`; `size` is a number of bytes.
///
/// XML-DSig `Signature` elements at the end of `alert` are allowed and ignored (not
/// verified, not kept). Processing instructions and comments are ignored. Two limits no
/// real alert comes near keep hostile input cheap: nesting deeper than 64 elements and more
/// than 64 attributes on one element are refused.
pub fn parse(bytes: &[u8]) -> Result<Alert, CapError> {
    if bytes.len() > MAX_BYTES {
        return Err(CapError::document(
            CapErrorKind::TooLarge,
            format!(
                "the document is {} bytes; at most {MAX_BYTES} bytes (1 MiB) are accepted",
                bytes.len()
            ),
        ));
    }
    let text = decode::decode(bytes)?;
    let root = xml::read_tree(&text)?;
    schema::read_alert(&root)
}

/// Checks that `alert` can be published: that [`to_xml`] gives a document [`parse`]
/// accepts (schema-valid, rules kept, under [`MAX_BYTES`]). The error names the element as
/// [`parse`] would. (Characters XML cannot carry are not reported: [`to_xml`] writes them
/// as U+FFFD.)
pub fn validate(alert: &Alert) -> Result<(), CapError> {
    parse(to_xml(alert).as_bytes()).map(drop)
}
