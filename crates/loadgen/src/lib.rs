//! `loadgen`: the benchmark load generator, and the `limit` server that bounds what any server
//! could do on the same machine.
//!
//! A run opens N WebSocket subscribers (spread over source addresses 127.0.0.2, 127.0.0.3, … so
//! that more connections fit than one address's port range allows), subscribes them with the
//! protocol of the system under test, then runs one or more phases: publishing at a fixed rate,
//! publishing as fast as the subscribers keep up, or publishing nothing (idle memory, or an
//! outside feed). It reports deliveries per second, publish→receive latency percentiles, wire
//! bytes per delivery, connection set-up rate, and the server's RSS and CPU from /proc, as JSON.
//! Subscribers may be spread over several servers (the nodes of a cluster), and the results of
//! several loadgen processes measuring one run can be merged ([`merge`], `loadgen-merge`).
//! See docs/performance.md for the method and the results.

pub mod config;
pub mod decode;
pub mod limit;
pub mod merge;
pub mod payload;
pub mod plan;
pub mod publisher;
pub mod report;
pub mod run;
pub mod stats;
pub mod subscriber;

/// The /proc readers moved to `service_kit::procfs`; re-exported under their old path so
/// that users of `loadgen::procfs` (the soak test) keep working.
pub use service_kit::procfs;

pub use config::{Config, Mode, System};
pub use report::{ConnectReport, Report, RunReport};
pub use run::run;
