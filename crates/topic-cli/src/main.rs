//! `topic-cli`: fetch, subscribe to, set, add and remove topics on the topic server, test
//! selectors and views offline, and hash passwords and issue tokens for the server's security
//! file. See `topic-cli --help`.

use std::process::ExitCode;

use clap::Parser;
mod cli;
mod security;

use cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = service_kit::start_process(&cli.log);
    cli::run(cli, shutdown.clone()).await
}
