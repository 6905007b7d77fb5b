//! The `data-feeder` binary: parse flags, set up logging and shutdown, run the feeder.

use clap::Parser;
use service_kit::LogArgs;

/// Polls a JSON API (or the built-in synthetic CoinDesk-BPI-shaped source) and publishes each
/// payload, unchanged, to the redis-ws-bridge (ws://) or a Redis channel (redis://).
#[derive(Debug, Parser)]
#[command(name = "data-feeder", version, about)]
struct Cli {
    #[command(flatten)]
    config: data_feeder::Config,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    let server = data_feeder::bind(cli.config).await?;
    server.run(shutdown.clone()).await
}
