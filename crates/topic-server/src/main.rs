//! The `topic-server` binary: parses flags, sets up logging and signals, runs the server.

use clap::Parser;
use service_kit::LogArgs;

/// jemalloc, not the system allocator: sessions that come and go leave glibc's malloc with
/// freed memory it cannot reuse or return, and the resident memory of a server under
/// connection churn crept up for an hour; with jemalloc it stays flat (docs/reliability.md,
/// "Soak").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let shutdown = service_kit::start_process(&cli.log);
    topic_server::run(cli.config, shutdown.clone()).await
}
