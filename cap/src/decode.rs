//! From bytes to checked text: the character encoding (byte order mark, then the XML
//! declaration, then UTF-8 by default), XML's line-end normalisation, and the characters
//! XML 1.0 allows. Everything after this works on one UTF-8 `String`.

use encoding_rs::Encoding;

use crate::error::{CapError, CapErrorKind};

/// How the bytes are turned into text.
#[derive(Clone, Copy)]
enum Charset {
    Utf8,
    /// ISO-8859-1 proper: every byte is the code point of the same number. (The WHATWG
    /// table that encoding_rs follows maps the label to windows-1252 instead, which reads
    /// 0x80–0x9F differently from XML parsers such as libxml2.)
    Latin1,
    /// US-ASCII: only bytes below 0x80.
    Ascii,
    /// Anything else encoding_rs can decode.
    Other(&'static Encoding),
}

/// The document as text, or why it cannot be read.
pub(crate) fn decode(bytes: &[u8]) -> Result<String, CapError> {
    let text = match sniff(bytes)? {
        // A byte order mark (or UTF-16's telltale `<?` pattern) fixes the encoding; the
        // declaration, if there is one, must agree with it.
        Some(Sniffed {
            charset,
            body,
            found,
        }) => {
            let text = decode_with(charset, body)?;
            if let Some(label) = declared_encoding(text.as_bytes())? {
                if !label_agrees(&label, charset) {
                    return Err(encoding_error(format!(
                        "the document starts with {found} but its XML declaration says \
                         encoding=\"{label}\"; make them agree (UTF-8 without a byte order \
                         mark is best)"
                    )));
                }
            }
            text
        }
        None => {
            let charset = match declared_encoding(bytes)? {
                None => Charset::Utf8,
                Some(label) => charset_for_label(&label)?,
            };
            decode_with(charset, bytes)?
        }
    };
    let text = normalize_line_ends(text);
    check_characters(&text)?;
    Ok(text)
}

fn encoding_error(detail: String) -> CapError {
    CapError::document(CapErrorKind::Encoding, detail)
}

/// What the first bytes say about the encoding.
struct Sniffed<'a> {
    charset: Charset,
    /// The bytes after the byte order mark.
    body: &'a [u8],
    /// What was found, for messages.
    found: &'static str,
}

/// Reads a byte order mark, or the first characters of a UTF-16 or UTF-32 document without
/// one (XML 1.0 appendix F); `None` for ASCII-compatible documents, whose declaration
/// decides.
fn sniff(bytes: &[u8]) -> Result<Option<Sniffed<'_>>, CapError> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return Ok(Some(Sniffed {
            charset: Charset::Utf8,
            body: rest,
            found: "a UTF-8 byte order mark",
        }));
    }
    let utf32 = bytes.starts_with(&[0, 0, 0xFE, 0xFF])
        || bytes.starts_with(&[0xFF, 0xFE, 0, 0])
        || bytes.starts_with(&[0, 0, 0, b'<'])
        || bytes.starts_with(&[b'<', 0, 0, 0]);
    if utf32 {
        return Err(encoding_error(
            "the document looks like UTF-32, which is not supported; send UTF-8".into(),
        ));
    }
    let le = Charset::Other(encoding_rs::UTF_16LE);
    let be = Charset::Other(encoding_rs::UTF_16BE);
    Ok(if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        Some(Sniffed {
            charset: le,
            body: rest,
            found: "a UTF-16LE byte order mark",
        })
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        Some(Sniffed {
            charset: be,
            body: rest,
            found: "a UTF-16BE byte order mark",
        })
    } else if bytes.starts_with(&[b'<', 0, b'?', 0]) {
        Some(Sniffed {
            charset: le,
            body: bytes,
            found: "UTF-16LE text",
        })
    } else if bytes.starts_with(&[0, b'<', 0, b'?']) {
        Some(Sniffed {
            charset: be,
            body: bytes,
            found: "UTF-16BE text",
        })
    } else {
        None
    })
}

/// Whether a declared encoding names what the byte order mark already told us.
fn label_agrees(label: &str, charset: Charset) -> bool {
    let declared = Encoding::for_label(label.trim().as_bytes());
    match charset {
        Charset::Utf8 => declared == Some(encoding_rs::UTF_8),
        // "UTF-16" without an endianness is what a byte order mark is for.
        Charset::Other(enc) => {
            label.eq_ignore_ascii_case("UTF-16")
                || label.eq_ignore_ascii_case("UTF16")
                || declared == Some(enc)
        }
        Charset::Latin1 | Charset::Ascii => false,
    }
}

