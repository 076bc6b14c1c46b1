//! A real ESMTP submission server on 127.0.0.1 for tests (CHANNELS.md §4.6).
//!
//! It speaks `EHLO`/`HELO` (advertising `PIPELINING`, `CHUNKING`, `SIZE`, `8BITMIME`,
//! `ENHANCEDSTATUSCODES`, `AUTH PLAIN LOGIN`), `AUTH PLAIN` and `AUTH LOGIN`, `MAIL`, `RCPT`,
//! `DATA` (un-dot-stuffing), `BDAT` (RFC 3030, chunks taken verbatim), `RSET`, `NOOP`,
//! `VRFY` and `QUIT` with Postfix-like replies,
//! and keeps every accepted message raw with its envelope. `STARTTLS` is not offered, so
//! point the adapter at it with `tls = "none"`.
//!
//! Scripted recipients, by local part (the part before `@`):
//! - `bounce-*` → `550 5.1.1` at `RCPT` (unknown user);
//! - `tempfail-*` → `451 4.3.0` at `RCPT`;
//! - `full-*` → `552 5.2.2` at `RCPT` (mailbox full);
//! - `spam-*` → accepted at `RCPT`, `554 5.7.1` after `DATA` or `BDAT … LAST` (policy
//!   rejection);
//! - anything set with [`FakeSmtp::set_rcpt_reply`].
//!
//! Knobs (changeable while it runs): `421` on connect, drop the connection after the end
//! of `DATA` or the last `BDAT` chunk (the message is kept: "queued, but the client never
//! heard"), a delay before
//! the greeting or before the final reply, and counting messages without keeping them
//! (for throughput runs). No knob sleeps unless a test sets a delay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

const MAX_LINE: usize = 4096;

/// How to start a [`FakeSmtp`].
#[derive(Clone, Debug)]
pub struct FakeSmtpOptions {
    /// When set, `MAIL` needs a successful `AUTH` with exactly these credentials; wrong
    /// ones get `535 5.7.8`. When unset, any `AUTH` succeeds and none is required.
    pub credentials: Option<(String, String)>,
    /// The largest message accepted (advertised as `SIZE`); larger → `552 5.3.4`.
    pub max_size: usize,
    /// Count accepted messages without keeping them (throughput runs).
    pub count_only: bool,
    /// The host name in the greeting and `EHLO` reply.
    pub hostname: String,
    /// Advertise `PIPELINING` (RFC 2920). Without it a command that arrives before the
    /// reply to the previous one is refused, `503 5.5.0`, as Postfix's
    /// `reject_unauth_pipelining` does.
    pub pipelining: bool,
    /// Advertise `CHUNKING` (RFC 3030) and accept `BDAT`, as Postfix does since 3.4.
    pub chunking: bool,
}

impl Default for FakeSmtpOptions {
    fn default() -> Self {
        FakeSmtpOptions {
            credentials: None,
            max_size: 10 * 1024 * 1024,
            count_only: false,
            hostname: "smtp.fake.test".into(),
            pipelining: true,
            chunking: true,
        }
    }
}

/// One accepted message with its envelope.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// The `MAIL FROM` address (without `<>`).
    pub mail_from: String,
    /// The accepted `RCPT TO` addresses.
    pub rcpt_to: Vec<String>,
    /// The message as transmitted, after un-dot-stuffing, CRLFs kept as sent.
    pub raw: Vec<u8>,
    /// The id in the `250 2.0.0 Ok: queued as ID` reply.
    pub queue_id: String,
    /// Which TCP connection (1-based, in accept order) carried it.
    pub connection: usize,
}

