//! The `topic-server` binary: parses flags, sets up logging and signals, runs the server.

use clap::Parser;
use service_kit::{LogArgs, Shutdown};

/// Real-time topic server: stateful topics, selector subscriptions and fan-out over WebSocket,
/// plus the dashboard's static files, /healthz and Prometheus /metrics on the same port.
#[derive(Debug, Parser)]
#[command(name = "topic-server", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: topic_server::Config,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    service_kit::logging::init(cli.log.log_format);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    topic_server::run(cli.config, shutdown.signal()).await
}
