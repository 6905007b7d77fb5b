//! The `limit-server` binary: the fan-out ceiling for benchmarks (see `loadgen::limit`).

use clap::Parser;
use service_kit::LogArgs;

/// Fan-out ceiling server: every text frame received on `/publish` is written, as is, to every
/// other WebSocket connection (queued messages packed into `\n`-separated frames). No other
/// logic, so a benchmark against it measures what this machine allows.
#[derive(Debug, Parser)]
#[command(name = "limit-server", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: loadgen::limit::LimitConfig,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    let server = loadgen::limit::bind(cli.config).await?;
    tracing::info!(addr = %server.local_addr()?, "limit-server listening");
    server.run(shutdown.clone()).await
}
