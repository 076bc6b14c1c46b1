//! The benchmark with the peer (issue 19): the SMTP sink's own ceiling, email deliveries/s
//! and daemon CPU per delivery for a small and a large fan-out, announcements accepted/s,
//! disaster latency behind a large email backlog, resident memory with a million queued
//! deliveries, and the same email fan-out sent by Apprise — on SQLite and on PostgreSQL,
//! printed as one table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::daemon::{self, start_daemon, Daemon, Spec, Tokens};
use crate::disaster::{self, DisasterArgs};
use crate::fakes::Fakes;
use crate::load;
use crate::procfs;
use crate::sink::{Sink, Tarpit};
use crate::table::{median, thousands, Table};
use crate::{blaster, Measure};

/// The announcement every fan-out sends (and Apprise sends the same subject and body).
pub const TITLE: &str = "年末年始のごみ収集について";
pub const BODY: &str =
    "12月31日から1月3日まで、ごみの収集はお休みです。\n\n資源物は1月4日から通常どおり収集します。";
/// The sender the daemon's email channel and the Apprise driver use.
const FROM: &str = "info@city.example.jp";
/// Rows per subscriber import (40,000 of `m1000000@example.jp,ja,` stay under the daemon's
/// default 1 MiB body limit).
const IMPORT_ROWS: usize = 40_000;

#[derive(clap::Args, Debug, Clone)]
pub struct SuiteArgs {
    /// The daemon binary [default: $CARGO_TARGET_DIR/release/noroshi, else
    /// target/release/noroshi of this workspace].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Also run on PostgreSQL: a server on loopback (e.g.
    /// postgres://postgres@127.0.0.1:5432/test); a fresh database per daemon, dropped after.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Skip SQLite (PostgreSQL only).
    #[arg(long)]
    pub no_sqlite: bool,
    /// Small sizes: 1,000 and 10,000 recipients, 10,000-mail backlog, 100,000 queued,
    /// 1,000 announcements, 10 alerts.
    #[arg(long)]
    pub quick: bool,
    /// Run the daemon and Apprise on this CPU only (`taskset -c CPU`); scripts/perf/bench
    /// passes 0 and runs the bench itself (sink, blaster, clients) on CPU 1.
    #[arg(long)]
    pub daemon_cpu: Option<usize>,
    /// The daemon's `[log] level` (its default is info).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// The small fan-out [default: 1000].
    #[arg(long)]
    pub small: Option<usize>,
    /// The large fan-out [default: 100000; --quick 10000].
    #[arg(long)]
    pub large: Option<usize>,
    /// A fan-out that has not finished after this long is measured over the mails sent so
    /// far (and the table says so).
    #[arg(long, default_value_t = 150)]
    pub fanout_limit_secs: u64,
    /// How often the small fan-out is repeated (the median is printed).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Announcements submitted for the acceptance rate [default: 4000; --quick 1000].
    #[arg(long)]
    pub announcements: Option<usize>,
    /// Concurrent API clients for the acceptance rate.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Email backlog behind the disaster alerts [default: 100000; --quick 10000].
    #[arg(long)]
    pub backlog: Option<usize>,
    /// Disaster alerts [default: 20; --quick 10].
    #[arg(long)]
    pub alerts: Option<usize>,
    /// Queued deliveries for the memory figure [default: 1000000; --quick 100000].
    #[arg(long)]
    pub queued: Option<usize>,
    /// Messages the blaster sends to measure the sink's ceiling [default: 50000; --quick
    /// 10000].
    #[arg(long)]
    pub sink_messages: Option<usize>,
    /// Connections the blaster opens (the daemon's email pool is 16).
    #[arg(long, default_value_t = 16)]
    pub sink_connections: usize,
    /// Size of a blaster message in bytes (about what the daemon sends; the email rows
    /// print the daemon's mean).
    #[arg(long, default_value_t = 2900)]
    pub sink_message_bytes: usize,
    /// The Python with Apprise installed [default: $NOROSHI_APPRISE_VENV/bin/python, else
    /// /var/tmp/noroshi-apprise/bin/python, as scripts/apprise-tools makes it].
    #[arg(long)]
    pub apprise_python: Option<PathBuf>,
    /// How often Apprise's fan-out is repeated (the median is printed) [default: 3;
    /// --quick 1].
    #[arg(long)]
    pub apprise_repeat: Option<usize>,
    /// Keep each daemon's temporary directory (configuration, log, SQLite file).
    #[arg(long)]
    pub keep: bool,
}

