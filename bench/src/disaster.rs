//! `noroshi-bench disaster`: the disaster-latency benchmark (issue 12, "Done when").
//!
//! It starts the LINE, X and Facebook fakes and a counting SMTP sink on 127.0.0.1 in this
//! process, writes a configuration, and runs the release `noroshi serve` binary on a fresh
//! SQLite file or a fresh PostgreSQL database. It imports the subscribers, submits one
//! normal announcement to email (the fan-out), and while that fan-out sends it runs
//! 20,000-row subscriber imports back to back, paces a few hundred one-click unsubscribe
//! POSTs (tokens taken from the `List-Unsubscribe` headers of the mails the sink received),
//! and submits disaster alerts in bursts to `["line", "x", "facebook"]`.
//!
//! Latency of one alert on one platform = the moment that platform's fake received the post
//! (`RecordedRequest::at`, the fake's own record) − the moment just before the bench sent
//! `POST /api/v1/announcements`. Both are `Instant`s of this process. p50 and p99 are
//! nearest-rank percentiles. Exit status 1 when an alert was refused or never arrived.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde_json::json;

use crate::daemon::{self, start_daemon, Daemon, Pacing, Spec, Tokens};
use crate::fakes::{Fakes, PLATFORMS};
use crate::load::{self, Load, LoadPlan};
use crate::report::{self, Arrivals, PlatformLatency, Sent};
use crate::sink::Sink;

/// LINE allows 60 broadcast requests an hour (CHANNELS.md §1.4).
const LINE_BROADCASTS_PER_HOUR: usize = 60;
/// The load runs this long before the first alert.
const LEAD: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LineMode {
    /// Every friend, one request per alert (LINE: 60 requests an hour).
    Broadcast,
    /// One user id (LINE: 2,000 requests a second).
    Multicast,
}

/// How the alerts are submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `POST /api/v1/announcements` with a JSON body, `priority: "disaster"`.
    Json,
    /// `POST /api/v1/cap` with a CAP 1.2 alert (`[cap] channels` = the three platforms).
    Cap,
}

/// Disaster latency (request sent → each of the LINE, X and Facebook fakes received it)
/// while an email fan-out sends, subscriber imports run and unsubscribe POSTs arrive.
#[derive(clap::Args, Debug, Clone)]
pub struct DisasterArgs {
    /// The daemon binary [default: $CARGO_TARGET_DIR/release/noroshi, else
    /// target/release/noroshi of this workspace].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Run on PostgreSQL: the URL of a server on loopback (e.g.
    /// postgres://postgres@127.0.0.1:5432/test). A fresh database `noroshi_bench_<uuid>` is
    /// created there and dropped afterwards. Without it: a fresh SQLite file.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Email subscribers imported before the fan-out.
    #[arg(long, default_value_t = 100_000)]
    pub subscribers: usize,
    /// Disaster alerts (at least 50 for the issue's figure).
    #[arg(long, default_value_t = 50)]
    pub alerts: usize,
    /// Alerts per burst.
    #[arg(long, default_value_t = 5)]
    pub burst: usize,
    /// Between two alerts of one burst, in ms.
    #[arg(long, default_value_t = 100)]
    pub burst_gap_ms: u64,
    /// Between the last alert of a burst and the first of the next, in ms.
    #[arg(long, default_value_t = 1000)]
    pub pause_ms: u64,
    /// Rows per subscriber import (the initial import is cut into files of this size too).
    #[arg(long, default_value_t = 20_000)]
    pub import_rows: usize,
    /// Pause between two imports, in ms (0: back to back).
    #[arg(long, default_value_t = 0)]
    pub import_pause_ms: u64,
    /// One-click unsubscribe POSTs, spread over the alert phase.
    #[arg(long, default_value_t = 500)]
    pub unsubscribes: usize,
    /// Loopback source addresses the unsubscribe POSTs come from (127.0.0.2 upwards; the
    /// daemon limits them per client address, 20 a minute by default) [default: one per 10
    /// POSTs]; 0: all from the default address.
    #[arg(long)]
    pub unsubscribe_sources: Option<u8>,
    /// The alerts start once the sink has received this many mails of the fan-out.
    #[arg(long, default_value_t = 1000)]
    pub start_after_emails: u64,
    /// How the LINE channel sends.
    #[arg(long, value_enum, default_value = "broadcast")]
    pub line_mode: LineMode,
    /// How the alerts are submitted: JSON to the API, or CAP 1.2 XML to `/api/v1/cap`.
    #[arg(long, value_enum, default_value = "json")]
    pub via: Via,
    /// Keep the adapters' default X and Facebook pacing (X one post per 9 s, Facebook one
    /// per 2 s, each after a small burst): beyond a dozen alerts they are held back. Without
    /// it, both get a burst that covers the alerts, within the platforms' published limits.
    #[arg(long)]
    pub default_pacing: bool,
    /// The daemon's `[log] level`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Give up on alerts that have not arrived this long after the last one was sent.
    #[arg(long, default_value_t = 120)]
    pub arrival_timeout_secs: u64,
    /// Also print every alert's latency on each platform.
    #[arg(long)]
    pub per_alert: bool,
    /// Keep the temporary directory (configuration, daemon log, SQLite file).
    #[arg(long)]
    pub keep: bool,
    /// Run the daemon on this CPU only (`taskset -c CPU`); scripts/perf/bench passes 0.
    #[arg(long)]
    pub daemon_cpu: Option<usize>,
}

