//! A small SMTP client that measures the sink's own ceiling: `connections` sessions at once,
//! each sending its share of `messages` the way the daemon's SMTP client does with a server
//! that offers `PIPELINING` and `CHUNKING` (EHLO once, then per message `MAIL`, `RCPT`,
//! `BDAT <size> LAST` and the message in one write, and their three replies).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A message of about `size` bytes (headers, a blank line, ASCII body lines).
pub fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: info@city.example.jp\r\nTo: r0@example.jp\r\n\
        Subject: =?UTF-8?B?5bm05pyr5bm05aeL44Gu44GU44G/5Y+O6ZuG44Gr44Gk44GE44Gm?=\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    while m.len() < size {
        m.extend_from_slice(
            b"MTLmnIgzMeaXpeOBi+OCiTHmnIgz5pel44G+44Gn44CB44GU44G/44Gu5Y+O6ZuG44Gv44GK5LyR\r\n",
        );
    }
    m
}

/// Sends `messages` messages over `connections` sessions; the time from the first connect
/// to the last answer.
pub async fn blast(
    port: u16,
    connections: usize,
    messages: usize,
    size: usize,
) -> Result<Duration> {
    let body = std::sync::Arc::new(message(size));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for k in 0..connections {
        let share = messages / connections + usize::from(k < messages % connections);
        let body = body.clone();
        tasks.push(tokio::spawn(
            async move { session(port, share, &body).await },
        ));
    }
    for t in tasks {
        t.await.context("a blaster session panicked")??;
    }
    Ok(started.elapsed())
}

async fn session(port: u16, messages: usize, body: &[u8]) -> Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    expect(&mut read, &mut line, b"220").await?;
    write.write_all(b"EHLO blaster.bench.test\r\n").await?;
    expect(&mut read, &mut line, b"250").await?;
    let mut out = Vec::with_capacity(body.len() + 128);
    for i in 0..messages {
        out.clear();
        out.extend_from_slice(
            format!(
                "MAIL FROM:<info@city.example.jp>\r\nRCPT TO:<r{i}@example.jp>\r\nBDAT {} LAST\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        write.write_all(&out).await?;
        for _ in 0..3 {
            expect(&mut read, &mut line, b"250").await?;
        }
    }
    write.write_all(b"QUIT\r\n").await?;
    expect(&mut read, &mut line, b"221").await?;
    Ok(())
}

/// Reads one reply (all its lines) and checks its code.
async fn expect<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    line: &mut Vec<u8>,
    code: &[u8],
) -> Result<()> {
    loop {
        line.clear();
        if read.read_until(b'\n', line).await? == 0 {
            bail!("the sink closed the connection");
        }
        if !line.starts_with(code) {
            bail!(
                "expected {}, got {:?}",
                String::from_utf8_lossy(code),
                String::from_utf8_lossy(line)
            );
        }
        if line.get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