impl SuiteArgs {
    fn small(&self) -> usize {
        self.small.unwrap_or(1000)
    }
    fn large(&self) -> usize {
        self.large
            .unwrap_or(if self.quick { 10_000 } else { 100_000 })
    }
    fn announcements(&self) -> usize {
        self.announcements
            .unwrap_or(if self.quick { 1000 } else { 4000 })
    }
    fn backlog(&self) -> usize {
        self.backlog
            .unwrap_or(if self.quick { 10_000 } else { 100_000 })
    }
    fn alerts(&self) -> usize {
        self.alerts.unwrap_or(if self.quick { 10 } else { 20 })
    }
    fn queued(&self) -> usize {
        self.queued
            .unwrap_or(if self.quick { 100_000 } else { 1_000_000 })
    }
    fn sink_messages(&self) -> usize {
        self.sink_messages
            .unwrap_or(if self.quick { 10_000 } else { 50_000 })
    }
    fn apprise_repeat(&self) -> usize {
        self.apprise_repeat
            .unwrap_or(if self.quick { 1 } else { 3 })
    }
    fn apprise_python(&self) -> PathBuf {
        self.apprise_python.clone().unwrap_or_else(|| {
            let venv = std::env::var_os("NOROSHI_APPRISE_VENV")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp/noroshi-apprise"));
            venv.join("bin/python")
        })
    }
}

/// One database the daemons run on.
struct Backend {
    name: &'static str,
    column: usize,
    postgres: Option<String>,
}

/// One email fan-out as measured.
struct Fanout {
    rate: f64,
    cpu_us: f64,
    /// PostgreSQL backends' CPU per delivery (PostgreSQL only).
    pg_us: Option<f64>,
    /// (mails received, seconds) when the fan-out did not finish within the limit.
    partial: Option<(u64, u64)>,
    mean_bytes: f64,
}

impl Fanout {
    /// `3,839/s`, or `≈ 412/s (61,800 of 100,000 in 150 s)` when it did not finish.
    fn rate_cell(&self, n: usize) -> String {
        match self.partial {
            None => format!("{}/s", thousands(self.rate)),
            Some((got, secs)) => format!(
                "{}/s over the first {} of {} (stopped at {secs} s)",
                thousands(self.rate),
                thousands(got as f64),
                thousands(n as f64)
            ),
        }
    }
}

pub struct Suite<'a> {
    args: &'a SuiteArgs,
    fakes: &'a Fakes,
    sink: &'a Sink,
    bin: PathBuf,
    http: reqwest::Client,
    tokens: Tokens,
    pub table: Table,
    /// Median deliveries/s of the small fan-out per column, for the Apprise ratio.
    small_rate: Vec<Option<f64>>,
    apprise_rate: Option<f64>,
    /// Something did not go as it must (a mail missing, a refusal): exit status 1.
    pub failed: bool,
}

