//! Well-formed, safe XML to a small element tree.
//!
//! Safety comes first: a `DOCTYPE` is refused outright (so there are no DTDs, no entity
//! declarations, no external entities and nothing to expand), and the only references
//! accepted in text are XML's five predefined entities and numeric character references,
//! which we expand ourselves. Nothing here can open a file or a socket.
//!
//! Only elements in the CAP namespace keep their children and text; any other element is
//! kept as a childless marker (its content is still checked for well-formedness), because
//! the schema validation only needs to know it is there: an XML-DSig `Signature` at the end
//! of `alert` is allowed and ignored, anything else foreign is refused.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::decode::is_xml_char;
use crate::error::{CapError, CapErrorKind};
use crate::model::shorten;
use crate::{DSIG_NAMESPACE, NAMESPACE};

/// Nesting deeper than this is refused. CAP itself is five levels deep and an XML-DSig
/// signature adds a handful; the limit keeps recursion (including `Drop`) shallow.
const MAX_DEPTH: usize = 64;

/// More attributes than this on one element are refused (see `check_start_tag`).
const MAX_ATTRIBUTES: usize = 64;

/// The namespace of an element or attribute name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ns {
    /// No namespace.
    None,
    /// CAP 1.2.
    Cap,
    /// XML-DSig.
    Dsig,
    /// Any other namespace (the URI, for messages).
    Other(String),
}

impl Ns {
    fn from_uri(uri: &[u8]) -> Ns {
        if uri == NAMESPACE.as_bytes() {
            Ns::Cap
        } else if uri == DSIG_NAMESPACE.as_bytes() {
            Ns::Dsig
        } else {
            Ns::Other(String::from_utf8_lossy(uri).into_owned())
        }
    }
}

/// An attribute that is not a namespace declaration. Its value is checked but not kept:
/// no CAP element has attributes.
#[derive(Debug)]
pub(crate) struct Attr {
    pub ns: Ns,
    pub local: String,
    pub qname: String,
}

/// One element. For elements outside the CAP namespace, `children` and `text` stay empty.
#[derive(Debug)]
pub(crate) struct Element {
    pub ns: Ns,
    pub local: String,
    /// The name as written, prefix included, for messages.
    pub qname: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    /// All character data directly inside (text and CDATA, references expanded, joined
    /// across comments and processing instructions).
    pub text: String,
    /// Whether any text or CDATA appeared at all, even empty: `<a/>` and `<a><!--c--></a>`
    /// are empty (and take a schema default), `<a><![CDATA[]]></a>` is not.
    pub has_char_data: bool,
    /// 1-based line of the start tag, for messages.
    pub line: usize,
}

fn malformed(line: usize, detail: impl std::fmt::Display) -> CapError {
    CapError::document(CapErrorKind::Malformed, format!("line {line}: {detail}"))
}

fn forbidden(line: usize, detail: impl std::fmt::Display) -> CapError {
    CapError::document(CapErrorKind::Forbidden, format!("line {line}: {detail}"))
}

