//! `soak`: an hour of realistic life for topic-server, one node or a cluster, and a verdict.
//!
//! Thousands of WebSocket subscribers (the load generator's own, [`loadgen::subscriber`]) stay
//! connected to a feed of updates over many topics and views; a few percent of them reconnect
//! every minute, some never read at all. Every few seconds the run samples each watched
//! process's resident memory, open descriptors and CPU (from /proc), the topic servers' queued
//! bytes and connections (from `/metrics`), and the delivery rate and latency, into a CSV. At
//! the end every subscriber leaves, and the run fails if a process's memory grew by more than a
//! limit after the warm-up, if a descriptor did not come back, or if deliveries stopped. See
//! docs/reliability.md.

pub mod config;
pub mod feed;
pub mod population;
pub mod record;
pub mod report;
pub mod run;
pub mod sample;
pub mod verdict;

pub use config::Config;
pub use report::Summary;
pub use run::run;