impl<'a> Suite<'a> {
    pub fn new(args: &'a SuiteArgs, fakes: &'a Fakes, sink: &'a Sink) -> Result<Suite<'a>> {
        Ok(Suite {
            args,
            fakes,
            sink,
            bin: daemon::daemon_bin(args.bin.as_deref())?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .no_proxy()
                .build()?,
            tokens: Tokens {
                admin: format!("bench-admin-{}", uuid::Uuid::new_v4().simple()),
                disaster: format!("bench-bousai-{}", uuid::Uuid::new_v4().simple()),
            },
            table: Table::new(&["SQLite (`synchronous = FULL`)", "PostgreSQL"]),
            small_rate: vec![None, None],
            apprise_rate: None,
            failed: false,
        })
    }

    fn backends(&self) -> Vec<Backend> {
        let mut out = Vec::new();
        if !self.args.no_sqlite {
            out.push(Backend {
                name: "SQLite",
                column: 0,
                postgres: None,
            });
        }
        if let Some(url) = &self.args.postgres {
            out.push(Backend {
                name: "PostgreSQL",
                column: 1,
                postgres: Some(url.clone()),
            });
        }
        out
    }

    pub fn header(&self) {
        let a = self.args;
        println!(
            "noroshi-bench{}: daemon {}",
            if a.quick { " --quick" } else { "" },
            crate::daemon::describe(&self.bin)
        );
        println!(
            "machine: CPUs {} online, load average {}; this process on CPUs {}, the daemon {}",
            procfs::cpus_online(),
            disaster::load_average(),
            procfs::cpus_allowed("self"),
            match a.daemon_cpu {
                Some(c) => format!("and Apprise on CPU {c} (taskset)"),
                None => "and Apprise unpinned".into(),
            }
        );
        if a.postgres.is_none() {
            println!("PostgreSQL: SKIPPED (pass --postgres URL or set NOROSHI_TEST_POSTGRES_URL in scripts/perf/bench)");
        }
    }

    /// Runs one measure on every backend (or once, for those that have none).
    pub async fn run(&mut self, m: Measure) -> Result<()> {
        match m {
            Measure::Sink => self.sink_ceiling().await,
            Measure::Apprise => self.apprise().await,
            _ => {
                for b in self.backends() {
                    println!("\n== {:?} on {}", m, b.name);
                    match m {
                        Measure::Email => self.email(&b).await?,
                        Measure::Accept => self.accept(&b).await?,
                        Measure::Latency => self.latency(&b).await?,
                        Measure::Memory => self.memory(&b).await?,
                        Measure::Sink | Measure::Apprise => unreachable!(),
                    }
                }
                Ok(())
            }
        }
    }

    async fn start(
        &self,
        b: &Backend,
        smtp_port: u16,
        timeout: u64,
        extra: String,
    ) -> Result<Daemon> {
        let spec = Spec {
            bin: self.bin.clone(),
            postgres: b.postgres.as_deref(),
            log_level: &self.args.log_level,
            cpu: self.args.daemon_cpu,
            smtp_port,
            smtp_timeout_secs: timeout,
            social: None,
            extra,
        };
        start_daemon(&spec, &self.tokens, &self.http).await
    }

    /// Stops the daemon, keeping its directory with `--keep` or after a failure.
    async fn finish<T>(&mut self, mut d: Daemon, result: Result<T>) -> Result<T> {
        let alive = d.alive();
        if self.args.keep || result.is_err() || !alive {
            d.dir.disable_cleanup(true);
            eprintln!("noroshi-bench: kept {}", d.dir.path().display());
        }
        d.stop().await;
        if !alive {
            self.failed = true;
            eprintln!("noroshi-bench: the daemon died during the run");
        }
        result
    }

    /// Imports subscribers `{prefix}{from}..{from + n}` in files of [`IMPORT_ROWS`].
    async fn import(&self, d: &Daemon, prefix: &str, from: usize, n: usize) -> Result<()> {
        let started = Instant::now();
        let mut done = 0;
        while done < n {
            let k = IMPORT_ROWS.min(n - done);
            let body = load::csv(prefix, from + done, k);
            let status = load::import(&self.http, &d.base, &self.tokens.admin, body).await?;
            if status != 200 {
                bail!(
                    "importing subscribers {}..{}: HTTP {status}",
                    from + done,
                    from + done + k
                );
            }
            done += k;
        }
        println!(
            "  {n} subscribers imported in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn submit(&self, d: &Daemon, channels: &[&str]) -> Result<String> {
        let r = self
            .http
            .post(format!("{}/api/v1/announcements", d.base))
            .bearer_auth(&self.tokens.admin)
            .json(&json!({ "title": TITLE, "body": BODY, "channels": channels }))
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if status != 202 {
            bail!("the announcement got HTTP {status}: {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text)?;
        Ok(v["id"].as_str().context("no id in the 202")?.to_string())
    }

    async fn announcement_status(&self, d: &Daemon, id: &str) -> Result<String> {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/announcements/{id}", d.base))
            .bearer_auth(&self.tokens.admin)
            .send()
            .await?
            .json()
            .await?;
        Ok(v["status"].as_str().unwrap_or("?").to_string())
    }

    /// Polls the announcement until it is `sent` (every outcome committed), for up to 60 s.
    async fn wait_until_sent(&self, d: &Daemon, id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.announcement_status(d, id).await?;
            if status == "sent" {
                return Ok(());
            }
            if Instant::now() > deadline {
                println!("  note: the announcement is still {status} 60 s after the last mail");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One announcement to `n` email subscribers: from its `202` to the sink's `n`-th
    /// message; the daemon's CPU from before the request to every outcome recorded.
    async fn fanout(&mut self, d: &Daemon, n: usize) -> Result<Fanout> {
        let pid = d.pid().context("the daemon has no pid")?;
        let (count0, bytes0) = (self.sink.count(), self.sink.bytes());
        let cpu0 = procfs::cpu_time(pid)?;
        let switches0 = procfs::context_switches(pid);
        let pg0 = d.database().map(procfs::postgres_backends_cpu);
        let id = self.submit(d, &["email"]).await?;
        let accepted = Instant::now();
        let limit = Duration::from_secs(self.args.fanout_limit_secs);
        let finished = self.sink.wait_for(count0 + n as u64, limit).await;
        let secs = if finished {
            self.sink.last_accepted()
        } else {
            Instant::now()
        }
        .saturating_duration_since(accepted)
        .as_secs_f64();
        // The daemon's work ends when every outcome is recorded, a little after the last mail.
        if finished {
            self.wait_until_sent(d, &id).await?;
        }
        let got = self.sink.count() - count0;
        let cpu = procfs::cpu_time(pid)?.saturating_sub(cpu0);
        let switches = procfs::context_switches(pid).saturating_sub(switches0);
        let pg = pg0.zip(d.database()).map(|(pg0, name)| {
            let pg = procfs::postgres_backends_cpu(name).saturating_sub(pg0);
            pg.as_secs_f64() * 1e6 / got.max(1) as f64
        });
        if finished && got != n as u64 {
            self.failed = true;
            println!("  FAILED: the sink received {got} mails for {n} recipients");
        }
        let partial = (!finished).then(|| {
            println!(
                "  note: {got} of {n} mails in {} s (--fanout-limit-secs): the figures are over those",
                limit.as_secs()
            );
            (got, limit.as_secs())
        });
        let n = if finished { n } else { got.max(1) as usize };
        let f = Fanout {
            rate: n as f64 / secs.max(1e-6),
            cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
            pg_us: pg,
            partial,
            mean_bytes: (self.sink.bytes() - bytes0) as f64 / got.max(1) as f64,
        };
        println!(
            "  {n} emails in {secs:.3} s: {:.0}/s; daemon CPU {:.2} s, {:.0} µs per delivery{}; {:.1} context switches per delivery; {:.0} bytes per message",
            f.rate,
            cpu.as_secs_f64(),
            f.cpu_us,
            pg.map_or(String::new(), |us| format!(" (PostgreSQL backends {us:.0} µs)")),
            switches as f64 / n as f64,
            f.mean_bytes
        );
        Ok(f)
    }

    async fn email(&mut self, b: &Backend) -> Result<()> {
        let d = self.start(b, self.sink.port(), 30, String::new()).await?;
        let r = self.email_on(b, &d).await;
        self.finish(d, r).await
    }

    async fn email_on(&mut self, b: &Backend, d: &Daemon) -> Result<()> {
        let (small, large, repeat) = (
            self.args.small(),
            self.args.large(),
            self.args.repeat.max(1),
        );
        self.import(d, "r", 0, small).await?;
        let mut runs = Vec::new();
        for _ in 0..repeat {
            runs.push(self.fanout(d, small).await?);
        }
        let rate = median(&runs.iter().map(|f| f.rate).collect::<Vec<_>>());
        let cpu = median(&runs.iter().map(|f| f.cpu_us).collect::<Vec<_>>());
        self.small_rate[b.column] = Some(rate);
        let label = format!(
            "email, {} recipients: deliveries/s (median of {repeat})",
            thousands(small as f64)
        );
        self.table.set(
            &label,
            "≥ 8,500/s",
            b.column,
            format!("{}/s", thousands(rate)),
        );
        let label = format!(
            "  daemon CPU per delivery, {} recipients (median of {repeat})",
            thousands(small as f64)
        );
        self.table
            .set(&label, "≤ 110 µs", b.column, format!("{cpu:.0} µs"));
        let pg: Vec<f64> = runs.iter().filter_map(|f| f.pg_us).collect();
        if !pg.is_empty() {
            let label = format!(
                "  PostgreSQL backends' CPU per delivery, {} recipients (median of {repeat})",
                thousands(small as f64)
            );
            self.table
                .set(&label, "", b.column, format!("{:.0} µs", median(&pg)));
        }
        if b.column == 1 {
            if let Some(sqlite) = self.small_rate[0] {
                self.table.set(
                    "  PostgreSQL against SQLite, small fan-out",
                    "within 30 %",
                    1,
                    format!("{:+.0} %", (rate / sqlite - 1.0) * 100.0),
                );
            }
        }
        if large > small {
            self.import(d, "r", small, large - small).await?;
            let f = self.fanout(d, large).await?;
            let label = format!(
                "email, {} recipients: deliveries/s",
                thousands(large as f64)
            );
            self.table
                .set(&label, "≥ 8,500/s", b.column, f.rate_cell(large));
            let label = format!(
                "  daemon CPU per delivery, {} recipients",
                thousands(large as f64)
            );
            self.table
                .set(&label, "≤ 110 µs", b.column, format!("{:.0} µs", f.cpu_us));
            if let Some(us) = f.pg_us {
                let label = format!(
                    "  PostgreSQL backends' CPU per delivery, {} recipients",
                    thousands(large as f64)
                );
                self.table.set(&label, "", b.column, format!("{us:.0} µs"));
            }
            self.table.set(
                "  mean message size as the sink received it",
                "",
                b.column,
                format!("{} bytes", thousands(f.mean_bytes)),
            );
        }
        self.ratio();
        Ok(())
    }

    /// Noroshi's small fan-out against Apprise's, once both are measured.
    fn ratio(&mut self) {
        let Some(apprise) = self.apprise_rate else {
            return;
        };
        for column in 0..2 {
            if let Some(rate) = self.small_rate[column] {
                self.table.set(
                    "Noroshi ÷ Apprise, same 1,000 emails",
                    "≥ 10×",
                    column,
                    format!("{:.1}×", rate / apprise),
                );
            }
        }
    }

    /// Concurrent clients POST announcements to a channel paused by its own healthcheck
    /// (a webhook whose endpoint refuses every request with 401), so nothing is delivered:
    /// each 202 comes after the announcement and its delivery are committed.
    async fn accept(&mut self, b: &Backend) -> Result<()> {
        let hook = noroshi_webhook::fake::start(None).await;
        hook.require_header("X-Bench-Key", "never-sent");
        let extra = format!(
            "\n[channels.webhook.paused]\nenabled = true\nurl = \"{}\"\n",
            hook.url()
        );
        let d = self.start(b, self.sink.port(), 30, extra).await?;
        let r = self.accept_on(b, &d, &hook).await;
        self.finish(d, r).await
    }

    async fn accept_on(
        &mut self,
        b: &Backend,
        d: &Daemon,
        hook: &noroshi_webhook::fake::FakeReceiver,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hook =
                daemon::channel(&self.http, &d.base, &self.tokens.admin, "webhook.paused").await?;
            let paused = hook["state"] == "paused";
            if paused {
                break;
            }
            if Instant::now() > deadline {
                bail!("the webhook channel was not paused by its healthcheck within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (n, clients) = (self.args.announcements(), self.args.clients.max(1));
        let pid = d.pid().context("the daemon has no pid")?;
        let next = Arc::new(AtomicUsize::new(0));
        let codes = Arc::new(load::Codes::default());
        let cpu0 = procfs::cpu_time(pid)?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..clients {
            // One client each: its own kept-alive connection.
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .no_proxy()
                .build()?;
            let (next, codes) = (next.clone(), codes.clone());
            let (url, token) = (
                format!("{}/api/v1/announcements", d.base),
                self.tokens.admin.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({
                            "title": format!("お知らせ {k}"),
                            "body": BODY,
                            "channels": ["webhook.paused"],
                        }))
                        .send()
                        .await;
                    codes.add(load::code_of(r));
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = procfs::cpu_time(pid)?.saturating_sub(cpu0);
        let accepted = codes.count("202");
        let rate = accepted as f64 / secs;
        println!(
            "  {accepted} of {n} announcements accepted in {secs:.2} s from {clients} clients: {rate:.0}/s; \
             daemon CPU {:.0} µs each (answers {})",
            cpu.as_secs_f64() * 1e6 / n as f64,
            codes.show()
        );
        let posts = hook
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count();
        if accepted != n as u64 || posts > 0 {
            self.failed = true;
            println!(
                "  FAILED: {accepted} of {n} accepted, {posts} delivered to the paused channel"
            );
        }
        self.table.set(
            &format!("announcements accepted/s, each 202 after its commit ({clients} clients, a paused channel)"),
            "≥ 500/s",
            b.column,
            format!("{}/s", thousands(rate)),
        );
        Ok(())
    }

    /// The disaster bench (`noroshi-bench disaster`), with this run's sizes.
    async fn latency(&mut self, b: &Backend) -> Result<()> {
        let (backlog, alerts) = (self.args.backlog(), self.args.alerts());
        let mut argv = vec![
            "disaster".to_string(),
            "--subscribers".into(),
            backlog.to_string(),
            "--alerts".into(),
            alerts.to_string(),
            "--log-level".into(),
            self.args.log_level.clone(),
            "--bin".into(),
            self.bin.display().to_string(),
        ];
        if let Some(url) = &b.postgres {
            argv.extend(["--postgres".into(), url.clone()]);
        }
        if let Some(cpu) = self.args.daemon_cpu {
            argv.extend(["--daemon-cpu".into(), cpu.to_string()]);
        }
        if self.args.keep {
            argv.push("--keep".into());
        }
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: DisasterArgs,
        }
        let args = <Cli as clap::Parser>::try_parse_from(argv)?.args;
        let outcome = disaster::run(&args, self.fakes, self.sink).await?;
        if !outcome.ok {
            self.failed = true;
        }
        for p in &outcome.latency {
            let arrived = if p.arrived == p.expected {
                String::new()
            } else {
                format!(" ({} of {} arrived)", p.arrived, p.expected)
            };
            self.table.set(
                &format!(
                    "disaster latency to {}, {alerts} alerts behind a {}-mail backlog: p50 / p99 / max",
                    p.platform,
                    thousands(backlog as f64)
                ),
                "p99 < 50 ms",
                b.column,
                format!("{:.1} / {:.1} / {:.1} ms{arrived}", p.p50, p.p99, p.max),
            );
        }
        Ok(())
    }

    /// Resident memory with `queued` email deliveries waiting: the email channel sends to a
    /// tarpit (connections accepted, never answered), so the 16 workers hang on their first
    /// sends while the subscriber expansion (claimed before any send, being the oldest row)
    /// writes one `send` row per recipient.
    async fn memory(&mut self, b: &Backend) -> Result<()> {
        let tarpit = Tarpit::start().await;
        let d = self.start(b, tarpit.port, 600, String::new()).await?;
        let r = self.memory_on(b, &d).await;
        drop(tarpit);
        self.finish(d, r).await
    }

    async fn memory_on(&mut self, b: &Backend, d: &Daemon) -> Result<()> {
        let queued = self.args.queued();
        let pid = d.pid().context("the daemon has no pid")?;
        self.import(d, "m", 0, queued).await?;
        let (idle, _) = procfs::memory_kb(pid)?;
        self.submit(d, &["email"]).await?;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        let (depth, in_flight) = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let email = daemon::channel(&self.http, &d.base, &self.tokens.admin, "email").await?;
            let depth = email["queue"]["normal"].as_i64().unwrap_or(0);
            if depth >= queued as i64 {
                break (
                    depth,
                    email["queue"]["in_flight_here"].as_i64().unwrap_or(0),
                );
            }
            if Instant::now() > deadline {
                bail!("only {depth} of {queued} deliveries queued after 600 s");
            }
        };
        let expanded = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, hwm) = procfs::memory_kb(pid)?;
        println!(
            "  {depth} email deliveries queued ({in_flight} of them in flight to a server that never \
             answers) {expanded:.0} s after the 202; VmRSS {} MB, VmHWM {} MB (after the import, \
             before the announcement: {} MB)",
            rss / 1024,
            hwm / 1024,
            idle / 1024
        );
        self.table.set(
            &format!(
                "resident memory with {} queued email deliveries: VmRSS / VmHWM",
                thousands(queued as f64)
            ),
            "< 150 MB",
            b.column,
            format!("{} / {} MB", rss / 1024, hwm / 1024),
        );
        Ok(())
    }

    /// The sink's own ceiling: the blaster's messages/s, and the sink's CPU per message.
    async fn sink_ceiling(&mut self) -> Result<()> {
        let a = self.args;
        let (n, conns) = (a.sink_messages(), a.sink_connections.max(1));
        println!(
            "\n== SMTP sink ceiling: {n} messages of {} bytes over {conns} connections",
            a.sink_message_bytes
        );
        let count0 = self.sink.count();
        let cpu0 = procfs::own_threads_cpu("bench-smtp");
        let took = blaster::blast(self.sink.port(), conns, n, a.sink_message_bytes).await?;
        let cpu = procfs::own_threads_cpu("bench-smtp").saturating_sub(cpu0);
        let got = self.sink.count() - count0;
        if got != n as u64 {
            self.failed = true;
            println!("  FAILED: the sink counted {got} of {n}");
        }
        let rate = n as f64 / took.as_secs_f64();
        let us = cpu.as_secs_f64() * 1e6 / n as f64;
        println!(
            "  {n} messages in {:.2} s: {rate:.0}/s; the sink's thread {us:.0} µs CPU per message",
            took.as_secs_f64()
        );
        self.table.set_all(
            &format!("SMTP sink ceiling (Rust blaster, {conns} connections, on the sink's core)"),
            "well above the daemon",
            format!("{}/s ({us:.0} µs CPU/msg)", thousands(rate)),
        );
        Ok(())
    }

    /// The same email fan-out by Apprise: `bench/apprise_fanout.py` sends one message per
    /// recipient to the same sink over plain SMTP, pinned like the daemon.
    async fn apprise(&mut self) -> Result<()> {
        let python = self.args.apprise_python();
        if !python.is_file() {
            println!("\nApprise: SKIPPED (run scripts/apprise-tools)");
            self.table.set_all(
                "Apprise, same 1,000 emails: deliveries/s",
                "",
                "SKIPPED (run scripts/apprise-tools)".into(),
            );
            return Ok(());
        }
        let n = self.args.small();
        let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("apprise_fanout.py");
        println!(
            "\n== Apprise: {n} emails, {} runs",
            self.args.apprise_repeat()
        );
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        let mut version = String::new();
        for _ in 0..self.args.apprise_repeat().max(1) {
            let count0 = self.sink.count();
            let mut cmd = match self.args.daemon_cpu {
                Some(cpu) => {
                    let mut c = tokio::process::Command::new("taskset");
                    c.arg("-c").arg(cpu.to_string()).arg(&python);
                    c
                }
                None => tokio::process::Command::new(&python),
            };
            let out = cmd
                .arg(&driver)
                .args(["--port", &self.sink.port().to_string()])
                .args(["--count", &n.to_string()])
                .args(["--from", FROM, "--title", TITLE, "--body", BODY])
                .output()
                .await
                .with_context(|| format!("run {}", python.display()))?;
            if !out.status.success() {
                bail!(
                    "the Apprise driver failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "the Apprise driver printed {:?}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?;
            let got = self.sink.count() - count0;
            if got != n as u64 || v["ok"] != true {
                self.failed = true;
                println!(
                    "  FAILED: Apprise reported {}, the sink counted {got} of {n}",
                    v["ok"]
                );
            }
            let wall = v["wall_s"].as_f64().unwrap_or(f64::NAN);
            let cpu = v["cpu_s"].as_f64().unwrap_or(f64::NAN);
            version = v["apprise"].as_str().unwrap_or("?").to_string();
            println!(
                "  Apprise {version}: {n} emails in {wall:.3} s: {:.0}/s; its CPU {cpu:.2} s, {:.0} µs per email",
                n as f64 / wall,
                cpu * 1e6 / n as f64
            );
            rates.push(n as f64 / wall);
            cpus.push(cpu * 1e6 / n as f64);
        }
        let rate = median(&rates);
        self.apprise_rate = Some(rate);
        self.table.set_all(
            &format!(
                "Apprise {version}, same {} emails: deliveries/s (median of {})",
                thousands(n as f64),
                rates.len()
            ),
            "",
            format!("{}/s", thousands(rate)),
        );
        self.table.set_all(
            "  Apprise CPU per email",
            "",
            format!("{:.0} µs", median(&cpus)),
        );
        self.ratio();
        Ok(())
    }
}
