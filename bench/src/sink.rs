//! A counting SMTP sink on 127.0.0.1: one task per connection, any number of connections at
//! once, tolerant of pipelining (every complete command in the buffer is answered, the
//! answers go out in one write when the client waits), with `CHUNKING` (RFC 3030: `BDAT`)
//! as Postfix has offered since 3.4. It counts completed DATA and `BDAT … LAST` transfers
//! and keeps the unsubscribe tokens of the first few (from `List-Unsubscribe:
//! <…/unsubscribe?t=TOKEN>`), so the disaster bench can POST real one-click unsubscribes.
//! Nothing else of a message is kept, so a million mails cost no memory.
//!
//! Also here: a tarpit, a listener that accepts connections and never says a word, for the
//! memory run (the daemon's sends wait on it while the queue stays full).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

struct Shared {
    count: Arc<AtomicU64>,
    /// Bytes of message data received (headers and body, dot-stuffed as sent).
    bytes: AtomicU64,
    /// When the last DATA completed, in ns after `epoch`.
    last_ns: AtomicU64,
    epoch: Instant,
    tokens: Mutex<Vec<String>>,
    want_tokens: usize,
}

pub struct Sink {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Sink {
    /// Listens on a free loopback port; keeps up to `want_tokens` unsubscribe tokens.
    pub async fn start(want_tokens: usize) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink on loopback");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            count: Arc::new(AtomicU64::new(0)),
            bytes: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            tokens: Mutex::new(Vec::new()),
            want_tokens,
        });
        let accept = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept.clone();
                tokio::spawn(async move {
                    let _ = session(stream, &shared).await;
                });
            }
        });
        Sink { port, shared, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts counting messages and collecting unsubscribe tokens afresh, for a measure that
    /// runs after others on the same sink (its figures and tokens are its daemon's alone).
    pub fn reset(&self) {
        self.shared.count.store(0, Ordering::SeqCst);
        self.shared.tokens.lock().unwrap().clear();
    }

    /// Messages accepted so far.
    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Bytes of message data received so far.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// When the last message so far was accepted (the sink's start before the first).
    pub fn last_accepted(&self) -> Instant {
        self.shared.epoch + Duration::from_nanos(self.shared.last_ns.load(Ordering::SeqCst))
    }

    /// Waits until the sink has accepted `target` messages in all; false after `timeout`.
    pub async fn wait_for(&self, target: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// The counter itself, for a sampler task.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.shared.count.clone()
    }

    /// The unsubscribe tokens seen so far (distinct, in arrival order).
    pub fn tokens(&self) -> Vec<String> {
        self.shared.tokens.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(64 * 1024, read);
    // Answers wait here while more pipelined commands are already in the buffer.
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    out.extend_from_slice(b"220 sink.bench.test ESMTP\r\n");
    let mut line = Vec::with_capacity(1024);
    let mut chunk = Vec::with_capacity(16 * 1024);
    let (mut in_data, mut in_headers) = (false, false);
    loop {
        if read.buffer().is_empty() && !out.is_empty() {
            write.write_all(&out).await?;
            out.clear();
        }
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            shared.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                accepted(shared, &mut out);
            } else if in_headers {
                if line == b"\r\n" || line == b"\n" {
                    in_headers = false;
                } else if shared.want_tokens > 0 {
                    capture_token(&line, shared);
                }
            }
            continue;
        }
        let verb: Vec<u8> = line
            .iter()
            .take_while(|b| !b.is_ascii_whitespace())
            .map(|b| b.to_ascii_uppercase())
            .collect();
        let reply: &[u8] = match verb.as_slice() {
            b"EHLO" => b"250-sink.bench.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            b"MAIL" => {
                in_headers = true;
                b"250 2.0.0 Ok\r\n"
            }
            b"BDAT" => {
                // `BDAT <size> [LAST]`, then exactly `size` octets of the message.
                let text = String::from_utf8_lossy(&line);
                let mut words = text.split_whitespace().skip(1);
                let Some(size) = words.next().and_then(|s| s.parse::<u64>().ok()) else {
                    out.extend_from_slice(b"501 5.5.4 Syntax: BDAT count [LAST]\r\n");
                    write.write_all(&out).await?;
                    return Ok(());
                };
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                chunk.clear();
                (&mut read).take(size).read_to_end(&mut chunk).await?;
                shared.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                for line in chunk.split_inclusive(|&b| b == b'\n') {
                    if !in_headers || shared.want_tokens == 0 {
                        break;
                    }
                    if line == b"\r\n" || line == b"\n" {
                        in_headers = false;
                    } else {
                        capture_token(line, shared);
                    }
                }
                if last {
                    accepted(shared, &mut out);
                } else {
                    out.extend_from_slice(b"250 2.0.0 Ok\r\n");
                }
                continue;
            }
            b"HELO" => b"250 sink.bench.test\r\n",
            b"DATA" => {
                in_data = true;
                in_headers = true;
                b"354 End data with <CR><LF>.<CR><LF>\r\n"
            }
            b"QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                write.write_all(&out).await?;
                return Ok(());
            }
            _ => b"250 2.0.0 Ok\r\n",
        };
        out.extend_from_slice(reply);
    }
}