/// The charset for a label from an XML declaration of an ASCII-compatible document.
fn charset_for_label(label: &str) -> Result<Charset, CapError> {
    let lower = label.to_ascii_lowercase();
    match lower.as_str() {
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "iso_8859-1:1987" | "latin1" | "l1"
        | "iso-ir-100" | "cp819" | "ibm819" | "csisolatin1" => return Ok(Charset::Latin1),
        "us-ascii" | "ascii" | "iso646-us" | "ansi_x3.4-1968" | "us" | "csascii" => {
            return Ok(Charset::Ascii)
        }
        _ => {}
    }
    let Some(encoding) = Encoding::for_label(lower.as_bytes()) else {
        return Err(encoding_error(format!(
            "the XML declaration names encoding \"{label}\", which is unknown; use UTF-8 \
             (or another encoding of the WHATWG Encoding Standard such as Shift_JIS, \
             EUC-JP or ISO-8859-1)"
        )));
    };
    if encoding == encoding_rs::UTF_8 {
        Ok(Charset::Utf8)
    } else if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        Err(encoding_error(format!(
            "the XML declaration says encoding=\"{label}\" but the bytes are not UTF-16 \
             (a UTF-16 document starts with a byte order mark); declare the encoding the \
             bytes are really in, preferably UTF-8"
        )))
    } else if encoding == encoding_rs::REPLACEMENT || !encoding.is_ascii_compatible() {
        // ISO-2022-JP (and the encodings WHATWG maps to "replacement") are stateful: escape
        // sequences change what later bytes mean, so a byte that reads as `<` or `&` in one
        // state is half of a kanji in another. Decoders and filters that disagree about the
        // state are a known way to smuggle markup; no CAP producer needs them.
        Err(encoding_error(format!(
            "the XML declaration names encoding \"{label}\", a stateful encoding this \
             parser refuses for safety; send UTF-8 (or Shift_JIS / EUC-JP)"
        )))
    } else {
        Ok(Charset::Other(encoding))
    }
}

/// Decodes strictly: a byte sequence that is not valid in the charset is an error, never
/// replaced with U+FFFD, so what we check is what the sender meant.
fn decode_with(charset: Charset, bytes: &[u8]) -> Result<String, CapError> {
    match charset {
        Charset::Utf8 => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(encoding_error(format!(
                "the bytes are not valid UTF-8 (line {}); declare the real encoding in the \
                 XML declaration or send UTF-8",
                line_of_byte(bytes, e.valid_up_to())
            ))),
        },
        Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
            None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            Some(at) => Err(encoding_error(format!(
                "the document declares US-ASCII but has a non-ASCII byte (line {}); \
                 declare the real encoding or send UTF-8",
                line_of_byte(bytes, at)
            ))),
        },
        Charset::Other(encoding) => encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|text| text.into_owned())
            .ok_or_else(|| {
                encoding_error(format!(
                    "the bytes are not valid {}; declare the real encoding in the XML \
                     declaration or send UTF-8",
                    encoding.name()
                ))
            }),
    }
}

fn line_of_byte(bytes: &[u8], at: usize) -> usize {
    1 + bytes[..at.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The `encoding` of the XML declaration at the very start of `head`, if any.
///
/// Works on the ASCII bytes of an ASCII-compatible document before it is decoded (and on
/// decoded text, to compare with a byte order mark). quick-xml checks the declaration's
/// syntax again later; this only needs to find the label.
fn declared_encoding(head: &[u8]) -> Result<Option<String>, CapError> {
    let Some(rest) = head.strip_prefix(b"<?xml") else {
        return Ok(None);
    };
    // `<?xml-stylesheet …?>` and the like are processing instructions, not a declaration.
    if !rest.first().is_some_and(|b| is_xml_space(*b)) {
        return Ok(None);
    }
    let malformed = || {
        CapError::document(
            CapErrorKind::Malformed,
            "the XML declaration on line 1 is malformed; write it like \
             <?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        )
    };
    let end = rest
        .windows(2)
        .position(|w| w == b"?>")
        .ok_or_else(malformed)?;
    let mut decl = &rest[..end];
    let mut encoding = None;
    loop {
        decl = trim_start(decl);
        if decl.is_empty() {
            break;
        }
        let name_len = decl
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(decl.len());
        let name = &decl[..name_len];
        decl = trim_start(&decl[name_len..]);
        decl = decl.strip_prefix(b"=").ok_or_else(malformed)?;
        decl = trim_start(decl);
        let quote = *decl.first().ok_or_else(malformed)?;
        if quote != b'"' && quote != b'\'' {
            return Err(malformed());
        }
        let close = decl[1..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(malformed)?;
        let value = &decl[1..1 + close];
        decl = &decl[close + 2..];
        if name == b"encoding" {
            // EncName ::= [A-Za-z] ([A-Za-z0-9._] | '-')*
            let valid = value.first().is_some_and(|b| b.is_ascii_alphabetic())
                && value
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return Err(malformed());
            }
            // Valid EncName bytes are ASCII, so this conversion is lossless.
            encoding = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    Ok(encoding)
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_start(mut bytes: &[u8]) -> &[u8] {
    while let Some((&first, rest)) = bytes.split_first() {
        if !is_xml_space(first) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// XML 1.0 §2.11: every CR LF pair and every lone CR becomes LF before parsing. A CR that a
/// document wants to keep is written `&#13;`, which is expanded only later.
fn normalize_line_ends(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// XML 1.0's `Char` production: tab, LF, CR and everything from U+0020 except U+FFFE and
/// U+FFFF (Rust's `char` already excludes the surrogates).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

fn check_characters(text: &str) -> Result<(), CapError> {
    match text.char_indices().find(|&(_, c)| !is_xml_char(c)) {
        None => Ok(()),
        Some((at, c)) => Err(CapError::document(
            CapErrorKind::Malformed,
            format!(
                "line {}: the character U+{:04X} is not allowed in XML 1.0 (control \
                 characters other than tab, line feed and carriage return cannot be sent)",
                1 + text[..at].matches('\n').count(),
                u32::from(c)
            ),
        )),
    }
}
