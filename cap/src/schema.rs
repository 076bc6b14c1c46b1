//! The element tree to the model, checked as `cap12.xsd` checks it (namespace, element
//! order and counts, required elements, enumerations, the date-time pattern, the built-in
//! types) and then by the rules of the CAP 1.2 specification that the schema leaves out.
//!
//! Schema problems are returned at once. Rule problems are noted (the first one is kept)
//! and returned only if the whole document is schema-valid, so a document with both kinds
//! is reported as schema-invalid, like a validator that runs the XSD first would.

use crate::error::CapError;
use crate::model::{
    parse_date_time, shorten, Alert, Area, CapDateTime, CapEnum, Info, MsgType, Resource, Scope,
    DEFAULT_LANGUAGE,
};
use crate::rules;
use crate::uri;
use crate::xml::{is_blank, Element, Ns};
use crate::NAMESPACE;

const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";
const UNBOUNDED: usize = usize::MAX;

/// What an entry of a sequence accepts.
#[derive(Clone, Copy)]
enum Term {
    /// The CAP element of this local name.
    Cap(&'static str),
    /// `<any namespace="http://www.w3.org/2000/09/xmldsig#" processContents="lax"/>`.
    AnyDsig,
}

/// One entry of an `xs:sequence`.
struct Particle {
    term: Term,
    min: usize,
    max: usize,
}

const fn one(name: &'static str) -> Particle {
    Particle {
        term: Term::Cap(name),
        min: 1,
        max: 1,
    }
}
const fn optional(name: &'static str) -> Particle {
    Particle {
        term: Term::Cap(name),
        min: 0,
        max: 1,
    }
}
const fn any_number(name: &'static str) -> Particle {
    Particle {
        term: Term::Cap(name),
        min: 0,
        max: UNBOUNDED,
    }
}
const fn at_least_one(name: &'static str) -> Particle {
    Particle {
        term: Term::Cap(name),
        min: 1,
        max: UNBOUNDED,
    }
}

// The sequences of cap12.xsd, in order.
const ALERT: &[Particle] = &[
    one("identifier"),
    one("sender"),
    one("sent"),
    one("status"),
    one("msgType"),
    optional("source"),
    one("scope"),
    optional("restriction"),
    optional("addresses"),
    any_number("code"),
    optional("note"),
    optional("references"),
    optional("incidents"),
    any_number("info"),
    Particle {
        term: Term::AnyDsig,
        min: 0,
        max: UNBOUNDED,
    },
];
const INFO: &[Particle] = &[
    optional("language"),
    at_least_one("category"),
    one("event"),
    any_number("responseType"),
    one("urgency"),
    one("severity"),
    one("certainty"),
    optional("audience"),
    any_number("eventCode"),
    optional("effective"),
    optional("onset"),
    optional("expires"),
    optional("senderName"),
    optional("headline"),
    optional("description"),
    optional("instruction"),
    optional("web"),
    optional("contact"),
    any_number("parameter"),
    any_number("resource"),
    any_number("area"),
];
/// `eventCode`, `parameter` and `geocode` (references to the global `valueName`/`value`).
const VALUE_PAIR: &[Particle] = &[one("valueName"), one("value")];
const RESOURCE: &[Particle] = &[
    one("resourceDesc"),
    one("mimeType"),
    optional("size"),
    optional("uri"),
    optional("derefUri"),
    optional("digest"),
];
const AREA: &[Particle] = &[
    one("areaDesc"),
    any_number("polygon"),
    any_number("circle"),
    any_number("geocode"),
    optional("altitude"),
    optional("ceiling"),
];

impl Particle {
    fn matches(&self, element: &Element) -> bool {
        match self.term {
            Term::Cap(name) => element.ns == Ns::Cap && element.local == name,
            Term::AnyDsig => element.ns == Ns::Dsig,
        }
    }

    fn name(&self) -> &'static str {
        match self.term {
            Term::Cap(name) => name,
            Term::AnyDsig => "(XML-DSig element)",
        }
    }
}