/// Parses the (already decoded and line-end-normalised) document into its root element.
pub(crate) fn read_tree(doc: &str) -> Result<Element, CapError> {
    let mut reader = NsReader::from_str(doc);
    {
        let config = reader.config_mut();
        // `--` inside a comment is not well-formed; ask quick-xml to check it.
        config.check_comments = true;
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
    }

    // Open elements, innermost last.
    let mut stack: Vec<Element> = Vec::new();
    // Levels open inside the innermost foreign element (0 when not inside one).
    let mut foreign_depth = 0usize;
    let mut root: Option<Element> = None;
    let mut first_event = true;
    // Line bookkeeping: the line at byte offset `seen`.
    let (mut seen, mut line) = (0usize, 1usize);

    loop {
        let at = usize::try_from(reader.buffer_position()).unwrap_or(doc.len());
        line += count_newlines(doc, seen, at);
        seen = at;
        let (resolved, event) = match reader.read_resolved_event() {
            Ok((resolved, event)) => (resolve(resolved, line)?, event),
            Err(e) => {
                let at = usize::try_from(reader.error_position()).unwrap_or(at);
                return Err(malformed(line + count_newlines(doc, seen, at), e));
            }
        };
        let is_first = std::mem::replace(&mut first_event, false);
        match event {
            Event::Decl(decl) => {
                if !is_first {
                    return Err(malformed(
                        line,
                        "an XML declaration is only allowed at the very start of the \
                         document (nothing, not even white space, may come before it)",
                    ));
                }
                let version = decl.version().map_err(|e| malformed(line, e))?;
                if version.as_ref() != b"1.0" {
                    return Err(malformed(
                        line,
                        format!(
                            "XML version \"{}\" is not supported; use version=\"1.0\"",
                            shorten(&String::from_utf8_lossy(&version))
                        ),
                    ));
                }
            }
            Event::DocType(_) => {
                return Err(forbidden(
                    line,
                    "a DOCTYPE declaration is not allowed: CAP documents must not carry a \
                     DTD, entity declarations or external references (they are refused \
                     unread, and nothing is ever fetched)",
                ));
            }
            // Processing instructions (such as xml-stylesheet) and comments carry nothing
            // for CAP, and the schema ignores them too; we never act on them.
            Event::PI(_) | Event::Comment(_) => {}
            // Inside a foreign element: check the tags, count the levels, keep nothing.
            Event::Start(start) if foreign_depth > 0 => {
                check_start_tag(&reader, &start, line)?;
                foreign_depth += 1;
                if stack.len() + foreign_depth > MAX_DEPTH {
                    return Err(too_deep(line));
                }
            }
            Event::Empty(start) if foreign_depth > 0 => {
                check_start_tag(&reader, &start, line)?;
            }
            Event::Start(start) => {
                let element = open_element(&reader, &start, resolved, line)?;
                if root.is_some() && stack.is_empty() {
                    return Err(second_root(line));
                }
                if stack.len() + 1 > MAX_DEPTH {
                    return Err(too_deep(line));
                }
                if element.ns != Ns::Cap {
                    foreign_depth = 1;
                }
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = open_element(&reader, &start, resolved, line)?;
                if root.is_some() && stack.is_empty() {
                    return Err(second_root(line));
                }
                attach(&mut stack, &mut root, element);
            }
            Event::End(_) => {
                if foreign_depth > 1 {
                    foreign_depth -= 1;
                    continue;
                }
                foreign_depth = 0;
                // quick-xml has already matched the end tag with its start tag.
                if let Some(element) = stack.pop() {
                    attach(&mut stack, &mut root, element);
                }
            }
            Event::Text(text) => {
                let raw = std::str::from_utf8(&text).map_err(|e| malformed(line, e))?;
                if raw.contains("]]>") {
                    return Err(malformed(
                        line,
                        "`]]>` may not appear in text; write `]]&gt;`",
                    ));
                }
                let text = unescape(raw, line)?;
                add_text(&mut stack, foreign_depth, &text, line)?;
            }
            Event::CData(cdata) => {
                let text = std::str::from_utf8(&cdata).map_err(|e| malformed(line, e))?;
                add_text(&mut stack, foreign_depth, text, line)?;
            }
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(malformed(
            line,
            format!(
                "the document ends before element `{}` (opened on line {}) is closed",
                open.qname, open.line
            ),
        ));
    }
    root.ok_or_else(|| malformed(line, "the document has no root element; expected `alert`"))
}

fn too_deep(line: usize) -> CapError {
    malformed(
        line,
        format!("elements are nested more than {MAX_DEPTH} deep, which no CAP message needs"),
    )
}

fn second_root(line: usize) -> CapError {
    malformed(
        line,
        "a second root element; a CAP document has exactly one `alert` element",
    )
}

fn count_newlines(doc: &str, from: usize, to: usize) -> usize {
    doc.as_bytes()
        .get(from..to)
        .map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

/// The namespace of a resolved element name; an undeclared prefix is an error.
fn resolve(resolved: ResolveResult<'_>, line: usize) -> Result<Ns, CapError> {
    match resolved {
        ResolveResult::Bound(ns) => Ok(Ns::from_uri(ns.as_ref())),
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Unknown(prefix) => Err(malformed(
            line,
            format!(
                "the namespace prefix `{}` is not declared",
                shorten(&String::from_utf8_lossy(&prefix))
            ),
        )),
    }
}

/// Appends a finished element to its parent, or makes it the root.
fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => {
            // Foreign elements keep no children: they are markers only.
            if parent.ns == Ns::Cap {
                parent.children.push(element);
            }
        }
        None => *root = Some(element),
    }
}

/// Adds character data to the innermost open CAP element. Outside the root only white
/// space is allowed.
fn add_text(
    stack: &mut [Element],
    foreign_depth: usize,
    text: &str,
    line: usize,
) -> Result<(), CapError> {
    match stack.last_mut() {
        None if !is_blank(text) => Err(malformed(
            line,
            format!("text outside the root element: `{}`", shorten(text.trim())),
        )),
        None => Ok(()),
        Some(_) if foreign_depth > 0 => Ok(()),
        Some(element) => {
            element.has_char_data = true;
            element.text.push_str(text);
            Ok(())
        }
    }
}

