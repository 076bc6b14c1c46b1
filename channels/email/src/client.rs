//! The email `Channel`: one SMTP transaction per recipient over a small connection pool.
//!
//! Why not `lettre::AsyncSmtpTransport`: its `send_raw` runs MAIL, RCPT, DATA and the
//! message in one call, so its `Error` cannot say whether a failure came before or after
//! the final `.` — the one fact that separates `Transient` (nothing queued) from
//! `Uncertain` (the server may have queued it; CHANNELS.md §4.5). Its tokio connections
//! also have no read timeout, and cancelling a pending `send_raw` with `tokio::time::timeout`
//! hands the connection back to its pool with the unread reply still in the socket, so the
//! next message reads the previous message's `250`. So this module drives lettre's own
//! `AsyncSmtpConnection` (its TLS, STARTTLS, AUTH, dot-stuffing and reply parser) step by
//! step, with a timeout per step, and keeps its own pool: a connection goes back only
//! after a clean transaction (or a refusal followed by a successful `RSET`).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue, MessageId,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use noroshi_channel_core::{
    system_clock, Announcement, Audience, Channel, Clock, ConfigProblem, DeliveryContext,
    DeliveryError, DeliveryUnit, ExposeSecret, Limits, Priority, Receipt, Recipient, RenderError,
    Rendering,
};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::address::{id_token, parse_mailbox, plus_able_local_part, smtp_address};
use crate::config::{Config, TlsMode};
use crate::error::{lettre_error, queue_id, timeout_error, Step};
use crate::render::EmailPayload;
use crate::template::{Marks, Prepared, Template};

/// A parked connection idle longer than this gets a `NOOP` before reuse.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);
/// A parked connection idle longer than this is closed rather than reused: submission
/// servers drop idle clients (Postfix after 300 s, some providers much sooner).
const MAX_IDLE: Duration = Duration::from_secs(50);

/// The email channel built from `[channels.email]`.
pub struct EmailChannel {
    name: String,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    bounce: Address,
    verp: bool,
    list_id: String,
    unsubscribe_mailto_domain: Option<String>,
    message_id_domain: String,
    pool: Pool,
    /// A drill's test address: drills go there alone.
    exercise_target: Option<String>,
    /// Where the adapter reads the time (the `Date:` header).
    clock: Clock,
    /// Parsed payloads by announcement (see `parsed`).
    #[allow(clippy::type_complexity)]
    parsed: Mutex<Vec<(String, serde_json::Value, Arc<Prepared>)>>,
}

impl fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("host", &self.pool.params.host)
            .field("port", &self.pool.params.port)
            .field("tls", &self.pool.params.tls)
            .field("auth", &self.pool.params.credentials.is_some())
            .finish_non_exhaustive()
    }
}

struct ConnectParams {
    host: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// Strings that must never reach an error message: the password and its AUTH forms.
    secrets: Vec<String>,
    step_timeout: Duration,
}

struct Parked {
    conn: Conn,
    since: Instant,
}

/// A connection and what its server said it can do.
struct Conn {
    smtp: AsyncSmtpConnection,
    /// The server advertised `PIPELINING` (RFC 2920): MAIL, RCPT and DATA go out in one
    /// write and their replies are read together.
    pipelining: bool,
    /// The server advertised `CHUNKING` (RFC 3030) as well as `PIPELINING`: MAIL, RCPT,
    /// `BDAT <size> LAST` and the message itself go out in one write, one round trip per
    /// message instead of two (DATA waits for its `354`).
    chunking: bool,
}

struct Pool {
    params: ConnectParams,
    idle: Mutex<Vec<Parked>>,
    /// Transactions (hence open connections) at once; idle ones never exceed it either.
    permits: Semaphore,
    /// Transactions only disaster copies may use, on top of `permits`.
    disaster_permits: Semaphore,
    size: usize,
}