/// A matched child and its path for messages.
struct Child<'a> {
    element: &'a Element,
    path: String,
}

/// A parent's children, sorted into the entries of its sequence.
struct Matched<'a> {
    particles: &'static [Particle],
    slots: Vec<Vec<Child<'a>>>,
}

impl<'a> Matched<'a> {
    fn all(&self, name: &str) -> &[Child<'a>] {
        self.particles
            .iter()
            .position(|p| matches!(p.term, Term::Cap(n) if n == name))
            .map_or(&[], |i| &self.slots[i])
    }

    fn optional(&self, name: &str) -> Option<&Child<'a>> {
        self.all(name).first()
    }

    /// A child the sequence check has already proved present (`min` is 1).
    fn required(&self, name: &str) -> &Child<'a> {
        &self.all(name)[0]
    }
}

/// Notes rule problems while the schema pass goes on.
#[derive(Default)]
struct Rules {
    first: Option<CapError>,
}

impl Rules {
    fn broken(&mut self, element: &str, detail: String) {
        if self.first.is_none() {
            self.first = Some(CapError::rule(element, detail));
        }
    }

    fn check(&mut self, element: &str, result: Result<(), String>) {
        if let Err(detail) = result {
            self.broken(element, detail);
        }
    }
}

/// Reads and checks the root element.
pub(crate) fn read_alert(root: &Element) -> Result<Alert, CapError> {
    if root.local != "alert" || root.ns != Ns::Cap {
        let found = match &root.ns {
            Ns::Cap => format!("`{}` in the CAP 1.2 namespace", root.qname),
            Ns::None => format!("`{}` in no namespace", root.qname),
            Ns::Dsig => format!("`{}` in the XML-DSig namespace", root.qname),
            Ns::Other(uri) => format!("`{}` in namespace `{}`", root.qname, shorten(uri)),
        };
        let hint = match &root.ns {
            Ns::Other(uri) if uri.starts_with("urn:oasis:names:tc:emergency:cap:1.") => {
                " (only CAP 1.2 is accepted)"
            }
            _ => "",
        };
        return Err(CapError::schema(
            "alert",
            format!(
                "the root element must be `alert` in the namespace {NAMESPACE}; found \
                 {found}{hint}"
            ),
        ));
    }
    let mut rules = Rules::default();
    let alert = alert(root, &mut rules)?;
    match rules.first {
        Some(problem) => Err(problem),
        None => Ok(alert),
    }
}

