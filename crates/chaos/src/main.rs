//! `chaos`: fault injection into the whole demo pipeline (data-feeder → redis-ws-bridge →
//! Redis → backend-app → topic-server → dashboard), one topic-server or a cluster of three.
//!
//! It starts the pipeline as `scripts/demo.sh` does, from the release binaries, on free
//! loopback ports, and then kills (`kill -9`) and restarts each tier and redis-server in turn,
//! and pauses each (SIGSTOP, a few seconds, SIGCONT). It restarts only what it killed, as a
//! supervisor would; every other tier must recover by itself. A watcher plays the dashboard:
//! after each fault a new value of `redis/bitcoin` must reach it within 5 s, then one produced
//! after the fault's end (not a backlog), every process must be running and every tier's
//! `/healthz` (redis-server's `PING`) must answer; after the last fault values must still flow.
//! The faults and their recovery times are printed as a Markdown table and written to a report
//! file; the exit status is 1 when any fault did not recover. `scripts/chaos.sh` builds and runs it.
//! SIGINT or SIGTERM stops the run: every process it started is killed and reaped, and the
//! exit status is 130.

mod cli;
mod fault;
mod health;
mod pipeline;
mod ports;
mod report;
mod run;
mod watcher;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Args;

/// The exit status after SIGINT or SIGTERM (128 + SIGINT, as a shell reports Ctrl-C).
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // On a signal the run is dropped, and with it the pipeline, which kills and reaps every
    // process it started (a paused one included) before its data directory goes.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = async { run::run(args.plan()?).await } => Some(outcome),
            () = service_kit::shutdown::wait_for_os_signal() => None,
        }
    });
    match outcome {
        Some(Ok(true)) => ExitCode::SUCCESS,
        Some(Ok(false)) => ExitCode::FAILURE,
        Some(Err(error)) => {
            eprintln!("chaos: {error:#}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("chaos: interrupted; every process it started has been stopped");
            ExitCode::from(INTERRUPTED)
        }
    }
}
