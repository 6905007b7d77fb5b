//! The `loadgen` binary: parses flags, runs the benchmark, writes the JSON results.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use service_kit::LogArgs;

/// Fan-out load generator: opens many WebSocket subscribers (from 127.0.0.2, 127.0.0.3, …),
/// subscribes them to the system under test, publishes at a fixed rate or as fast as they keep
/// up, and prints deliveries/s, latency percentiles, bytes per delivery, connection set-up rate
/// and the server's RSS/CPU as JSON. A progress bar goes to stderr when it is a terminal.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: loadgen::Config,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    let out = cli.config.out.clone();
    let report = loadgen::run(cli.config, shutdown.clone()).await?;
    let json = serde_json::to_string_pretty(&report)?;
    match out {
        Some(path) => std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{json}")?;
        }
    }
    Ok(())
}
