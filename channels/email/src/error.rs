//! SMTP replies and transport failures → `DeliveryError` classes (CHANNELS.md §4.5), as data.

use noroshi_channel_core::{DeliveryError, ErrorClass};

/// Where in the SMTP dialogue a failure happened. The step decides what a reply-less
/// failure means: before the final `.` nothing was accepted (transient); after it the
/// server may have queued the message (uncertain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// TCP connect, greeting, EHLO, STARTTLS/TLS handshake, AUTH.
    Connect,
    Mail,
    Rcpt,
    Data,
    /// The message was sent and `CRLF.CRLF` written; waiting for the final reply.
    EndOfData,
    /// MAIL, RCPT, `BDAT <size> LAST` and the message went out in one write (RFC 3030):
    /// a failure without a reply is uncertain from the first reply on.
    Chunk,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Mail => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
            Step::EndOfData => "end of DATA",
            Step::Chunk => "BDAT",
        }
    }

    /// The whole message may already be with the server.
    fn message_sent(self) -> bool {
        matches!(self, Step::EndOfData | Step::Chunk)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Transient,
    Auth,
    Permanent,
}

/// A reply rule: the reply code (`None` for any), the enhanced status code prefix it needs
/// (`None` for any), the class, and a note for operators. First match wins.
type Rule = (Option<u16>, Option<&'static str>, Class, &'static str);

const REPLY_RULES: &[Rule] = &[
    (
        Some(421),
        None,
        Class::Transient,
        "server closing the connection",
    ),
    // 5.3.4 "message too big" is permanent whatever the code (often 552).
    (
        None,
        Some("5.3.4"),
        Class::Permanent,
        "message too big for the server",
    ),
    // 552 with 5.2.2 (or no enhanced code): mailbox full, a soft bounce.
    (
        Some(552),
        None,
        Class::Permanent,
        "soft bounce (mailbox full, 5.2.2): count it, suppress the address after repeats",
    ),
    (Some(530), None, Class::Auth, "authentication required"),
    (
        Some(534),
        None,
        Class::Auth,
        "authentication mechanism too weak",
    ),
    (
        Some(535),
        None,
        Class::Auth,
        "authentication credentials refused",
    ),
    (
        Some(538),
        None,
        Class::Auth,
        "encryption required for authentication",
    ),
    (
        None,
        Some("5.7.8"),
        Class::Auth,
        "authentication credentials refused",
    ),
    (
        Some(554),
        None,
        Class::Permanent,
        "rejected by policy (may indicate a sender reputation problem)",
    ),
    (
        None,
        Some("5.7.1"),
        Class::Permanent,
        "rejected by policy (may indicate a sender reputation problem)",
    ),
    (Some(550), None, Class::Permanent, "recipient refused"),
    (Some(551), None, Class::Permanent, "recipient not local"),
    (
        Some(553),
        None,
        Class::Permanent,
        "mailbox name not allowed",
    ),
];

/// Classifies a negative SMTP reply. `text` is the reply text after the code.
pub(crate) fn reply_error(step: Step, code: u16, text: &str) -> DeliveryError {
    let enhanced = enhanced_code(text);
    let rule = REPLY_RULES.iter().find(|(c, e, _, _)| {
        c.is_none_or(|c| c == code)
            && e.is_none_or(|e| enhanced.is_some_and(|got| got.starts_with(e)))
    });
    let (class, note) = match rule {
        Some((_, _, class, note)) => (*class, *note),
        None if (400..500).contains(&code) => (Class::Transient, "temporary failure"),
        None => (Class::Permanent, "refused"),
    };
    let class = match class {
        Class::Transient => ErrorClass::Transient,
        Class::Auth => ErrorClass::Auth,
        Class::Permanent => ErrorClass::Permanent,
    };
    DeliveryError::new(
        class,
        format!("{}: {note}: {code} {}", step.as_str(), clean(text)),
    )
    .with_status(code)
}

/// A step that got no reply in time.
pub(crate) fn timeout_error(step: Step, secs: u64) -> DeliveryError {
    match step {
        _ if step.message_sent() => DeliveryError::uncertain(format!(
            "{}: no reply within {secs} s after the message was sent: the server may have queued it",
            step.as_str()
        )),
        _ => DeliveryError::transient(format!("{}: no reply within {secs} s", step.as_str())),
    }
}

/// Classifies an error from lettre's connection.
///
/// lettre's `Error` says *what* failed (`is_timeout`, `is_tls`, `status()`, …) but not
/// *when*; the step we were in says that. A reply code always wins: the server answered,
/// so nothing is ambiguous. Without one, only the steps after the whole message went out
/// ([`Step::EndOfData`], [`Step::Chunk`]) are uncertain.
pub(crate) fn lettre_error(step: Step, err: &lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(code) = err.status() {
        let text = std::error::Error::source(err)
            .map(|s| s.to_string())
            .unwrap_or_default();
        return reply_error(step, u16::from(code), &text);
    }
    let what = if err.is_tls() {
        "TLS failure"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_client() {
        "client refused to continue"
    } else if err.is_response() {
        "connection closed or unreadable reply"
    } else {
        "network error"
    };
    let message = format!("{}: {what}: {}", step.as_str(), clean(&err.to_string()));
    if step.message_sent() {
        return DeliveryError::uncertain(format!(
            "{message} (after the whole message was sent: the server may have queued it)"
        ));
    }
    if step == Step::Connect && err.is_client() {
        // e.g. STARTTLS required but not offered, or no common AUTH mechanism: the
        // channel's setup is wrong, retrying will not help; pause it for an operator.
        return DeliveryError::auth(message);
    }
    DeliveryError::transient(message)
}

/// The enhanced status code (RFC 3463) a reply text starts with.
pub(crate) fn enhanced_code(text: &str) -> Option<&str> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let ok = matches!(parts.next(), Some("2" | "4" | "5"))
        && parts.clone().count() == 2
        && parts.all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(word)
}

/// The queue id in `250 2.0.0 Ok: queued as ABC123`; the reply text when there is none.
pub(crate) fn queue_id(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if let Some(at) = lower.find("queued as") {
        if let Some(id) = text[at + "queued as".len()..].split_whitespace().next() {
            return id
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string();
        }
    }
    clean(text)
}

/// One line, printable, bounded: server text goes into operator-visible messages.
fn clean(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &trimmed[..at]),
        None => trimmed.to_string(),
    }
}
