//! The `limit-server` binary: the fan-out ceiling for benchmarks (see `loadgen::limit`).

use clap::Parser;
use service_kit::LogArgs;

/// Fan-out ceiling server: every text frame received on `/publish` (`TOPIC\nPAYLOAD`, or a bare
/// payload) is written straight from the fan-out thread to every subscriber of its topic
/// (`/?topics=A,B`) and every subscriber without a topics list (`/`); a subscriber whose socket
/// is full gets later messages packed into `\n`-separated frames. No other logic, so a
/// benchmark against it measures what this machine allows.
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
