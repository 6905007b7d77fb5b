//! The `soak` binary: parses flags, runs the soak, prints the summary; exits 1 when it failed.

use clap::Parser;
use service_kit::LogArgs;

/// Soak test for topic-server: thousands of churning and stalled subscribers on a feed over
/// many topics and views, for an hour by default; samples memory, descriptors, queues and
/// deliveries into OUT/samples.csv and fails on memory growth after the warm-up, a leaked
/// descriptor or a stalled feed (OUT/summary.md says which).
#[derive(Debug, Parser)]
// A flag given twice takes its last value: scripts/soak.sh passes defaults a user may override.
#[command(name = "soak", version, about, long_about = None, args_override_self = true)]
struct Cli {
    #[command(flatten)]
    config: soak::Config,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    let summary = soak::run(cli.config, shutdown).await?;
    println!("{}", summary.markdown());
    if !summary.passed() {
        std::process::exit(1);
    }
    Ok(())
}