impl EmailChannel {
    /// Builds the channel; the config must already be valid.
    pub fn new(name: &str, config: &Config) -> Result<EmailChannel, Vec<ConfigProblem>> {
        let problem = |key: &str, msg: String| vec![ConfigProblem::new(key, msg)];
        let (from_name, from_addr) = parse_mailbox(&config.from).map_err(|e| problem("from", e))?;
        let reply_to = match &config.reply_to {
            Some(r) => {
                let (n, a) = parse_mailbox(r).map_err(|e| problem("reply_to", e))?;
                Some(Mailbox::new(n, a))
            }
            None => None,
        };
        let (bounce, verp) = match &config.bounce_address {
            Some(b) => {
                let (_, a) = parse_mailbox(b).map_err(|e| problem("bounce_address", e))?;
                let verp = plus_able_local_part(a.user());
                (a, verp)
            }
            None => (from_addr.clone(), false),
        };
        let tls_parameters = match config.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Tls => Some(
                TlsParameters::new_rustls(config.smtp_host.clone())
                    .map_err(|e| problem("smtp_host", format!("TLS setup failed: {e}")))?,
            ),
        };
        let (credentials, secrets) = match (&config.username, &config.password) {
            (Some(user), Some(pass)) => {
                let pass = pass.expose_secret().to_string();
                let b64 = |s: String| {
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s)
                };
                let secrets = vec![
                    b64(format!("\0{user}\0{pass}")),
                    b64(pass.clone()),
                    pass.clone(),
                ];
                (Some(Credentials::new(user.clone(), pass)), secrets)
            }
            _ => (None, Vec::new()),
        };
        let pool_size = config.pool_size.max(1) as usize;
        let list_id = match &config.list_name {
            Some(name) if !name.trim().is_empty() => {
                format!("{} <{}>", phrase(name.trim()), config.list_id)
            }
            _ => format!("<{}>", config.list_id),
        };
        Ok(EmailChannel {
            name: name.to_string(),
            from: Mailbox::new(from_name, from_addr),
            reply_to,
            bounce,
            verp,
            list_id,
            unsubscribe_mailto_domain: config.unsubscribe_mailto_domain.clone(),
            message_id_domain: config.message_id_domain(),
            pool: Pool {
                params: ConnectParams {
                    host: config.smtp_host.clone(),
                    port: config.smtp_port,
                    tls: config.tls,
                    tls_parameters,
                    hello: ClientId::default(),
                    credentials,
                    secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
                    step_timeout: Duration::from_secs(config.timeout_secs.max(1)),
                },
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(pool_size),
                disaster_permits: Semaphore::new(config.disaster_connections.max(1) as usize),
                size: pool_size,
            },
            exercise_target: config.exercise_target.clone(),
            clock: system_clock(),
            parsed: Mutex::new(Vec::new()),
        })
    }

    /// The payload read once per announcement, not once per subscriber, with its message
    /// templates: the last few are kept, each with the stored JSON it came from (compared,
    /// so a changed payload is read again).
    fn parsed(
        &self,
        announcement_id: &str,
        raw: &serde_json::Value,
    ) -> Result<Arc<Prepared>, DeliveryError> {
        const KEPT: usize = 8;
        let mut cache = self.parsed.lock().unwrap();
        if let Some((_, _, p)) = cache
            .iter()
            .find(|(id, json, _)| id == announcement_id && json == raw)
        {
            return Ok(p.clone());
        }
        let payload: EmailPayload = serde_json::from_value(raw.clone()).map_err(|e| {
            DeliveryError::permanent(format!("the stored email payload is unreadable: {e}"))
        })?;
        let prepared = Arc::new(Prepared::new(payload));
        if cache.len() >= KEPT {
            cache.remove(0);
        }
        cache.push((announcement_id.to_string(), raw.clone(), prepared.clone()));
        Ok(prepared)
    }

    /// Replaces the clock (the daemon's own, or a test's).
    pub fn with_clock(mut self, clock: Clock) -> EmailChannel {
        self.clock = clock;
        self
    }

    /// The message as lettre builds it: the announcement's fixed headers, then
    /// `copy_headers`, then the two parts under `boundary`. The template is this with marks
    /// for the copy's headers and bodies (see `template.rs`).
    pub(crate) fn lettre_message(
        &self,
        payload: &EmailPayload,
        copy_headers: Vec<HeaderValue>,
        text: Body,
        html: Body,
        boundary: &str,
    ) -> Result<Message, DeliveryError> {
        // The envelope is given, not derived from `To:`: lettre re-parses header mailboxes
        // with its strict parser, which refuses the quoted carrier form. (Each copy's own
        // envelope goes to the SMTP server, not into the message.)
        let envelope = Envelope::new(Some(self.bounce.clone()), vec![self.bounce.clone()])
            .map_err(|e| DeliveryError::permanent(format!("invalid envelope: {e}")))?;
        let mut builder = Message::builder()
            .envelope(envelope)
            .from(self.from.clone())
            .subject(payload.subject.clone())
            .raw_header(header("List-Id", self.list_id.clone()))
            .raw_header(header("Auto-Submitted", "auto-generated".into()));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        for h in copy_headers {
            builder = builder.raw_header(h);
        }
        let part = |content_type: ContentType, body: Body| {
            SinglePart::builder().header(content_type).body(body)
        };
        builder
            .multipart(
                MultiPart::alternative()
                    .boundary(boundary)
                    .singlepart(part(ContentType::TEXT_PLAIN, text))
                    .singlepart(part(ContentType::TEXT_HTML, html)),
            )
            .map_err(|e| DeliveryError::permanent(format!("could not build the message: {e}")))
    }

    /// The template of one announcement's message in one language (`template.rs`).
    fn template(&self, payload: &EmailPayload) -> Result<Template, String> {
        let marks = Marks::new();
        let boundary = uuid::Uuid::new_v4().simple().to_string();
        let pre_encoded =
            |mark: &str| Body::dangerous_pre_encoded(mark.into(), ContentTransferEncoding::Base64);
        let mut skeleton = self
            .lettre_message(
                payload,
                vec![header_named(&marks.header_name, "x".into())],
                pre_encoded(&marks.text),
                pre_encoded(&marks.html),
                &boundary,
            )
            .map_err(|e| e.message)?;
        // lettre adds a `Date:` when none is given; each copy has its own.
        skeleton.headers_mut().remove_raw("Date");
        let skeleton = String::from_utf8(skeleton.formatted())
            .map_err(|_| "the message template is not text".to_string())?;
        Template::new(payload, &skeleton, &marks, boundary)
            .ok_or_else(|| "the message template could not be cut at its marks".to_string())
    }

    /// The header lines of one copy: `To`, `Message-ID`, `Date`, `List-Unsubscribe` and,
    /// for an HTTPS link, `List-Unsubscribe-Post`.
    pub(crate) fn copy_headers(
        &self,
        rcpt: &Address,
        recipient: &Recipient,
        unsubscribe_url: &str,
        announcement_id: &str,
        id: &str,
    ) -> Vec<HeaderValue> {
        let mut list_unsubscribe = format!("<{unsubscribe_url}>");
        let token = &recipient.unsubscribe_token;
        if let Some(domain) = &self.unsubscribe_mailto_domain {
            let token_ok = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b));
            if token_ok {
                list_unsubscribe.push_str(&format!(", <mailto:unsubscribe+{token}@{domain}>"));
            }
        }
        let mut headers = vec![
            // `<addr>` as in CHANNELS.md §4.2: some parsers misread a bare quoted local part.
            header("To", format!("<{rcpt}>")),
            // The announcement's UUID makes it unique beyond this database: delivery ids
            // start again after a reinstall or on a second database with the same domain.
            MessageId::from(format!(
                "<{}.{id}@{}>",
                id_token(announcement_id),
                self.message_id_domain
            ))
            .display(),
            lettre::message::header::Date::new(SystemTime::from((self.clock)())).display(),
            header("List-Unsubscribe", list_unsubscribe),
        ];
        // RFC 8058 one-click needs an HTTPS URI; a plain-HTTP one (a dev setup) still gets
        // the List-Unsubscribe link but must not claim one-click.
        if unsubscribe_url.starts_with("https://") {
            headers.push(header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".into(),
            ));
        }
        headers
    }

    /// One recipient's copy: its envelope and its `DATA` text, from the announcement's
    /// template in the recipient's language.
    pub(crate) fn compose(
        &self,
        prepared: &Prepared,
        recipient: &Recipient,
        announcement_id: &str,
        delivery_id: &str,
    ) -> Result<Composed, DeliveryError> {
        let rcpt = smtp_address(&recipient.address)
            .map_err(|e| DeliveryError::permanent(format!("recipient address refused: {e}")))?;
        // The subscriber's language when the announcement has it; the footer in the same
        // language as the message.
        let (_, template) = prepared.for_lang(&recipient.lang, |p| self.template(p));
        let template = template
            .as_ref()
            .map_err(|e| DeliveryError::permanent(format!("could not build the message: {e}")))?;
        let unsubscribe_url = header_uri(&recipient.unsubscribe_url).ok_or_else(|| {
            DeliveryError::permanent("the recipient's unsubscribe URL is not a valid URL")
        })?;
        let id = id_token(delivery_id);
        let sender = if self.verp && self.bounce.user().len() + 1 + id.len() <= 64 {
            Address::new(format!("{}+{id}", self.bounce.user()), self.bounce.domain())
                .unwrap_or_else(|_| self.bounce.clone())
        } else {
            self.bounce.clone()
        };
        let headers = self.copy_headers(&rcpt, recipient, &unsubscribe_url, announcement_id, &id);
        let data = template.data(headers, &unsubscribe_url);
        Ok(Composed { sender, rcpt, data })
    }

    fn scrub(&self, mut err: DeliveryError) -> DeliveryError {
        for secret in &self.pool.params.secrets {
            if err.message.contains(secret.as_str()) {
                err.message = err.message.replace(secret.as_str(), "**REDACTED**");
            }
        }
        err
    }
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn header_named(name: &str, value: String) -> HeaderValue {
    let name = HeaderName::new_from_ascii(name.to_string()).expect("an ASCII header name");
    HeaderValue::new(name, value)
}

