//! `topic-cli`: fetch, subscribe to, set, add and remove topics on the topic server, and test
//! selectors offline. See `topic-cli --help`.

use std::process::ExitCode;

use clap::Parser;
use service_kit::Shutdown;
use topic_client::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    service_kit::logging::init(cli.log.log_format);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    cli::run(cli, shutdown.signal()).await
}
