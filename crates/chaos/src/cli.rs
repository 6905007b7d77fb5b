//! The command line: what a chaos run is asked to do.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use data_feeder::config::parse_cli_interval;

use crate::pipeline::{Setup, Topology};
use crate::run::Plan;

/// Kill, restart and pause every tier of the demo pipeline; measure how soon the dashboard's
/// topic updates again.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
pub struct Args {
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
    /// The feeder's poll interval (its `--interval`: `200ms`, `1s`, …).
    #[arg(long, default_value = "200ms", value_parser = parse_cli_interval)]
    feed_interval: Duration,
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

impl Args {
    /// What the command line asks for, with the paths checked.
    pub fn plan(self) -> anyhow::Result<Plan> {
        let args = self;
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
        let topologies = if args.both {
            vec![Topology::Single, Topology::Cluster]
        } else if args.cluster {
            vec![Topology::Cluster]
        } else {
            vec![Topology::Single]
        };
        Ok(Plan {
            topologies,
            report: args
                .report
                .unwrap_or_else(|| bin_dir.join("chaos-report.md")),
            setup: Setup {
                bin_dir,
                root,
                feed_interval: args.feed_interval,
            },
            short: args.short,
            rounds: args.rounds,
            pause: Duration::from_secs(args.pause_secs),
        })
    }
}
