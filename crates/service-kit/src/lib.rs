//! `service-kit`: the runtime plumbing every binary of the platform shares, written once.
//!
//! Logging set-up (`--log-format text|json`, `RUST_LOG`), graceful shutdown on SIGINT/SIGTERM,
//! exponential back-off and the one reconnect loop built on it ([`reconnect`]), reconnecting
//! message feeds ([`feed`]) such as the Redis subscription that both the WebSocket bridge and the
//! backend app consume, listening sockets with a configurable accept backlog ([`listener`]), a connection's bounded outbound queue and batching writer ([`outbound`]),
//! TLS for servers and clients ([`tls`]), `redis://`/`rediss://` clients ([`redis_client`]),
//! shared secrets compared in constant time ([`secret`]), browser origin allow-lists
//! ([`origins`]), a process's memory, CPU and state from `/proc` ([`procfs`]), and the test
//! harness that starts a private `redis-server` on a free loopback port.

pub mod backoff;
pub mod feed;
pub mod flags;
pub mod http_server;
pub mod listener;
pub mod logging;
pub mod metrics_text;
pub mod origins;
pub mod outbound;
pub mod procfs;
pub mod reconnect;
pub mod redis_client;
pub mod redis_subscription;
pub mod secret;
pub mod shutdown;
/// Test harnesses (a private redis-server, waiting for conditions): only with the `testing`
/// feature, which tests enable, so release binaries carry none of it.
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use backoff::Backoff;
pub use logging::{LogArgs, LogFormat};
pub use reconnect::{Connector, Reconnect, SessionEnd};

/// What every binary does first: install logging as its flags say and arrange for SIGINT and
/// SIGTERM to cancel the returned token. Must run inside the tokio runtime.
pub fn start_process(log: &LogArgs) -> tokio_util::sync::CancellationToken {
    logging::init(log.log_format);
    tls::install_default_provider();
    let shutdown = tokio_util::sync::CancellationToken::new();
    shutdown::cancel_on_os_signal(&shutdown);
    shutdown
}