/// XML white space (space, tab, LF, CR) only.
pub(crate) fn is_blank(text: &str) -> bool {
    text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// Checks a start tag's name and attributes (syntax, duplicates, references), returning
/// the attributes that are not namespace declarations.
fn check_start_tag(
    reader: &NsReader<&[u8]>,
    start: &BytesStart<'_>,
    line: usize,
) -> Result<Vec<Attr>, CapError> {
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| malformed(line, e))?
        .to_owned();
    check_qname(&qname, line)?;
    let mut attrs = Vec::new();
    for (count, attr) in start.attributes().enumerate() {
        // quick-xml's duplicate check compares each attribute with all earlier ones, so
        // an element with 100,000 attributes would take seconds; no real one has more
        // than a handful (CAP elements have none).
        if count == MAX_ATTRIBUTES {
            return Err(forbidden(
                line,
                format!("an element has more than {MAX_ATTRIBUTES} attributes"),
            ));
        }
        let attr = attr.map_err(|e| malformed(line, e))?;
        let key = std::str::from_utf8(attr.key.as_ref()).map_err(|e| malformed(line, e))?;
        check_qname(key, line)?;
        let value = std::str::from_utf8(&attr.value).map_err(|e| malformed(line, e))?;
        if value.contains('<') {
            return Err(malformed(
                line,
                format!("`<` is not allowed in the value of attribute `{key}`; write `&lt;`"),
            ));
        }
        unescape(value, line)?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let (resolved, local) = reader.resolve_attribute(attr.key);
        let ns = resolve(resolved, line)?;
        attrs.push(Attr {
            ns,
            local: String::from_utf8_lossy(local.as_ref()).into_owned(),
            qname: key.to_owned(),
        });
    }
    Ok(attrs)
}

fn open_element(
    reader: &NsReader<&[u8]>,
    start: &BytesStart<'_>,
    ns: Ns,
    line: usize,
) -> Result<Element, CapError> {
    let attrs = check_start_tag(reader, start, line)?;
    let qname = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    Ok(Element {
        ns,
        local,
        qname,
        attrs,
        children: Vec::new(),
        text: String::new(),
        has_char_data: false,
        line,
    })
}

/// A (namespace-well-formed) XML name: `Name` with at most one colon, neither first nor
/// last. quick-xml does not check names, so a stray `<` in text shows up here.
fn check_qname(name: &str, line: usize) -> Result<(), CapError> {
    let start_char = |c: char| c.is_ascii_alphabetic() || c == '_' || is_name_non_ascii(c);
    let name_char =
        |c: char| start_char(c) || c.is_ascii_digit() || c == '-' || c == '.' || c == '\u{B7}';
    let valid_part = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(start_char) && chars.all(name_char)
    };
    let valid = match name.split_once(':') {
        None => valid_part(name),
        Some((prefix, local)) => valid_part(prefix) && valid_part(local),
    };
    if valid {
        Ok(())
    } else {
        Err(malformed(
            line,
            format!(
                "`{}` is not a valid XML name (a stray `<` in text must be written `&lt;`)",
                shorten(name)
            ),
        ))
    }
}

/// The non-ASCII ranges of XML 1.0 (fifth edition) `NameStartChar`.
fn is_name_non_ascii(c: char) -> bool {
    matches!(c,
        '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}'
        | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}'
        | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}'
        // NameChar-only characters, accepted anywhere for simplicity.
        | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Expands `&lt;` `&gt;` `&amp;` `&apos;` `&quot;` and numeric character references; any
/// other reference is refused. Done here rather than by quick-xml so that no optional
/// quick-xml feature (HTML entities) enabled elsewhere in the workspace can widen it.
pub(crate) fn unescape(raw: &str, line: usize) -> Result<String, CapError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .filter(|&semi| semi > 0 && !after[..semi].contains(char::is_whitespace))
            .ok_or_else(|| {
                malformed(
                    line,
                    "a bare `&` in text; write `&amp;` (references look like `&amp;` or `&#38;`)",
                )
            })?;
        let name = &after[..semi];
        let expanded = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ if name.starts_with('#') => char_ref(&name[1..], line)?,
            _ => {
                return Err(forbidden(
                    line,
                    format!(
                        "the entity reference `&{};` is not allowed: only `&lt;` `&gt;` \
                         `&amp;` `&apos;` `&quot;` and numeric character references such \
                         as `&#12354;` are accepted (entities need a DTD, which CAP \
                         documents may not have)",
                        shorten(name)
                    ),
                ))
            }
        };
        out.push(expanded);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `&#123;` or `&#x7B;`: the character, which must be one XML allows.
fn char_ref(number: &str, line: usize) -> Result<char, CapError> {
    let parsed = match number.strip_prefix('x') {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()
        }
        None if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
            number.parse::<u32>().ok()
        }
        _ => None,
    };
    parsed
        .and_then(char::from_u32)
        .filter(|&c| is_xml_char(c))
        .ok_or_else(|| {
            malformed(
                line,
                format!(
                    "`&#{};` is not a reference to a character XML allows",
                    shorten(number)
                ),
            )
        })
}
