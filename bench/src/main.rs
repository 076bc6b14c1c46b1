//! `noroshi-bench`: Noroshi measured from outside, the release daemon on a fresh SQLite file
//! or a fresh PostgreSQL database, every sink and fake on 127.0.0.1 in this process.
//!
//! - `disaster`: the disaster-latency benchmark of issue 12 (see `disaster.rs`).
//! - `all`, or one of `sink`, `email`, `accept`, `latency`, `memory`, `apprise`: the
//!   benchmark with the peer of issue 19 (see `suite.rs`), printed as one table.
//!
//! scripts/perf/bench builds the release binaries, pins the daemon (and Apprise) to CPU 0
//! and this process to CPU 1, and runs `all`; docs/PERFORMANCE.md has the figures.

mod blaster;
mod daemon;
mod disaster;
mod fakes;
mod load;
mod procfs;
mod report;
mod sink;
mod suite;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use disaster::{DisasterArgs, LineMode};
use fakes::Fakes;
use sink::Sink;
use suite::{Suite, SuiteArgs};

#[derive(Parser, Debug)]
#[command(name = "noroshi-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Disaster latency (request sent → each of the LINE, X and Facebook fakes received it)
    /// while an email fan-out sends, subscriber imports run and unsubscribe POSTs arrive.
    Disaster(DisasterArgs),
    /// Every measure below, on SQLite and (with --postgres) PostgreSQL, as one table.
    All(SuiteArgs),
    /// The SMTP sink's own ceiling, measured by a Rust SMTP blaster.
    Sink(SuiteArgs),
    /// Email deliveries/s and daemon CPU per delivery, small and large fan-outs.
    Email(SuiteArgs),
    /// Announcements accepted/s, each 202 after its commit.
    Accept(SuiteArgs),
    /// Disaster latency to each social fake behind an email backlog (the `disaster` bench).
    Latency(SuiteArgs),
    /// Resident memory with a million queued email deliveries.
    Memory(SuiteArgs),
    /// The same email fan-out sent by Apprise (scripts/apprise-tools installs it).
    Apprise(SuiteArgs),
}

/// One measure of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Sink,
    Apprise,
    Email,
    Accept,
    Latency,
    Memory,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The fakes and the SMTP sink get runtimes of their own, so neither the sink's 100,000
    // sessions nor the bench's load generators delay the moment a fake records a post.
    let fakes_rt = runtime("bench-fakes", 1);
    let sink_rt = runtime("bench-smtp", 1);
    let main_rt = runtime("bench-main", 2);
    let (line_mode, tokens) = match &cli.command {
        Command::Disaster(a) => (a.line_mode, a.unsubscribes),
        _ => (LineMode::Broadcast, 500),
    };
    let fakes = fakes_rt.block_on(Fakes::start(line_mode));
    let sink = sink_rt.block_on(Sink::start(tokens));
    let result = main_rt.block_on(async {
        match &cli.command {
            Command::Disaster(args) => disaster::run(args, &fakes, &sink).await.map(|o| o.ok),
            Command::All(a) => suite(a, &fakes, &sink, ALL).await,
            Command::Sink(a) => suite(a, &fakes, &sink, &[Measure::Sink]).await,
            Command::Email(a) => suite(a, &fakes, &sink, &[Measure::Email]).await,
            Command::Accept(a) => suite(a, &fakes, &sink, &[Measure::Accept]).await,
            Command::Latency(a) => suite(a, &fakes, &sink, &[Measure::Latency]).await,
            Command::Memory(a) => suite(a, &fakes, &sink, &[Measure::Memory]).await,
            Command::Apprise(a) => suite(a, &fakes, &sink, &[Measure::Apprise]).await,
        }
    });
    let code = match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("noroshi-bench: {e:#}");
            ExitCode::from(2)
        }
    };
    drop(fakes);
    drop(sink);
    fakes_rt.shutdown_background();
    sink_rt.shutdown_background();
    main_rt.shutdown_background();
    code
}

/// The order of `all`: the sink's ceiling and Apprise first (no database), then each
/// measure on each database.
const ALL: &[Measure] = &[
    Measure::Sink,
    Measure::Apprise,
    Measure::Email,
    Measure::Accept,
    Measure::Latency,
    Measure::Memory,
];

async fn suite(
    args: &SuiteArgs,
    fakes: &Fakes,
    sink: &Sink,
    measures: &[Measure],
) -> anyhow::Result<bool> {
    let mut suite = Suite::new(args, fakes, sink)?;
    suite.header();
    let started = std::time::Instant::now();
    let mut result = Ok(());
    for m in measures {
        if let Err(e) = suite.run(*m).await {
            eprintln!("noroshi-bench: {m:?}: {e:#}");
            suite.failed = true;
            result = Err(e);
        }
    }
    println!(
        "\nnoroshi-bench: {:.0} s in all, load average {} at the end\n",
        started.elapsed().as_secs_f64(),
        disaster::load_average()
    );
    print!("{}", suite.table.render());
    result.map(|()| !suite.failed)
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
