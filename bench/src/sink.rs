//! A counting SMTP sink on 127.0.0.1: accepts every message, counts it, and keeps the
//! unsubscribe tokens of the first few (from `List-Unsubscribe: <…/unsubscribe?t=TOKEN>`),
//! so the bench can POST real one-click unsubscribes. Nothing else of a message is kept, so
//! 100,000 mails cost no memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

struct Shared {
    count: Arc<AtomicU64>,
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

    /// Messages accepted so far.
    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::SeqCst)
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
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink.bench.test ESMTP\r\n").await?;
    let mut line = Vec::with_capacity(1024);
    let (mut in_data, mut in_headers) = (false, false);
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                let n = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
                write
                    .write_all(format!("250 2.0.0 Ok: queued as B{n:010}\r\n").as_bytes())
                    .await?;
            } else if in_headers {
                if line == b"\r\n" || line == b"\n" {
                    in_headers = false;
                } else {
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
            b"EHLO" => b"250-sink.bench.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            b"HELO" => b"250 sink.bench.test\r\n",
            b"DATA" => {
                in_data = true;
                in_headers = true;
                b"354 End data with <CR><LF>.<CR><LF>\r\n"
            }
            b"QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 2.0.0 Ok\r\n",
        };
        write.write_all(reply).await?;
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