/// One copy ready for the SMTP server.
#[derive(Debug)]
pub(crate) struct Composed {
    pub(crate) sender: Address,
    pub(crate) rcpt: Address,
    /// The message as `DATA` text: dot-stuffed, terminated by `CRLF . CRLF`.
    pub(crate) data: String,
}

impl Composed {
    /// The message itself, as `BDAT` sends it: the `DATA` text without its terminator and
    /// dot-stuffing (a copy from a dot-safe template is a slice of it, not a copy).
    pub(crate) fn content(&self) -> Cow<'_, str> {
        let body = self.data.strip_suffix(".\r\n").unwrap_or(&self.data);
        if body.starts_with('.') || body.contains("\r\n.") {
            let unstuffed = body.strip_prefix('.').unwrap_or(body);
            Cow::Owned(unstuffed.replace("\r\n..", "\r\n."))
        } else {
            Cow::Borrowed(body)
        }
    }

    /// [`Composed::content`] as bytes.
    #[cfg(test)]
    pub(crate) fn message(&self) -> Vec<u8> {
        self.content().into_owned().into_bytes()
    }
}

/// A display name for `List-Id`: non-ASCII words become encoded-words (lettre), ASCII
/// with specials is quoted.
fn phrase(name: &str) -> String {
    let specials = |c: char| "()<>[]:;@\\,.\"".contains(c);
    if name.is_ascii() && name.contains(specials) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        name.to_string()
    }
}