/// One more message counted, and its reply.
fn accepted(shared: &Shared, out: &mut Vec<u8>) {
    let n = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    let at = shared.epoch.elapsed().as_nanos() as u64;
    shared.last_ns.fetch_max(at, Ordering::SeqCst);
    let _ = write!(Bytes(out), "250 2.0.0 Ok: queued as B{n:010}\r\n");
}

/// `write!` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn capture_token(line: &[u8], shared: &Shared) {
    const NEEDLE: &[u8] = b"/unsubscribe?t=";
    let Some(pos) = line.windows(NEEDLE.len()).position(|w| w == NEEDLE) else {
        return;
    };
    let token: String = line[pos + NEEDLE.len()..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        .map(|&b| b as char)
        .collect();
    if token.is_empty() {
        return;
    }
    let mut tokens = shared.tokens.lock().unwrap();
    if tokens.len() < shared.want_tokens && !tokens.contains(&token) {
        tokens.push(token);
    }
}

/// Accepts connections on a free loopback port and holds them open without a word: an SMTP
/// client waits for the greeting until its own timeout.
pub struct Tarpit {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Tarpit {
    pub async fn start() -> Tarpit {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tarpit on loopback");
        let port = listener.local_addr().expect("local address").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Tarpit { port, task }
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_pipelined_messages_and_the_blasters() {
        let sink = Sink::start(0).await;
        // Two whole transactions in one write, as a pipelining client may send them.
        let mut s = TcpStream::connect(("127.0.0.1", sink.port()))
            .await
            .unwrap();
        let one =
            "MAIL FROM:<a@x.jp>\r\nRCPT TO:<b@x.jp>\r\nDATA\r\nSubject: t\r\n\r\nbody\r\n.\r\n";
        s.write_all(format!("EHLO c\r\n{one}{one}QUIT\r\n").as_bytes())
            .await
            .unwrap();
        let mut answers = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answers)
            .await
            .unwrap();
        assert_eq!(sink.count(), 2, "{answers}");
        assert!(answers.ends_with("221 2.0.0 Bye\r\n"), "{answers}");
        assert_eq!(answers.matches("354 ").count(), 2, "{answers}");

        // `BDAT`: a chunk, then the last one, with a line that would end a DATA transfer.
        let chunks = Sink::start(1).await;
        let mut s = TcpStream::connect(("127.0.0.1", chunks.port()))
            .await
            .unwrap();
        let head = "List-Unsubscribe: <https://x.jp/unsubscribe?t=tok-1>\r\n\r\n";
        let tail = ".\r\nbody\r\n";
        let chunked = format!(
            "EHLO c\r\nMAIL FROM:<a@x.jp>\r\nRCPT TO:<b@x.jp>\r\nBDAT {} \r\n{head}BDAT {} LAST\r\n{tail}QUIT\r\n",
            head.len(),
            tail.len()
        );
        s.write_all(chunked.as_bytes()).await.unwrap();
        let mut answers = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answers)
            .await
            .unwrap();
        assert!(answers.contains("250-CHUNKING\r\n"), "{answers}");
        assert_eq!(chunks.count(), 1, "{answers}");
        assert_eq!(chunks.bytes(), (head.len() + tail.len()) as u64);
        assert_eq!(chunks.tokens(), vec!["tok-1".to_string()]);
        assert!(
            answers.ends_with("queued as B0000000001\r\n221 2.0.0 Bye\r\n"),
            "{answers}"
        );

        let took = crate::blaster::blast(sink.port(), 4, 101, 500)
            .await
            .unwrap();
        assert_eq!(sink.count(), 103);
        assert!(sink.last_accepted().elapsed() <= took);

        // A later measure counts its own messages only.
        sink.reset();
        crate::blaster::blast(sink.port(), 2, 5, 500).await.unwrap();
        assert_eq!(sink.count(), 5);
    }
}