fn alert(root: &Element, rules: &mut Rules) -> Result<Alert, CapError> {
    let path = "alert";
    complex(root, path)?;
    let m = sequence(root, path, ALERT)?;

    let identifier = string(m.required("identifier"))?;
    rules.check(
        "alert/identifier",
        rules::check_id("identifier", &identifier),
    );
    let sender = string(m.required("sender"))?;
    rules.check("alert/sender", rules::check_id("sender", &sender));
    let sent = date_time(m.required("sent"))?;
    let status = enumerated(m.required("status"))?;
    let msg_type: MsgType = enumerated(m.required("msgType"))?;
    let source = m.optional("source").map(string).transpose()?;
    let scope: Scope = enumerated(m.required("scope"))?;

    let restriction = m.optional("restriction").map(string).transpose()?;
    if scope == Scope::Restricted && restriction.as_deref().is_none_or(is_blank_text) {
        rules.broken(
            "alert/restriction",
            "`scope` is `Restricted`, so a non-blank `restriction` must say who may see \
             the message"
                .into(),
        );
    }
    let addresses = m.optional("addresses").map(string).transpose()?;
    if scope == Scope::Private && addresses.as_deref().is_none_or(is_blank_text) {
        rules.broken(
            "alert/addresses",
            "`scope` is `Private`, so a non-blank `addresses` must list the recipients".into(),
        );
    }
    let codes = m.all("code").iter().map(string).collect::<Result<_, _>>()?;
    let note = m.optional("note").map(string).transpose()?;

    let references = match m.optional("references") {
        Some(child) => {
            let text = string(child)?;
            rules::parse_references(&text).unwrap_or_else(|detail| {
                rules.broken(&child.path, detail);
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    if msg_type != MsgType::Alert && references.is_empty() {
        rules.broken(
            "alert/references",
            format!(
                "a message of type `{msg_type}` must name the earlier message(s) it refers \
                 to in `references`, as space-separated `sender,identifier,sent` triples; \
                 it is missing or empty"
            ),
        );
    }
    let incidents = m.optional("incidents").map(string).transpose()?;
    let infos = m
        .all("info")
        .iter()
        .map(|child| info(child, rules))
        .collect::<Result<_, _>>()?;
    // XML-DSig signatures at the end are allowed by the schema and ignored here: the model
    // is what the signature signs, not the signature itself.

    Ok(Alert {
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
    })
}

/// Present but saying nothing.
fn is_blank_text(text: &str) -> bool {
    text.trim().is_empty()
}

fn info(child: &Child<'_>, rules: &mut Rules) -> Result<Info, CapError> {
    complex(child.element, &child.path)?;
    let m = sequence(child.element, &child.path, INFO)?;
    let dates = |name| m.optional(name).map(date_time).transpose();
    Ok(Info {
        language: match m.optional("language") {
            Some(language_child) => language(language_child)?,
            None => DEFAULT_LANGUAGE.to_owned(),
        },
        categories: m
            .all("category")
            .iter()
            .map(enumerated)
            .collect::<Result<_, _>>()?,
        event: string(m.required("event"))?,
        response_types: m
            .all("responseType")
            .iter()
            .map(enumerated)
            .collect::<Result<_, _>>()?,
        urgency: enumerated(m.required("urgency"))?,
        severity: enumerated(m.required("severity"))?,
        certainty: enumerated(m.required("certainty"))?,
        audience: m.optional("audience").map(string).transpose()?,
        event_codes: m
            .all("eventCode")
            .iter()
            .map(value_pair)
            .collect::<Result<_, _>>()?,
        effective: dates("effective")?,
        onset: dates("onset")?,
        expires: dates("expires")?,
        sender_name: m.optional("senderName").map(string).transpose()?,
        headline: m.optional("headline").map(string).transpose()?,
        description: m.optional("description").map(string).transpose()?,
        instruction: m.optional("instruction").map(string).transpose()?,
        web: m.optional("web").map(any_uri).transpose()?,
        contact: m.optional("contact").map(string).transpose()?,
        parameters: m
            .all("parameter")
            .iter()
            .map(value_pair)
            .collect::<Result<_, _>>()?,
        resources: m
            .all("resource")
            .iter()
            .map(|c| resource(c, rules))
            .collect::<Result<_, _>>()?,
        areas: m
            .all("area")
            .iter()
            .map(|c| area(c, rules))
            .collect::<Result<_, _>>()?,
    })
}

fn value_pair(child: &Child<'_>) -> Result<(String, String), CapError> {
    complex(child.element, &child.path)?;
    let m = sequence(child.element, &child.path, VALUE_PAIR)?;
    Ok((
        string(m.required("valueName"))?,
        string(m.required("value"))?,
    ))
}

fn resource(child: &Child<'_>, rules: &mut Rules) -> Result<Resource, CapError> {
    complex(child.element, &child.path)?;
    let m = sequence(child.element, &child.path, RESOURCE)?;
    let size = match m.optional("size") {
        Some(size_child) => {
            let text = integer(size_child)?;
            let size = text.strip_prefix('+').unwrap_or(text).parse::<u64>().ok();
            if size.is_none() {
                rules.broken(
                    &size_child.path,
                    format!(
                        "`size` is a number of bytes; `{}` is not one",
                        shorten(text)
                    ),
                );
            }
            size
        }
        None => None,
    };
    Ok(Resource {
        resource_desc: string(m.required("resourceDesc"))?,
        mime_type: string(m.required("mimeType"))?,
        size,
        uri: m.optional("uri").map(any_uri).transpose()?,
        deref_uri: m.optional("derefUri").map(string).transpose()?,
        digest: m.optional("digest").map(string).transpose()?,
    })
}

fn area(child: &Child<'_>, rules: &mut Rules) -> Result<Area, CapError> {
    complex(child.element, &child.path)?;
    let m = sequence(child.element, &child.path, AREA)?;
    let area_desc = string(m.required("areaDesc"))?;
    let mut polygons = Vec::new();
    for polygon in m.all("polygon") {
        match rules::parse_polygon(text(polygon)?) {
            Ok(parsed) => polygons.push(parsed),
            Err(detail) => rules.broken(&polygon.path, detail),
        }
    }
    let mut circles = Vec::new();
    for circle in m.all("circle") {
        match rules::parse_circle(text(circle)?) {
            Ok(parsed) => circles.push(parsed),
            Err(detail) => rules.broken(&circle.path, detail),
        }
    }
    let geocodes = m
        .all("geocode")
        .iter()
        .map(value_pair)
        .collect::<Result<_, _>>()?;
    let mut height = |name: &str| -> Result<Option<f64>, CapError> {
        let Some(height_child) = m.optional(name) else {
            return Ok(None);
        };
        let text = decimal(height_child)?;
        let value = rules::decimal(text);
        if value.is_none() {
            rules.broken(
                &height_child.path,
                format!("`{}` is too large to be a height in feet", shorten(text)),
            );
        }
        Ok(value)
    };
    let altitude = height("altitude")?;
    let ceiling = height("ceiling")?;
    if let (Some(ceiling_child), None) = (m.optional("ceiling"), m.optional("altitude")) {
        rules.broken(
            &ceiling_child.path,
            "`ceiling` may only be given together with `altitude` (the floor of the range)".into(),
        );
    }
    Ok(Area {
        area_desc,
        polygons,
        circles,
        geocodes,
        altitude,
        ceiling,
    })
}

// ---------------------------------------------------------------------------------------
// Content checks shared by every element.

/// No attributes on CAP elements (the schema declares none), except the two XML Schema
/// instance hints every schema processor accepts. They are ignored: nothing is fetched.
fn check_attributes(element: &Element, path: &str) -> Result<(), CapError> {
    for attr in &element.attrs {
        let schema_hint = attr.ns == Ns::Other(XSI_NAMESPACE.to_owned())
            && matches!(
                attr.local.as_str(),
                "schemaLocation" | "noNamespaceSchemaLocation"
            );
        if !schema_hint {
            return Err(CapError::schema(
                path,
                format!(
                    "attribute `{}` is not allowed on `{}`: CAP 1.2 elements have no \
                     attributes (line {})",
                    shorten(&attr.qname),
                    element.local,
                    element.line
                ),
            ));
        }
    }
    Ok(())
}

/// An element of a complex type: element-only content.
fn complex(element: &Element, path: &str) -> Result<(), CapError> {
    check_attributes(element, path)?;
    if !is_blank(&element.text) {
        return Err(CapError::schema(
            path,
            format!(
                "`{}` may contain only elements, but it has the text `{}` (line {}); put \
                 text inside the element it belongs to",
                element.local,
                shorten(element.text.trim()),
                element.line
            ),
        ));
    }
    Ok(())
}

/// The text of an element of a simple type: no attributes, no child elements.
fn text<'a>(child: &Child<'a>) -> Result<&'a str, CapError> {
    let element = child.element;
    check_attributes(element, &child.path)?;
    if let Some(inner) = element.children.first() {
        return Err(CapError::schema(
            &child.path,
            format!(
                "`{}` may contain only text, but it contains the element `{}` (line {})",
                element.local, inner.qname, inner.line
            ),
        ));
    }
    Ok(&element.text)
}

/// `xs:string`: the text exactly as written (the schema keeps white space).
fn string(child: &Child<'_>) -> Result<String, CapError> {
    text(child).map(str::to_owned)
}

/// The schema's `whiteSpace="collapse"`: runs of white space become one space, and
/// leading and trailing white space goes. Types other than `xs:string` have it.
fn collapse(text: &str) -> String {
    text.split([' ', '\t', '\n', '\r'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An enumeration: compared literally, as the schema does for restrictions of
/// `xs:string` (so ` Actual` or `actual` are refused).
fn enumerated<T: CapEnum>(child: &Child<'_>) -> Result<T, CapError> {
    let value = text(child)?;
    T::from_cap_str(value).ok_or_else(|| {
        CapError::schema(
            &child.path,
            format!(
                "\"{}\" is not a valid `{}`; the allowed values are {} (case-sensitive, \
                 without surrounding spaces)",
                shorten(value),
                T::ELEMENT,
                T::all_spellings()
            ),
        )
    })
}

fn date_time(child: &Child<'_>) -> Result<CapDateTime, CapError> {
    let value = collapse(text(child)?);
    parse_date_time(&value).map_err(|detail| CapError::schema(&child.path, detail))
}

/// `xs:language`: `[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*`. A truly empty element (`<language/>`)
/// takes the schema's default, `en-US`, as XML Schema says an empty element with a
/// default does.
fn language(child: &Child<'_>) -> Result<String, CapError> {
    let raw = text(child)?;
    if !child.element.has_char_data {
        return Ok(DEFAULT_LANGUAGE.to_owned());
    }
    let value = collapse(raw);
    let mut parts = value.split('-');
    let first_ok = parts
        .next()
        .is_some_and(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if first_ok && rest_ok {
        Ok(value)
    } else {
        Err(CapError::schema(
            &child.path,
            format!(
                "\"{}\" is not a language tag; use an RFC 3066 code such as `ja-JP` or \
                 `en-US`",
                shorten(&value)
            ),
        ))
    }
}

/// `xs:decimal`: returns the collapsed lexical form.
fn decimal<'a>(child: &Child<'a>) -> Result<&'a str, CapError> {
    let value = text(child)?.trim_matches([' ', '\t', '\n', '\r']);
    if rules::is_decimal(value) {
        Ok(value)
    } else {
        Err(CapError::schema(
            &child.path,
            format!(
                "\"{}\" is not a decimal number (digits with an optional sign and decimal \
                 point, e.g. `1500` or `-12.5`)",
                shorten(value)
            ),
        ))
    }
}

/// `xs:integer`: returns the collapsed lexical form.
fn integer<'a>(child: &Child<'a>) -> Result<&'a str, CapError> {
    let value = text(child)?.trim_matches([' ', '\t', '\n', '\r']);
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value)
    } else {
        Err(CapError::schema(
            &child.path,
            format!("\"{}\" is not a whole number", shorten(value)),
        ))
    }
}