impl ReceivedMessage {
    /// `raw` as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    options: Mutex<Option<FakeSmtpOptions>>,
    messages: Mutex<Vec<ReceivedMessage>>,
    accepted: AtomicUsize,
    connections: AtomicUsize,
    auth_failures: AtomicUsize,
    /// Commands that arrived with the next one already behind them (pipelined).
    pipelined: AtomicUsize,
    /// Messages that arrived by `BDAT` rather than `DATA`.
    chunked: AtomicUsize,
    next_id: AtomicU64,
    reject_connections: AtomicBool,
    drop_after_data: AtomicBool,
    greeting_delay_ms: AtomicU64,
    data_delay_ms: AtomicU64,
    rcpt_replies: Mutex<HashMap<String, String>>,
    notify: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A running fake SMTP server. Stops (and drops its connections) when dropped.
pub struct FakeSmtp {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeSmtp {
    /// Starts listening on 127.0.0.1 on a free port.
    pub async fn start(options: FakeSmtpOptions) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake SMTP server");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        *shared.options.lock().unwrap() = Some(options);
        let accept_shared = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let n = accept_shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let conn_shared = Arc::clone(&accept_shared);
                let task = tokio::spawn(async move {
                    let _ = Session::new(conn_shared, n).run(stream).await;
                });
                accept_shared
                    .tasks
                    .lock()
                    .unwrap()
                    .push(task.abort_handle());
            }
        });
        shared.tasks.lock().unwrap().push(accept.abort_handle());
        FakeSmtp { addr, shared }
    }

    /// The port, for `smtp_port`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, in order (empty with `count_only`).
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// How many messages were accepted (`250` after `DATA`, or stored before a drop).
    pub fn message_count(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were accepted; `false` on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.message_count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.message_count() >= n;
            }
        }
    }

    /// TCP connections accepted so far (for connection-reuse assertions).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Commands sent before the reply to the previous one (RFC 2920 pipelining); `BDAT`
    /// is not counted, its chunk always follows it.
    pub fn pipelined_commands(&self) -> usize {
        self.shared.pipelined.load(Ordering::SeqCst)
    }

    /// Messages accepted or refused at the end of a `BDAT … LAST` (RFC 3030) rather than
    /// of `DATA`.
    pub fn chunked_messages(&self) -> usize {
        self.shared.chunked.load(Ordering::SeqCst)
    }

    /// `AUTH` attempts refused with `535`.
    pub fn auth_failures(&self) -> usize {
        self.shared.auth_failures.load(Ordering::SeqCst)
    }

    /// Answer every new connection with `421 4.3.2` and close it.
    pub fn reject_connections(&self, on: bool) {
        self.shared.reject_connections.store(on, Ordering::SeqCst);
    }

    /// Read each whole message, keep it, then close the connection without a reply.
    pub fn drop_after_data(&self, on: bool) {
        self.shared.drop_after_data.store(on, Ordering::SeqCst);
    }

    /// Wait this long before the `220` greeting.
    pub fn set_greeting_delay(&self, delay: Duration) {
        self.shared
            .greeting_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Wait this long before the reply to the end of `DATA` (the message is kept first).
    pub fn set_data_delay(&self, delay: Duration) {
        self.shared
            .data_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer `RCPT TO:<address>` with `reply` (a full line without CRLF, e.g.
    /// `552 5.2.2 Mailbox full`). Matching ignores case.
    pub fn set_rcpt_reply(&self, address: &str, reply: &str) {
        self.shared
            .rcpt_replies
            .lock()
            .unwrap()
            .insert(address.to_ascii_lowercase(), reply.to_string());
    }

    /// Forget the messages received so far (counters of connections stay).
    pub fn clear(&self) {
        self.shared.messages.lock().unwrap().clear();
        self.shared.accepted.store(0, Ordering::SeqCst);
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    options: FakeSmtpOptions,
    connection: usize,
    greeted: bool,
    authenticated: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    /// `BDAT` chunks of the message in progress.
    chunks: Vec<u8>,
}

enum Next {
    Continue,
    Close,
}

impl Session {
    fn new(shared: Arc<Shared>, connection: usize) -> Session {
        let options = shared.options.lock().unwrap().clone().unwrap_or_default();
        Session {
            shared,
            options,
            connection,
            greeted: false,
            authenticated: false,
            mail_from: None,
            rcpt_to: Vec::new(),
            chunks: Vec::new(),
        }
    }

    async fn run(mut self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        if self.shared.reject_connections.load(Ordering::SeqCst) {
            write
                .write_all(b"421 4.3.2 Service not available, closing transmission channel\r\n")
                .await?;
            return Ok(());
        }
        let delay = self.shared.greeting_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let greeting = format!("220 {} ESMTP Noroshi fake\r\n", self.options.hostname);
        write.write_all(greeting.as_bytes()).await?;
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if read_line(&mut read, &mut line).await? == 0 {
                return Ok(());
            }
            if line.len() > MAX_LINE {
                write
                    .write_all(b"500 5.5.2 Error: line too long\r\n")
                    .await?;
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']).to_string();
            let (verb, arg) = match text.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                None => (text.to_ascii_uppercase(), String::new()),
            };
            // More commands already waiting behind this one: the client pipelined. (A
            // `BDAT` chunk behind its command is the command's own data.)
            let chunk_command = verb == "BDAT" && self.options.chunking;
            if !read.buffer().is_empty() && !chunk_command {
                self.shared.pipelined.fetch_add(1, Ordering::SeqCst);
                if !self.options.pipelining {
                    write
                        .write_all(b"503 5.5.0 Error: improper use of SMTP command pipelining\r\n")
                        .await?;
                    continue;
                }
            }
            let next = match verb.as_str() {
                "EHLO" | "HELO" => {
                    self.greeted = true;
                    self.reset();
                    let reply = if verb == "EHLO" {
                        format!(
                            "250-{}\r\n{}{}250-SIZE {}\r\n250-8BITMIME\r\n\
                             250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n",
                            self.options.hostname,
                            if self.options.pipelining {
                                "250-PIPELINING\r\n"
                            } else {
                                ""
                            },
                            if self.options.chunking {
                                "250-CHUNKING\r\n"
                            } else {
                                ""
                            },
                            self.options.max_size
                        )
                    } else {
                        format!("250 {}\r\n", self.options.hostname)
                    };
                    write.write_all(reply.as_bytes()).await?;
                    Next::Continue
                }
                "AUTH" => {
                    self.auth(&arg, &mut read, &mut write).await?;
                    Next::Continue
                }
                "MAIL" => {
                    let reply = self.mail(&arg);
                    write.write_all(reply.as_bytes()).await?;
                    Next::Continue
                }
                "RCPT" => {
                    let reply = self.rcpt(&arg);
                    write.write_all(reply.as_bytes()).await?;
                    Next::Continue
                }
                "DATA" => self.data(&mut read, &mut write).await?,
                "BDAT" if chunk_command => self.bdat(&arg, &mut read, &mut write).await?,
                "RSET" => {
                    self.reset();
                    write.write_all(b"250 2.0.0 Ok\r\n").await?;
                    Next::Continue
                }
                "NOOP" => {
                    write.write_all(b"250 2.0.0 Ok\r\n").await?;
                    Next::Continue
                }
                "VRFY" => {
                    write
                        .write_all(b"252 2.0.0 Cannot VRFY user, but will accept message\r\n")
                        .await?;
                    Next::Continue
                }
                "QUIT" => {
                    write.write_all(b"221 2.0.0 Bye\r\n").await?;
                    Next::Close
                }
                _ => {
                    write
                        .write_all(b"502 5.5.2 Error: command not recognized\r\n")
                        .await?;
                    Next::Continue
                }
            };
            if let Next::Close = next {
                return Ok(());
            }
        }
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
        self.chunks.clear();
    }

    async fn auth<R, W>(&mut self, arg: &str, read: &mut R, write: &mut W) -> std::io::Result<()>
    where
        R: tokio::io::AsyncBufRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        if !self.greeted {
            return write
                .write_all(b"503 5.5.1 Error: send HELO/EHLO first\r\n")
                .await;
        }
        if self.authenticated {
            return write
                .write_all(b"503 5.5.1 Error: already authenticated\r\n")
                .await;
        }
        if self.mail_from.is_some() {
            return write
                .write_all(b"503 5.5.1 Error: MAIL transaction in progress\r\n")
                .await;
        }
        let mut parts = arg.split_whitespace();
        let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str| {
            b64.decode(s.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let (user, pass) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) if i != "=" => Some(i),
                    _ => ask("", read, write).await?,
                };
                let Some(response) = response else {
                    return write
                        .write_all(b"501 5.7.0 Authentication aborted\r\n")
                        .await;
                };
                let Some(decoded) = decode(&response) else {
                    return write
                        .write_all(b"501 5.5.2 Cannot decode response\r\n")
                        .await;
                };
                let fields: Vec<&str> = decoded.split('\0').collect();
                if fields.len() != 3 {
                    return write
                        .write_all(
                            b"535 5.7.8 Error: authentication failed: malformed PLAIN response\r\n",
                        )
                        .await;
                }
                (fields[1].to_string(), fields[2].to_string())
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => Some(i),
                    None => ask("VXNlcm5hbWU6", read, write).await?,
                };
                let pass = match user {
                    Some(_) => ask("UGFzc3dvcmQ6", read, write).await?,
                    None => None,
                };
                let (Some(user), Some(pass)) = (user, pass) else {
                    return write
                        .write_all(b"501 5.7.0 Authentication aborted\r\n")
                        .await;
                };
                let (Some(user), Some(pass)) = (decode(&user), decode(&pass)) else {
                    return write
                        .write_all(b"501 5.5.2 Cannot decode response\r\n")
                        .await;
                };
                (user, pass)
            }
            _ => {
                return write
                    .write_all(b"504 5.5.4 Unrecognized authentication type\r\n")
                    .await
            }
        };
        let ok = match &self.options.credentials {
            Some((u, p)) => *u == user && *p == pass,
            None => true,
        };
        if ok {
            self.authenticated = true;
            write
                .write_all(b"235 2.7.0 Authentication successful\r\n")
                .await
        } else {
            self.shared.auth_failures.fetch_add(1, Ordering::SeqCst);
            write
                .write_all(b"535 5.7.8 Error: authentication failed: authentication failure\r\n")
                .await
        }
    }

    fn mail(&mut self, arg: &str) -> String {
        if !self.greeted {
            return "503 5.5.1 Error: send HELO/EHLO first\r\n".into();
        }
        if self.options.credentials.is_some() && !self.authenticated {
            return "530 5.7.0 Authentication required\r\n".into();
        }
        if self.mail_from.is_some() {
            return "503 5.5.1 Error: nested MAIL command\r\n".into();
        }
        let Some(rest) = strip_prefix_ci(arg, "FROM:") else {
            return "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into();
        };
        let Some((address, params)) = path(rest) else {
            return "501 5.1.7 Bad sender address syntax\r\n".into();
        };
        for param in params.split_whitespace() {
            if let Some(size) = strip_prefix_ci(param, "SIZE=") {
                if size
                    .parse::<usize>()
                    .is_ok_and(|s| s > self.options.max_size)
                {
                    return "552 5.3.4 Message size exceeds fixed limit\r\n".into();
                }
            }
        }
        self.mail_from = Some(address);
        "250 2.1.0 Ok\r\n".into()
    }

    fn rcpt(&mut self, arg: &str) -> String {
        if self.mail_from.is_none() {
            return "503 5.5.1 Error: need MAIL command\r\n".into();
        }
        let Some(rest) = strip_prefix_ci(arg, "TO:") else {
            return "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into();
        };
        let Some((address, _)) = path(rest) else {
            return "501 5.1.3 Bad recipient address syntax\r\n".into();
        };
        if address.is_empty() || !address.contains('@') {
            return "501 5.1.3 Bad recipient address syntax\r\n".into();
        }
        if self.rcpt_to.len() >= 1000 {
            return "452 4.5.3 Error: too many recipients\r\n".into();
        }
        if let Some(reply) = self
            .shared
            .rcpt_replies
            .lock()
            .unwrap()
            .get(&address.to_ascii_lowercase())
        {
            let accepted = reply.starts_with('2');
            let reply = format!("{reply}\r\n");
            if accepted {
                self.rcpt_to.push(address);
            }
            return reply;
        }
        let local = address
            .rsplit_once('@')
            .map_or("", |(l, _)| l)
            .trim_matches('"');
        let local = local.to_ascii_lowercase();
        if local.starts_with("bounce-") {
            format!("550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table\r\n")
        } else if local.starts_with("tempfail-") {
            format!("451 4.3.0 <{address}>: Temporary lookup failure\r\n")
        } else if local.starts_with("full-") {
            format!("552 5.2.2 <{address}>: Mailbox full\r\n")
        } else {
            self.rcpt_to.push(address);
            "250 2.1.5 Ok\r\n".into()
        }
    }

    async fn data<R, W>(&mut self, read: &mut R, write: &mut W) -> std::io::Result<Next>
    where
        R: tokio::io::AsyncBufRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        if self.mail_from.is_none() {
            write
                .write_all(b"503 5.5.1 Error: need MAIL command\r\n")
                .await?;
            return Ok(Next::Continue);
        }
        if self.rcpt_to.is_empty() {
            write
                .write_all(b"554 5.5.1 Error: no valid recipients\r\n")
                .await?;
            return Ok(Next::Continue);
        }
        write
            .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            .await?;
        let mut raw = Vec::with_capacity(8 * 1024);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            if read_line(read, &mut line).await? == 0 {
                // The client went away mid-message: nothing is queued.
                return Ok(Next::Close);
            }
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            // RFC 5321 §4.5.2: a leading dot was doubled by the client.
            let content = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line[..]
            };
            if raw.len() <= self.options.max_size {
                raw.extend_from_slice(content);
            }
        }
        self.finish(raw, write).await
    }

    /// `BDAT <size> [LAST]` (RFC 3030): exactly `size` octets follow the command line and
    /// are taken as they are (no dot-stuffing); the reply to the `LAST` chunk is the
    /// message's, as after `DATA`. A chunk without a transaction is read and refused, so
    /// the session stays in step.
    async fn bdat<R, W>(&mut self, arg: &str, read: &mut R, write: &mut W) -> std::io::Result<Next>
    where
        R: tokio::io::AsyncBufRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut words = arg.split_whitespace();
        let size = words.next().and_then(|s| s.parse::<u64>().ok());
        let last = words.next().map(|w| w.eq_ignore_ascii_case("LAST"));
        let (Some(size), Some(true) | None, None) = (size, last, words.next()) else {
            // The chunk's length is unknown: the session cannot stay in step.
            write
                .write_all(b"501 5.5.4 Syntax: BDAT count [LAST]\r\n")
                .await?;
            return Ok(Next::Close);
        };
        let mut chunk = Vec::new();
        (&mut *read).take(size).read_to_end(&mut chunk).await?;
        if (chunk.len() as u64) < size {
            // The client went away mid-chunk: nothing is queued.
            return Ok(Next::Close);
        }
        let refusal: &[u8] = if self.mail_from.is_none() {
            b"503 5.5.1 Error: need MAIL command\r\n"
        } else if self.rcpt_to.is_empty() {
            b"554 5.5.1 Error: no valid recipients\r\n"
        } else {
            b""
        };
        if !refusal.is_empty() {
            self.chunks.clear();
            write.write_all(refusal).await?;
            return Ok(Next::Continue);
        }
        if self.chunks.len() <= self.options.max_size {
            self.chunks.extend_from_slice(&chunk);
        }
        if last.is_none() {
            let reply = format!("250 2.0.0 Ok: {size} octets received\r\n");
            write.write_all(reply.as_bytes()).await?;
            return Ok(Next::Continue);
        }
        self.shared.chunked.fetch_add(1, Ordering::SeqCst);
        let raw = std::mem::take(&mut self.chunks);
        self.finish(raw, write).await
    }

    /// The end of a message (`.` after `DATA`, or the last `BDAT` chunk): size and policy
    /// checks, then kept and answered.
    async fn finish<W>(&mut self, raw: Vec<u8>, write: &mut W) -> std::io::Result<Next>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        if raw.len() > self.options.max_size {
            write
                .write_all(b"552 5.3.4 Error: message file too big\r\n")
                .await?;
            return Ok(Next::Continue);
        }
        let policy = rcpt_to.iter().any(|r| {
            r.trim_matches('"')
                .to_ascii_lowercase()
                .starts_with("spam-")
        });
        if policy {
            write
                .write_all(b"554 5.7.1 Message rejected: looks like spam\r\n")
                .await?;
            return Ok(Next::Continue);
        }
        let n = self.shared.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let queue_id = format!("4F{n:010X}");
        if !self.options.count_only {
            self.shared.messages.lock().unwrap().push(ReceivedMessage {
                mail_from,
                rcpt_to,
                raw,
                queue_id: queue_id.clone(),
                connection: self.connection,
            });
        }
        self.shared.accepted.fetch_add(1, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        if self.shared.drop_after_data.load(Ordering::SeqCst) {
            return Ok(Next::Close);
        }
        let delay = self.shared.data_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        write
            .write_all(format!("250 2.0.0 Ok: queued as {queue_id}\r\n").as_bytes())
            .await?;
        Ok(Next::Continue)
    }
}

/// A `334` challenge and the client's answer; `None` when it cancels with `*`.
async fn ask<R, W>(prompt: &str, read: &mut R, write: &mut W) -> std::io::Result<Option<String>>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    write
        .write_all(format!("334 {prompt}\r\n").as_bytes())
        .await?;
    let mut line = Vec::new();
    read_line(read, &mut line).await?;
    let answer = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    Ok((answer != "*").then_some(answer))
}

/// One line including its `\n`, bounded so a client cannot exhaust memory.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut limited = (&mut *read).take(1 << 20);
    limited.read_until(b'\n', line).await
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `<address> params` → (address, params).
fn path(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let rest = s.strip_prefix('<')?;
    // A quoted local part may contain `>`; find the closing bracket after any quotes.
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => return Some((rest[..i].to_string(), rest[i + 1..].trim())),
            _ => {}
        }
    }
    None
}