/// A URL fit to sit inside `<…>` in a header: parsed and re-serialized (so no spaces or
/// line breaks), commas escaped (they separate the list).
fn header_uri(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    Some(url.as_str().replace(',', "%2C"))
}

/// The message as DATA content, ending in `CRLF.CRLF`, as one string so it goes out in one
/// write. lettre's `message()` writes the terminator separately; with Nagle's algorithm
/// that small second write waits for the server's delayed ACK (~40 ms on Linux) on every
/// message, which capped a 4-connection pool at about 90 messages a second. (Copies spliced
/// from a template need no stuffing and are terminated there; this is the general rule.)
pub(crate) fn dot_stuffed(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 8);
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if lines.peek().is_none() && line.is_empty() {
            break; // the message already ended with a line break
        }
        // RFC 5321 §4.5.2: a line starting with `.` gets another one.
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

impl Pool {
    async fn connect(&self) -> Result<Conn, DeliveryError> {
        let p = &self.params;
        let steps = async {
            let wrapper = match p.tls {
                TlsMode::Tls => p.tls_parameters.clone(),
                _ => None,
            };
            let mut conn = AsyncSmtpConnection::connect_tokio1(
                (p.host.as_str(), p.port),
                Some(p.step_timeout),
                &p.hello,
                wrapper,
                None,
            )
            .await?;
            if let (TlsMode::Starttls, Some(params)) = (p.tls, &p.tls_parameters) {
                // Fails (a client error → Auth class) when the server does not offer
                // STARTTLS: never fall back to sending the password in clear.
                conn.starttls(params.clone(), &p.hello).await?;
            }
            // lettre keeps only the extensions it uses; ask again for the rest (EHLO may
            // be repeated at any time before a transaction, RFC 5321 §4.1.4).
            let ehlo = conn.command(Ehlo::new(p.hello.clone())).await?;
            let offers = |extension: &str| {
                ehlo.message()
                    .any(|line| line.trim().eq_ignore_ascii_case(extension))
            };
            let pipelining = offers("PIPELINING");
            let chunking = pipelining && offers("CHUNKING");
            if let Some(credentials) = &p.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await?;
            }
            Ok::<_, lettre::transport::smtp::Error>(Conn {
                smtp: conn,
                pipelining,
                chunking,
            })
        };
        match timeout(p.step_timeout, steps).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(lettre_error(Step::Connect, &e)),
            Err(_) => Err(timeout_error(Step::Connect, p.step_timeout.as_secs())),
        }
    }

    /// A parked connection that still answers, or a new one.
    async fn checkout(&self) -> Result<Conn, DeliveryError> {
        loop {
            let parked = self.idle.lock().unwrap().pop();
            let Some(Parked { mut conn, since }) = parked else {
                return self.connect().await;
            };
            let idle_for = since.elapsed();
            if idle_for > MAX_IDLE || conn.smtp.has_broken() {
                continue;
            }
            if idle_for > CHECK_AFTER_IDLE {
                let alive = timeout(self.params.step_timeout, conn.smtp.test_connected()).await;
                if !matches!(alive, Ok(true)) {
                    continue;
                }
            }
            return Ok(conn);
        }
    }

    fn park(&self, conn: Conn) {
        self.idle.lock().unwrap().push(Parked {
            conn,
            since: Instant::now(),
        });
    }

    /// After a refused command: `RSET` so the connection can carry the next message.
    async fn reset(&self, mut conn: Conn) {
        if let Ok(Ok(_)) = timeout(self.params.step_timeout, conn.smtp.command("RSET\r\n")).await {
            self.park(conn);
        }
    }

    /// One transaction: MAIL, RCPT, then `BDAT … LAST` with the message or DATA and the
    /// message. Each step has its own timeout, and the step a failure happened in decides
    /// its class.
    async fn send(&self, copy: Composed, disaster: bool) -> Result<String, DeliveryError> {
        let Composed { sender, rcpt, data } = &copy;
        // A disaster copy takes one of its own permits or a normal one, whichever is free
        // first: normal mail holding every normal connection never delays it.
        let permit = if disaster {
            tokio::select! {
                p = self.disaster_permits.acquire() => p,
                p = self.permits.acquire() => p,
            }
        } else {
            self.permits.acquire().await
        };
        let _permit = permit.map_err(|_| DeliveryError::transient("the SMTP pool is closed"))?;
        let mut conn = self.checkout().await?;
        let secs = self.params.step_timeout.as_secs();

        let mut mail_params = Vec::new();
        if !data.is_ascii()
            && conn
                .smtp
                .server_info()
                .supports_feature(Extension::EightBitMime)
        {
            mail_params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(Some(sender.clone()), mail_params).to_string();
        let rcpt = Rcpt::new(rcpt.clone(), Vec::new()).to_string();
        if conn.chunking {
            return self.chunked(conn, mail, rcpt, &copy.content()).await;
        }
        let steps: [(Step, String); 3] = [
            (Step::Mail, mail),
            (Step::Rcpt, rcpt),
            (Step::Data, Data.to_string()),
        ];
        if conn.pipelining {
            conn = self.pipelined(conn, steps).await?;
        } else {
            for (step, command) in steps {
                match timeout(self.params.step_timeout, conn.smtp.command(command)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        let err = lettre_error(step, &e);
                        // A refusal (not 421, which closes) leaves a usable connection.
                        if e.status().is_some_and(|c| u16::from(c) != 421) {
                            self.reset(conn).await;
                        }
                        return Err(err);
                    }
                    Err(_) => return Err(timeout_error(step, secs)),
                }
            }
        }
        // From here on the server may queue the message at any moment: a failure without
        // a reply is Uncertain.
        match timeout(self.params.step_timeout, conn.smtp.command(data)).await {
            Ok(Ok(response)) => {
                let text = response.message().collect::<Vec<_>>().join(" ");
                self.park(conn);
                Ok(queue_id(&text))
            }
            Ok(Err(e)) => {
                if e.status().is_some_and(|c| u16::from(c) != 421) {
                    // The transaction is over either way; the connection is clean.
                    self.park(conn);
                }
                Err(lettre_error(Step::EndOfData, &e))
            }
            Err(_) => Err(timeout_error(Step::EndOfData, secs)),
        }
    }

    /// MAIL, RCPT, `BDAT <size> LAST` and the message in one write, then the three replies
    /// in order (RFC 3030 with RFC 2920). The message is on its way with the first write, so
    /// a failure without a reply is Uncertain at any step, unless MAIL or RCPT was already
    /// refused (then the server has no recipient to queue it for). A reply is classed by
    /// its step; the first refusal is the error, and the connection is reset and parked
    /// unless the server is closing it (`421`).
    async fn chunked(
        &self,
        mut conn: Conn,
        mail: String,
        rcpt: String,
        content: &str,
    ) -> Result<String, DeliveryError> {
        let secs = self.params.step_timeout.as_secs();
        let mut out = String::with_capacity(mail.len() + rcpt.len() + content.len() + 32);
        out.push_str(&mail);
        out.push_str(&rcpt);
        write!(out, "BDAT {} LAST\r\n", content.len()).expect("writing to a String cannot fail");
        out.push_str(content);
        let mut refusal: Option<DeliveryError> = None;
        for (i, step) in [Step::Mail, Step::Rcpt, Step::Chunk]
            .into_iter()
            .enumerate()
        {
            let reply = if i == 0 {
                timeout(self.params.step_timeout, conn.smtp.command(&out)).await
            } else {
                timeout(self.params.step_timeout, conn.smtp.read_response()).await
            };
            match reply {
                Ok(Ok(response)) if step == Step::Chunk => {
                    // The reply to `BDAT … LAST` is the server's word on the message.
                    let text = response.message().collect::<Vec<_>>().join(" ");
                    self.park(conn);
                    return Ok(queue_id(&text));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.status().is_some() => {
                    let err = refusal.get_or_insert_with(|| lettre_error(step, &e));
                    if e.status().is_some_and(|c| u16::from(c) == 421) {
                        return Err(err.clone());
                    }
                }
                Ok(Err(e)) => return Err(refusal.unwrap_or_else(|| lettre_error(Step::Chunk, &e))),
                Err(_) => return Err(refusal.unwrap_or_else(|| timeout_error(Step::Chunk, secs))),
            }
        }
        self.reset(conn).await;
        Err(refusal.expect("the loop returns unless a step was refused"))
    }

    /// MAIL, RCPT and DATA in one write, then their three replies in order (RFC 2920).
    /// On a refusal every reply owed is still read, so the connection stays in step; the
    /// first refusal is the error, classed by its step, and the connection is reset and
    /// parked (or dropped when it cannot be trusted).
    async fn pipelined(
        &self,
        mut conn: Conn,
        steps: [(Step, String); 3],
    ) -> Result<Conn, DeliveryError> {
        let secs = self.params.step_timeout.as_secs();
        let batch: String = steps.iter().map(|(_, c)| c.as_str()).collect();
        let mut refusal: Option<DeliveryError> = None;
        let mut data_accepted = false;
        for (i, (step, _)) in steps.iter().enumerate() {
            let reply = if i == 0 {
                timeout(self.params.step_timeout, conn.smtp.command(&batch)).await
            } else {
                timeout(self.params.step_timeout, conn.smtp.read_response()).await
            };
            match reply {
                Ok(Ok(_)) => data_accepted = *step == Step::Data,
                // Refused: keep reading the replies still owed.
                Ok(Err(e)) if e.status().is_some_and(|c| u16::from(c) != 421) => {
                    refusal.get_or_insert_with(|| lettre_error(*step, &e));
                }
                // 421, a broken connection or silence: the connection is done.
                Ok(Err(e)) => return Err(refusal.unwrap_or_else(|| lettre_error(*step, &e))),
                Err(_) => return Err(refusal.unwrap_or_else(|| timeout_error(*step, secs))),
            }
        }
        match refusal {
            None => Ok(conn),
            Some(err) => {
                // DATA accepted after a refusal would leave the server waiting for content:
                // such a connection is dropped, never reused.
                if !data_accepted {
                    self.reset(conn).await;
                }
                Err(err)
            }
        }
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError> {
        crate::render::render(announcement, self.exercise_target.as_deref())
    }

    fn audience(&self) -> Audience {
        Audience::EmailSubscribers
    }

    fn audience_for(&self, announcement: &Announcement) -> Audience {
        // A drill with a test address is one message to it, never a copy per subscriber.
        if announcement.exercise && self.exercise_target.is_some() {
            Audience::Fixed
        } else {
            Audience::EmailSubscribers
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            rate_per_second: 20.0,
            burst: 20,
            // Workers, not connections: a worker keeps its slot until its outcome is
            // committed, while its connection goes back to the pool as soon as the server
            // answered. Four per connection keep the connections busy during a commit.
            concurrency: self.pool.size * 4,
        }
    }

    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let prepared = self.parsed(&ctx.announcement_id, &unit.payload)?;
        let payload = &prepared.payload;
        // A drill routed to the test address goes there and nowhere else, whatever
        // recipient the unit names: the address is in the payload.
        let drill_recipient = payload.exercise_to.as_ref().map(|to| Recipient {
            address: to.clone(),
            lang: payload.lang.clone(),
            unsubscribe_url: "https://noroshi.invalid/exercise".into(),
            unsubscribe_token: String::new(),
        });
        let recipient = drill_recipient
            .as_ref()
            .or(unit.recipient.as_ref())
            .ok_or_else(|| {
                DeliveryError::permanent("an email delivery needs a recipient (subscriber)")
            })?;
        let copy = self.compose(&prepared, recipient, &ctx.announcement_id, &ctx.delivery_id)?;
        let queue_id = self
            .pool
            .send(copy, ctx.priority == Priority::Disaster && !ctx.exercise)
            .await
            .map_err(|e| self.scrub(e))?;
        tracing::debug!(delivery_id = %ctx.delivery_id, queue_id = %queue_id, "Email queued by the SMTP server");
        Ok(Receipt {
            remote_id: Some(queue_id),
            already_sent: false,
            note: None,
        })
    }

    // `reconcile` keeps the default (`Ok(None)`): SMTP cannot be asked whether a message
    // was queued. A resend after an Uncertain attempt carries the same Message-ID (built
    // from the announcement and delivery ids), which lets receiving systems and mail clients drop the copy.

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        // A fresh connection, not a pooled one: walks TLS and AUTH like the first send.
        let mut conn = self.pool.connect().await.map_err(|e| self.scrub(e))?;
        let ok = timeout(self.pool.params.step_timeout, conn.smtp.test_connected()).await;
        let _ = timeout(self.pool.params.step_timeout, conn.smtp.quit()).await;
        match ok {
            Ok(true) => Ok(()),
            _ => Err(DeliveryError::transient(
                "healthcheck: NOOP was not answered",
            )),
        }
    }
}