/// `xs:anyURI`: collapsed, then checked as libxml2 checks it (see `uri.rs`).
fn any_uri(child: &Child<'_>) -> Result<String, CapError> {
    let value = collapse(text(child)?);
    if uri::is_any_uri(&value) {
        Ok(value)
    } else {
        Err(CapError::schema(
            &child.path,
            format!(
                "\"{}\" is not a URI (check `%` escapes, `[` `]`, `#` and the port)",
                shorten(&value)
            ),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// xs:sequence.

/// The path of a child: its local name, with a zero-based index when the parent may have
/// several of it.
fn child_path(parent: &str, local: &str, repeatable: bool, index: usize) -> String {
    if repeatable {
        format!("{parent}/{local}[{index}]")
    } else {
        format!("{parent}/{local}")
    }
}

/// Matches `parent`'s children against a sequence, as an XSD validator does: in order,
/// each entry taking as many consecutive children as it may. (The CAP sequences never have
/// two neighbouring entries for the same element, so taking greedily is exact.)
fn sequence<'a>(
    parent: &'a Element,
    path: &str,
    particles: &'static [Particle],
) -> Result<Matched<'a>, CapError> {
    let mut slots: Vec<Vec<Child<'a>>> = particles.iter().map(|_| Vec::new()).collect();
    let mut p = 0;
    for (index, child) in parent.children.iter().enumerate() {
        loop {
            let Some(particle) = particles.get(p) else {
                return Err(unexpected(parent, path, particles, &slots, index));
            };
            if particle.matches(child) && slots[p].len() < particle.max {
                let k = slots[p].len();
                let child_path = child_path(path, &child.local, particle.max > 1, k);
                slots[p].push(Child {
                    element: child,
                    path: child_path,
                });
                break;
            }
            if slots[p].len() < particle.min {
                // The child is not what must come next. If it belongs further on, the
                // required entry is missing or misplaced; otherwise the child is.
                let belongs_later = particles[p + 1..].iter().any(|q| q.matches(child));
                return Err(if belongs_later {
                    missing(parent, path, &particles[p], Some(index))
                } else {
                    unexpected(parent, path, particles, &slots, index)
                });
            }
            p += 1;
        }
    }
    if let Some(q) = (p..particles.len()).find(|&q| slots[q].len() < particles[q].min) {
        return Err(missing(parent, path, &particles[q], None));
    }
    Ok(Matched { particles, slots })
}

/// A required entry of `parent`'s sequence that is absent where it should be.
fn missing(parent: &Element, path: &str, particle: &Particle, found: Option<usize>) -> CapError {
    let name = particle.name();
    let detail = match found {
        Some(index) => {
            let found = &parent.children[index];
            let later = parent.children[index..].iter().any(|c| particle.matches(c));
            if later {
                format!(
                    "`{name}` is out of order: in `{}` it must come before `{}` (line {}); \
                     CAP 1.2 fixes the order of elements",
                    parent.local, found.local, found.line
                )
            } else {
                format!(
                    "`{}` is missing the required element `{name}`, which must come before \
                     `{}` (line {})",
                    parent.local, found.local, found.line
                )
            }
        }
        None => format!(
            "`{}` (line {}) is missing the required element `{name}`",
            parent.local, parent.line
        ),
    };
    CapError::schema(format!("{path}/{name}"), detail)
}

/// A child that has no place where it is.
fn unexpected(
    parent: &Element,
    path: &str,
    particles: &[Particle],
    slots: &[Vec<Child<'_>>],
    index: usize,
) -> CapError {
    let child = &parent.children[index];
    let particle = particles.iter().position(|p| p.matches(child));
    let repeatable = particle.is_some_and(|q| particles[q].max > 1);
    let same_before = parent.children[..index]
        .iter()
        .filter(|c| c.ns == child.ns && c.local == child.local)
        .count();
    let element = child_path(path, &child.local, repeatable, same_before);
    let line = child.line;
    let parent_name = &parent.local;
    let detail = match (&child.ns, particle) {
        (Ns::Cap, Some(q)) if particles[q].max == 1 && !slots[q].is_empty() => format!(
            "`{}` appears more than once in `{parent_name}` (line {line}); only one is allowed",
            child.local
        ),
        (Ns::Cap, Some(_)) => {
            let before = index
                .checked_sub(1)
                .map_or(parent_name.as_str(), |i| parent.children[i].local.as_str());
            format!(
                "`{}` is out of order (line {line}): in `{parent_name}` it must come before \
                 `{before}`; CAP 1.2 fixes the order of elements",
                child.local
            )
        }
        (Ns::Cap, None) => format!(
            "`{}` (line {line}) is not an element of CAP 1.2 `{parent_name}`, which may \
             contain, in this order: {}",
            shorten(&child.local),
            particles
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Ns::Dsig, _) => format!(
            "the XML-DSig element `{}` (line {line}) is only allowed at the end of `alert`, \
             after every `info`",
            shorten(&child.qname)
        ),
        (Ns::None, _) => format!(
            "`{}` (line {line}) is in no namespace; CAP elements must be in the namespace \
             {NAMESPACE}",
            shorten(&child.qname)
        ),
        (Ns::Other(uri), _) => format!(
            "`{}` (line {line}) is in the namespace `{}`, which `{parent_name}` does not \
             allow; CAP elements must be in {NAMESPACE}",
            shorten(&child.qname),
            shorten(uri)
        ),
    };
    CapError::schema(element, detail)
}
