//! `redis-ws-bridge` binary: parses flags, sets up logging and shutdown, runs the bridge.

use clap::Parser;
use service_kit::{LogArgs, Shutdown};

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
    service_kit::logging::init(cli.log.log_format);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    let bridge = redis_ws_bridge::bind(cli.bridge).await?;
    bridge.run(shutdown.signal()).await
}
