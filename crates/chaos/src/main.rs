//! `chaos`: fault injection into the whole demo pipeline (data-feeder → redis-ws-bridge →
//! Redis → backend-app → topic-server → dashboard), one topic-server or a cluster of three.
//!
//! It starts the pipeline as `scripts/demo.sh` does, from the release binaries, on free
//! loopback ports, and then kills (`kill -9`) and restarts each tier and redis-server in turn,
//! and pauses each (SIGSTOP, a few seconds, SIGCONT). It restarts only what it killed, as a
//! supervisor would; every other tier must recover by itself. A watcher plays the dashboard:
//! after each fault a new value of `redis/bitcoin` must reach it within 5 s, every process
//! must be running and every tier's `/healthz` (redis-server's `PING`) must answer. The faults
//! and their recovery times are printed as a Markdown table and written to a report file;
//! the exit status is 1 when any fault did not recover. `scripts/chaos.sh` builds and runs it.

mod fault;
mod health;
mod pipeline;
mod report;
mod watcher;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::pipeline::{Pipeline, Setup, TOPIC, Topology};
use crate::report::Row;
use crate::watcher::Watcher;

/// Kill, restart and pause every tier of the demo pipeline; measure how soon the dashboard's
/// topic updates again.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// Three topic-server nodes sharing one topic tree in Redis (as `scripts/demo.sh
    /// --cluster`) instead of one.
    #[arg(long, conflicts_with = "both")]
    cluster: bool,
    /// A single-node run, then a cluster run.
    #[arg(long)]
    both: bool,
    /// One fault per tier (kill -9 and restart), for `scripts/test.sh`.
    #[arg(long)]
    short: bool,
    /// How many times the whole schedule runs (ignored with --short).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// How long a paused process stays stopped, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pause_secs: u64,
    /// The feeder's poll interval (its `--interval`).
    #[arg(long, default_value = "200ms")]
    feed_interval: String,
    /// The directory of the release binaries (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The repository's root, for deploy/ and web/ (default: the current directory).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Where the Markdown report goes (default: chaos-report.md beside the binaries).
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the topologies asked for; true when every fault recovered.
async fn run(args: Args) -> anyhow::Result<bool> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("locating the chaos binary")?
            .parent()
            .map(PathBuf::from)
            .context("the chaos binary has no directory")?,
    };
    let root = args
        .root
        .canonicalize()
        .with_context(|| format!("the repository root {}", args.root.display()))?;
    anyhow::ensure!(
        root.join("deploy/redis.conf").is_file(),
        "{} is not the repository's root (no deploy/redis.conf); pass --root",
        root.display()
    );
    let setup = Setup {
        bin_dir: bin_dir.clone(),
        root,
        feed_interval: args.feed_interval,
    };
    let topologies = if args.both {
        vec![Topology::Single, Topology::Cluster]
    } else if args.cluster {
        vec![Topology::Cluster]
    } else {
        vec![Topology::Single]
    };
    let pause = Duration::from_secs(args.pause_secs);
    let mut report = String::new();
    let mut all_passed = true;
    for topology in topologies {
        let began = Instant::now();
        let (rows, passed) = run_topology(topology, &setup, args.short, args.rounds, pause).await;
        all_passed &= passed;
        let section = format!(
            "### {} ({} faults, {:.0} s)\n\n{}\n",
            topology.label(),
            rows.len(),
            began.elapsed().as_secs_f64(),
            report::markdown(&rows)
        );
        println!("{section}");
        report.push_str(&section);
    }
    let path = args
        .report
        .unwrap_or_else(|| bin_dir.join("chaos-report.md"));
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("chaos: report written to {}", path.display());
    Ok(all_passed)
}

/// Starts the pipeline in `topology` and runs the schedule against it, stopping at the first
/// fault it did not recover from (the pipeline is then not what the next fault assumes). The
/// rows so far, and whether all passed.
async fn run_topology(
    topology: Topology,
    setup: &Setup,
    short: bool,
    rounds: u32,
    pause: Duration,
) -> (Vec<Row>, bool) {
    eprintln!("chaos: starting the pipeline ({})", topology.label());
    let mut pipeline = match Pipeline::start(topology, setup).await {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("chaos: the pipeline did not start: {error:#}");
            return (Vec::new(), false);
        }
    };
    let mut watcher = match Watcher::start(&pipeline.dashboard_urls, TOPIC).await {
        Ok(watcher) => watcher,
        Err(error) => {
            eprintln!("chaos: {error:#}\n{}", pipeline.log_tails(15));
            return (Vec::new(), false);
        }
    };
    let faults = fault::schedule(pipeline.tiers.len(), short, rounds, pause);
    let mut rows = Vec::new();
    for (i, fault) in faults.into_iter().enumerate() {
        let number = i + 1;
        let outcome = fault::run(number, fault, &mut pipeline, &mut watcher).await;
        let row = match outcome {
            Ok(row) => row,
            Err(error) => Row {
                number,
                fault: fault.kind.label(),
                tier: pipeline.tiers[fault.tier].name.clone(),
                recovery: None,
                longest_gap: Duration::ZERO,
                failure: Some(format!("{error:#}")),
            },
        };
        eprintln!(
            "chaos: {number}. {} {}: {}",
            row.fault,
            row.tier,
            match (&row.failure, row.recovery) {
                (None, Some(d)) => format!("recovered in {} ms", d.as_millis()),
                (None, None) => "recovered".to_owned(),
                (Some(why), _) => format!("FAILED: {why}"),
            }
        );
        let failed = row.failure.is_some();
        rows.push(row);
        if failed {
            eprintln!("chaos: the logs' last lines:\n{}", pipeline.log_tails(25));
            return (rows, false);
        }
    }
    eprintln!("chaos: {} new values seen by the watcher", watcher.count());
    (rows, true)
}
