//! `backend-app`: Redis channel → topic-server topic.

use clap::Parser;

/// Relays a Redis pub/sub channel (directly or through redis-ws-bridge) into a JSON topic on
/// the topic server.
#[derive(Debug, Parser)]
#[command(name = "backend-app", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: backend_app::Config,
    #[command(flatten)]
    log: service_kit::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    backend_app::Relay::new(cli.config)
        .run(shutdown.clone())
        .await
}