/// What one disaster run measured: whether every alert arrived, and the latency per platform.
pub struct Outcome {
    pub ok: bool,
    pub latency: Vec<PlatformLatency>,
}

/// Runs the disaster benchmark once, on the backend `args` name.
pub async fn run(args: &DisasterArgs, fakes: &Fakes, sink: &Sink) -> Result<Outcome> {
    if args.alerts == 0 || args.burst == 0 || args.import_rows == 0 || args.subscribers == 0 {
        bail!("--alerts, --burst, --import-rows and --subscribers must be at least 1");
    }
    if args.line_mode == LineMode::Broadcast && args.alerts > LINE_BROADCASTS_PER_HOUR {
        bail!(
            "LINE allows {LINE_BROADCASTS_PER_HOUR} broadcasts an hour: use at most that many \
             alerts, or --line-mode multicast"
        );
    }
    let bin = daemon::daemon_bin(args.bin.as_deref())?;
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let tokens = Tokens {
        admin: format!("bench-admin-{}", uuid::Uuid::new_v4().simple()),
        disaster: format!("bench-bousai-{}", uuid::Uuid::new_v4().simple()),
    };
    let pacing = Pacing::for_run(args);
    println!(
        "noroshi-bench on {backend}: {} subscribers, {} disaster alerts to line, x, facebook \
         ({} bursts of up to {}, {} ms apart, {} ms between bursts); LINE {}",
        args.subscribers,
        args.alerts,
        args.alerts.div_ceil(args.burst),
        args.burst,
        args.burst_gap_ms,
        args.pause_ms,
        match args.line_mode {
            LineMode::Broadcast => "broadcast",
            LineMode::Multicast => "multicast",
        },
    );
    println!("daemon: {}", daemon::describe(&bin));
    println!("set by the bench: {}", pacing.describe());
    println!(
        "machine: CPUs {} online, load average {} (other processes share them)",
        crate::procfs::cpus_online(),
        load_average()
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()?;
    let spec = Spec {
        bin: bin.clone(),
        postgres: args.postgres.as_deref(),
        log_level: &args.log_level,
        cpu: args.daemon_cpu,
        smtp_port: sink.port(),
        smtp_timeout_secs: 30,
        social: Some((fakes, args.line_mode, &pacing)),
        extra: String::new(),
    };
    let mut daemon = start_daemon(&spec, &tokens, &http).await?;
    let result = measure(args, fakes, sink, &daemon, &tokens, &http).await;
    let alive = daemon.alive();
    if args.keep || result.is_err() || !alive {
        // Keep the evidence (configuration, daemon log, SQLite file).
        daemon.dir.disable_cleanup(true);
        eprintln!("noroshi-bench: kept {}", daemon.dir.path().display());
    }
    daemon.stop().await;
    let mut outcome = result?;
    if !alive {
        eprintln!("noroshi-bench: the daemon died during the run");
        outcome.ok = false;
    }
    Ok(outcome)
}

async fn measure(
    args: &DisasterArgs,
    fakes: &Fakes,
    sink: &Sink,
    daemon: &Daemon,
    tokens: &Tokens,
    http: &reqwest::Client,
) -> Result<Outcome> {
    let base = daemon.base.clone();
    for line in daemon::effective_pacing(http, &base, &tokens.admin).await? {
        println!("  {line}");
    }
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // 1. The subscribers, in files of `import_rows` rows.
    let started = Instant::now();
    let mut done = 0;
    while done < args.subscribers {
        let n = args.import_rows.min(args.subscribers - done);
        let body = load::csv("r", done, n);
        let status = load::import(http, &base, &tokens.admin, body).await?;
        if status != 200 {
            bail!("importing subscribers {done}..{}: HTTP {status}", done + n);
        }
        done += n;
    }
    println!(
        "setup: {} subscribers imported in {:.1} s",
        args.subscribers,
        started.elapsed().as_secs_f64()
    );

    // The alerts' own client, its connection opened before any clock starts.
    let alert_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    alert_http.get(format!("{base}/readyz")).send().await?;

    // 2. The fan-out: one normal announcement to every subscriber. The sink counts this
    //    daemon's mails only (in `noroshi-bench all` it served the measures before).
    sink.reset();
    let r = http
        .post(format!("{base}/api/v1/announcements"))
        .bearer_auth(&tokens.admin)
        .json(&json!({
            "title": "年末年始のごみ収集について",
            "body": "12月31日から1月3日まで、ごみの収集はお休みです。\n\n資源物は1月4日から通常どおり収集します。",
            "channels": ["email"],
        }))
        .send()
        .await?;
    let fanout_accepted = Instant::now();
    if r.status().as_u16() != 202 {
        bail!(
            "the fan-out announcement got HTTP {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while sink.count() < args.start_after_emails {
        if Instant::now() > deadline {
            bail!(
                "the fan-out did not reach {} mails within 300 s (the sink has {})",
                args.start_after_emails,
                sink.count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "fan-out: {} mails received {:.1} s after the announcement was accepted; the load starts",
        sink.count(),
        fanout_accepted.elapsed().as_secs_f64()
    );

    // 3. The load. Unsubscribe tokens come from the mails received; should there be too
    //    few, random ones make up the number (a 404 still takes the same path).
    let mut unsubscribe_tokens = sink.tokens();
    unsubscribe_tokens.truncate(args.unsubscribes);
    let real_tokens = unsubscribe_tokens.len();
    while unsubscribe_tokens.len() < args.unsubscribes {
        unsubscribe_tokens.push(uuid::Uuid::new_v4().simple().to_string());
    }
    let offsets = schedule(args);
    let alert_span = offsets.last().copied().unwrap_or_default();
    let unsubscribe_over = LEAD + alert_span;
    let unsubscribe_sources = args
        .unsubscribe_sources
        .unwrap_or(args.unsubscribes.div_ceil(10).min(250) as u8);
    let mut load = Load::start(
        LoadPlan {
            base: base.clone(),
            admin: tokens.admin.clone(),
            tag: run_tag.clone(),
            import_rows: args.import_rows,
            import_pause: Duration::from_millis(args.import_pause_ms),
            unsubscribe_tokens,
            unsubscribe_over,
            unsubscribe_sources,
        },
        http,
        sink.counter(),
    );

    // 4. The alerts, then their arrivals.
    tokio::time::sleep(LEAD).await;
    let first_alert_mails = sink.count();
    let phase_start = Instant::now();
    let marker = format!("BENCH-{run_tag}-");
    let sent = send_alerts(
        &alert_http,
        &base,
        &tokens.disaster,
        &marker,
        &offsets,
        args.via,
    )
    .await?;
    let last_sent = sent.iter().map(|s| s.sent).max().unwrap_or(phase_start);
    let deadline = last_sent + Duration::from_secs(args.arrival_timeout_secs);
    let arrivals = wait_for_arrivals(fakes, &marker, args.alerts, deadline).await;
    let phase_end = Instant::now();
    load.finish().await;

    // 5. The figures.
    let (ok, latency) =
        report::latency(&sent, &arrivals, args.per_alert, args.arrival_timeout_secs);
    let last_arrival = arrivals.last().unwrap_or(last_sent);
    let window = last_arrival.saturating_duration_since(phase_start);
    let mails_at_last = load.mails_at(last_arrival).max(first_alert_mails);
    println!();
    println!(
        "load while the alerts ran ({:.1} s from the first alert sent to the last arrival):",
        window.as_secs_f64()
    );
    println!(
        "  email fan-out: {first_alert_mails} mails received when the first alert was sent, \
         {mails_at_last} when the last alert arrived ({:.0}/s), {} of {} still to send then",
        (mails_at_last - first_alert_mails) as f64 / window.as_secs_f64().max(0.001),
        args.subscribers.saturating_sub(mails_at_last as usize),
        args.subscribers,
    );
    println!(
        "  imports: {} of {} rows each, {} ({:.2} s each on average; answers {})",
        load.imports.total(),
        args.import_rows,
        if args.import_pause_ms == 0 {
            "back to back".to_string()
        } else {
            format!("{} ms apart", args.import_pause_ms)
        },
        load.mean_import_secs(),
        load.imports.show(),
    );
    println!(
        "  unsubscribe POSTs: {} over {:.1} s from {} loopback address(es) ({real_tokens} with \
         tokens from received mails, {} with unknown tokens; answers {})",
        load.unsubscribes.total(),
        unsubscribe_over.as_secs_f64(),
        unsubscribe_sources.max(1),
        args.unsubscribes - real_tokens,
        load.unsubscribes.show(),
    );
    println!(
        "  mails received by the end: {} ({:.1} s after the fan-out was accepted)",
        sink.count(),
        phase_end
            .saturating_duration_since(fanout_accepted)
            .as_secs_f64()
    );
    if mails_at_last as usize >= args.subscribers {
        println!("note: the fan-out had finished before the last alert arrived");
    }
    for c in daemon::unhealthy_channels(http, &base, &tokens.admin).await? {
        println!("note: channel {c} after the run");
    }
    println!("machine: load average {} at the end", load_average());
    Ok(Outcome { ok, latency })
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), or `?`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// When each alert is sent, from the first: bursts of `burst` alerts `burst_gap_ms` apart,
/// `pause_ms` between the last of a burst and the first of the next.
fn schedule(args: &DisasterArgs) -> Vec<Duration> {
    let mut at = Duration::ZERO;
    (0..args.alerts)
        .map(|k| {
            if k > 0 {
                at += Duration::from_millis(if k % args.burst == 0 {
                    args.pause_ms
                } else {
                    args.burst_gap_ms
                });
            }
            at
        })
        .collect()
}

/// Alert `k` as a CAP 1.2 message (a unique identifier per run and alert).
fn cap_alert(headline: &str, description: &str, marker: &str, k: usize) -> String {
    let sent = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S+09:00");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>urn:noroshi-bench:{marker}{k:04}</identifier>
  <sender>bousai@city.suzaka.nagano.jp</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>ja-JP</language>
    <category>Met</category>
    <event>避難指示</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <senderName>須坂市</senderName>
    <headline>{headline}</headline>
    <description>{description}</description>
    <area><areaDesc>須坂市 北相之島町、小島町</areaDesc></area>
  </info>
</alert>
"#
    )
}

/// Sends alert `k` at `offsets[k]`, each from its own task so a slow answer never delays
/// the next; the clock of each starts just before its request is sent.
async fn send_alerts(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    marker: &str,
    offsets: &[Duration],
    via: Via,
) -> Result<Vec<Sent>> {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(offsets.len());
    for (k, offset) in offsets.iter().enumerate() {
        tokio::time::sleep_until(start + *offset).await;
        let title = format!("【避難指示】千曲川 {marker}{k:04}");
        let text =
            "千曲川の水位が上昇しています。北相之島町、小島町の皆さんは直ちに避難してください。";
        let (url, body, content_type) = match via {
            Via::Json => (
                format!("{base}/api/v1/announcements"),
                json!({
                    "title": title,
                    "body": text,
                    "priority": "disaster",
                    "channels": PLATFORMS,
                })
                .to_string(),
                "application/json",
            ),
            Via::Cap => (
                format!("{base}/api/v1/cap"),
                cap_alert(&title, text, marker, k),
                "application/cap+xml",
            ),
        };
        let (http, token) = (http.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await;
            let answered = Instant::now();
            let status = match r {
                Ok(r) if r.status().as_u16() == 202 => 202,
                Ok(r) => {
                    let s = r.status().as_u16();
                    eprintln!(
                        "alert {k}: HTTP {s}: {}",
                        r.text().await.unwrap_or_default()
                    );
                    s
                }
                Err(e) => {
                    eprintln!("alert {k}: {e}");
                    0
                }
            };
            Sent {
                sent,
                answered,
                status,
            }
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await?);
    }
    Ok(sent)
}

/// Polls the fakes' records until every alert reached every platform, or `deadline`.
/// An alert's arrival is the last POST carrying its marker (a resend counts from the
/// request that got through).
async fn wait_for_arrivals(
    fakes: &Fakes,
    marker: &str,
    alerts: usize,
    deadline: Instant,
) -> Arrivals {
    loop {
        let mut arrivals = Arrivals {
            at: std::array::from_fn(|_| vec![None; alerts]),
            resends: [0; 3],
            accepted: [0; 3],
        };
        for (i, posts) in fakes.posts().into_iter().enumerate() {
            let mut seen = vec![0usize; alerts];
            for (at, body) in posts {
                if let Some(k) = alert_index(&body, marker).filter(|k| *k < alerts) {
                    seen[k] += 1;
                    let slot = &mut arrivals.at[i][k];
                    if slot.is_none_or(|prev| prev < at) {
                        *slot = Some(at);
                    }
                }
            }
            arrivals.resends[i] = seen.iter().map(|n| n.saturating_sub(1)).sum();
        }
        if arrivals.missing() == 0 || Instant::now() > deadline {
            for (i, texts) in fakes.accepted().iter().enumerate() {
                arrivals.accepted[i] = texts
                    .iter()
                    .filter(|t| alert_index(t, marker).is_some())
                    .count();
            }
            return arrivals;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The alert number in a post's text: the digits after `marker`.
fn alert_index(text: &str, marker: &str) -> Option<usize> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_numbers_are_read_from_any_encoding_of_the_text() {
        let m = "BENCH-0a1b2c3d-";
        assert_eq!(
            alert_index("【避難指示】千曲川 BENCH-0a1b2c3d-0017 本文", m),
            Some(17)
        );
        assert_eq!(
            alert_index("message=%E3%80%90+BENCH-0a1b2c3d-0003&link=x", m),
            Some(3)
        );
        assert_eq!(alert_index("BENCH-ffffffff-0003", m), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(report::percentile(&v, 0.50), 25.0);
        assert_eq!(report::percentile(&v, 0.99), 50.0);
        let v: Vec<f64> = (1..=150).map(f64::from).collect();
        assert_eq!(report::percentile(&v, 0.99), 149.0);
    }

    #[test]
    fn bursts_then_pauses() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: DisasterArgs,
        }
        let args =
            <Cli as clap::Parser>::parse_from(["disaster", "--alerts", "7", "--burst", "3"]).args;
        let ms: Vec<u128> = schedule(&args).iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 100, 200, 1200, 1300, 1400, 2400]);
    }
}
