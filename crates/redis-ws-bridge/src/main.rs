//! `redis-ws-bridge` binary: parses flags, sets up logging and shutdown, runs the bridge.

use clap::Parser;
use service_kit::LogArgs;

/// WebSocket server on :3000 that publishes client text frames to a Redis channel and fans every
/// message on that channel out to all connected clients (one shared Redis subscription).
#[derive(Debug, Parser)]
#[command(name = "redis-ws-bridge", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    bridge: redis_ws_bridge::Config,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    let bridge = redis_ws_bridge::bind(cli.bridge).await?;
    bridge.run(shutdown.clone()).await
}
