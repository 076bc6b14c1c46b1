//! `xs:anyURI`, checked the way libxml2 (the reference validator for `cap12.xsd` here)
//! checks it: characters that cannot appear in a URI but often do in practice (spaces,
//! non-ASCII, `<` `>` `"` `{` `}` `|` `\` `^` `` ` `` `'`, controls) are allowed, as if
//! %-escaped; what remains must be an RFC 3986 URI reference. So `https://例え.jp/避難 所`
//! passes, while `http://[x`, `%zz`, `a#b#c` or `::` do not.

/// Whether the (white-space-collapsed) text is an acceptable `xs:anyURI`.
pub(crate) fn is_any_uri(text: &str) -> bool {
    let escaped: String = text
        .chars()
        .map(|c| {
            let escapable = u32::from(c) < 32
                || u32::from(c) >= 127
                || matches!(
                    c,
                    ' ' | '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`' | '\''
                );
            if escapable {
                '_'
            } else {
                c
            }
        })
        .collect();
    uri_reference(&escaped)
}

/// RFC 3986 `URI-reference`.
fn uri_reference(s: &str) -> bool {
    let (rest, fragment) = match s.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (s, None),
    };
    // fragment = *( pchar / "/" / "?" ): in particular no second `#`.
    if fragment.is_some_and(|f| !chars_ok(f, "/?:@")) {
        return false;
    }
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    if query.is_some_and(|q| !chars_ok(q, "/?:@")) {
        return false;
    }
    // A `:` before any `/` ends a scheme: a relative reference's first segment may not
    // contain one (RFC 3986 `path-noscheme`).
    let hier = match rest.find(':') {
        Some(colon) if !rest[..colon].contains('/') => {
            if !is_scheme(&rest[..colon]) {
                return false;
            }
            &rest[colon + 1..]
        }
        _ => rest,
    };
    match hier.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            authority_ok(authority) && chars_ok(path, "/:@")
        }
        None => chars_ok(hier, "/:@"),
    }
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `authority = [ userinfo "@" ] host [ ":" port ]`. As in libxml2, a `:` must be followed
/// by a port number, and the inside of an IP literal is not examined further.
fn authority_ok(authority: &str) -> bool {
    let host_port = match authority.split_once('@') {
        Some((userinfo, host_port)) => {
            if !chars_ok(userinfo, ":") {
                return false;
            }
            host_port
        }
        None => authority,
    };
    let port = if let Some(literal) = host_port.strip_prefix('[') {
        let Some((inside, after)) = literal.split_once(']') else {
            return false;
        };
        if inside.is_empty() || inside.contains('[') {
            return false;
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        }
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if !chars_ok(host, "") {
            return false;
        }
        port
    };
    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Every character is unreserved, a sub-delimiter, one of `extra`, or a well-formed
/// %-escape.
fn chars_ok(s: &str, extra: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        let sub_delim = matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        );
        if !(unreserved || sub_delim || extra.as_bytes().contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::is_any_uri;

    #[test]
    fn agrees_with_libxml2_on_these() {
        // Each of these was checked with xmllint against cap12.xsd.
        let valid = [
            "https://www.city.suzaka.nagano.jp/",
            "http://a b",
            "http://a%20b",
            "a:b",
            "http://[::1]:80/p",
            "http://[v1.x]/",
            "http://[zz]/",
            "mailto:a@b",
            "/a/b?c=d",
            "?",
            "#",
            "",
            "http://a|b",
            "http://a{b",
            "http://h/ü",
            "//h",
            "///x",
            "http://h/p?q#f?/",
            "urn:a:b",
            "a/b:c",
            "http://h/%41",
        ];
        let invalid = [
            "http://[x",
            "::",
            "%zz",
            "http://a#b#c",
            "1a:b",
            "http://u@h@x/",
            "http://h:80x/",
            "a[b",
            "http://a/b[c",
            "http://h/%4",
            "http://h:/",
            ":a",
        ];
        for uri in valid {
            assert!(is_any_uri(uri), "{uri} should be accepted");
        }
        for uri in invalid {
            assert!(!is_any_uri(uri), "{uri} should be refused");
        }
    }
}
