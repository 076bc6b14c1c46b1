//! Which subscriber addresses Noroshi sends to, and the exact form they take on the wire.
//!
//! The decision for old Japanese carrier addresses (CHANNELS.md §4.5) such as
//! `taro..yamada.@docomo.ne.jp`: they are real, deliverable mailboxes that break RFC 5322's
//! dot-atom rule only by their dots. We send them as a **quoted local part**
//! (`"taro..yamada."@docomo.ne.jp`), which RFC 5321 §4.1.2 defines as the same mailbox, so
//! they are neither refused nor silently dropped. Anything else outside the grammar
//! (spaces, control characters, `<`, `,`, non-ASCII local parts, which would need SMTPUTF8)
//! is refused with a sentence saying why, so the daemon can refuse it at subscriber creation
//! or import.

use lettre::message::Mailbox;
use lettre::Address;

/// RFC 5321 §4.5.3.1: local part ≤ 64 octets, a forward-path ≤ 256 including `<>`.
const MAX_LOCAL: usize = 64;
const MAX_ADDRESS: usize = 254;

/// Whether Noroshi can send to `addr`; `Err` is a sentence for the person importing it.
///
/// Accepts RFC 5322 dot-atom and quoted-string local parts, the carrier form with
/// consecutive or trailing dots (sent quoted), and internationalized domains (sent as
/// punycode). Refuses everything else.
pub fn validate_address(addr: &str) -> Result<(), String> {
    smtp_address(addr).map(|_| ())
}

/// The address as it goes into `RCPT TO` and `To:`.
pub(crate) fn smtp_address(addr: &str) -> Result<Address, String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("the address is empty".into());
    }
    if addr.chars().any(|c| c.is_control()) {
        return Err("the address contains a control character or line break".into());
    }
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Err(format!("`{addr}` has no `@`"));
    };
    if local.is_empty() {
        return Err(format!("`{addr}` has nothing before the `@`"));
    }
    let domain = ascii_domain(domain).map_err(|e| format!("`{addr}`: {e}"))?;
    let local = smtp_local_part(local).map_err(|e| format!("`{addr}`: {e}"))?;
    if local.len() > MAX_LOCAL + 2 || local.len() + 1 + domain.len() > MAX_ADDRESS {
        return Err(format!("`{addr}` is longer than SMTP allows"));
    }
    match Address::new(&local, &domain) {
        Ok(address) => Ok(address),
        // The quoted carrier form passed our own stricter check below; lettre's parser
        // (the `email_address` crate) may not accept every quoted local part.
        Err(_) if local.starts_with('"') => Ok(Address::new_dangerous(&local, &domain)),
        Err(e) => Err(format!("`{addr}` is not a valid address ({e})")),
    }
}

fn smtp_local_part(local: &str) -> Result<String, String> {
    if !local.is_ascii() {
        return Err(
            "the part before `@` has non-ASCII characters, which need SMTPUTF8 (not supported)"
                .into(),
        );
    }
    if local.len() > MAX_LOCAL {
        return Err(format!(
            "the part before `@` is {} octets, over the limit of {MAX_LOCAL}",
            local.len()
        ));
    }
    if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
        let inner = &local[1..local.len() - 1];
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                // The escaped character is consumed by the guard.
                '\\' if chars.next().is_none() => {
                    return Err("the quoted part ends with a lone backslash".into());
                }
                '"' => return Err("the quoted part has an unescaped `\"`".into()),
                _ => {}
            }
        }
        return Ok(local.to_string());
    }
    if !local.bytes().all(|b| is_atext(b) || b == b'.') {
        let bad: String = local
            .chars()
            .filter(|c| !(c.is_ascii() && (is_atext(*c as u8) || *c == '.')))
            .take(3)
            .collect();
        return Err(format!(
            "the part before `@` contains characters not allowed in an address: {bad:?}"
        ));
    }
    if is_dot_atom(local) {
        Ok(local.to_string())
    } else {
        // Only the dots break the rule: the carrier form, sent quoted.
        Ok(format!("\"{local}\""))
    }
}

fn ascii_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty() {
        return Err("nothing after the `@`".into());
    }
    if domain.starts_with('[') {
        return Err("address literals (`user@[1.2.3.4]`) are not accepted for subscribers".into());
    }
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        match url::Host::parse(domain) {
            Ok(url::Host::Domain(d)) => d,
            _ => return Err("the domain is not a valid internationalized domain name".into()),
        }
    };
    let valid = ascii.contains('.')
        && ascii.len() <= 253
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(ascii)
    } else {
        Err("the domain is not a valid domain name".into())
    }
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|atom| !atom.is_empty())
}

/// `Name <user@domain>` or a bare address, for the configured `from`, `reply_to` and
/// `bounce_address`.
pub(crate) fn parse_mailbox(s: &str) -> Result<(Option<String>, Address), String> {
    let mailbox: Mailbox = s.trim().parse().map_err(|e| format!("{e}"))?;
    Ok((mailbox.name, mailbox.email))
}

/// Whether a local part can take a `+tag`: a plain dot-atom without a `+` already.
pub(crate) fn plus_able_local_part(local: &str) -> bool {
    is_dot_atom(local)
        && local
            .bytes()
            .all(|b| b == b'.' || (is_atext(b) && b != b'+'))
}

/// A delivery id reduced to characters that are safe in a local part and a Message-ID.
pub(crate) fn id_token(id: &str) -> String {
    let token: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if token.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        token
    }
}
