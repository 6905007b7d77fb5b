//! One reconnect loop for every long-lived connection: connect, serve until the connection
//! ends, back off (starting over after a connection that worked), again — until cancelled.
//!
//! The Redis subscription, the feeder's sinks, backend-app's bridge reader and its topic-server
//! side all keep a connection up the same way. Each says *how* to connect and *what* to do with a
//! connection by implementing [`Connector`]; [`Reconnect::run`] owns the pacing (a [`Backoff`]),
//! cancellation and the logging of attempts, so none of them writes that loop again.

use std::fmt::Display;
use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Backoff;

/// How a session on a live connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The connection was lost (the text says why, for the log): connect again after a back-off.
    Lost(String),
    /// Nothing more to do — shutdown began, or whoever consumed the connection's output is
    /// gone: the loop returns.
    Finished,
}

/// What a [`Reconnect`] loop keeps connected: how to connect and how to use a connection.
///
/// The futures must be `Send` so the loop can run in a spawned task.
pub trait Connector: Send {
    /// A live connection, made by [`Connector::connect`] and consumed by [`Connector::serve`].
    type Connection: Send;
    /// Why a connection attempt failed (logged, then retried).
    type Error: Display + Send;

    /// One connection attempt. The loop abandons it (drops the future) when cancelled.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Uses `connection` until it ends. It is not raced against `shutdown`, so it can close the
    /// connection gracefully: it must itself return [`SessionEnd::Finished`] soon after
    /// `shutdown` is cancelled.
    fn serve(
        &mut self,
        connection: Self::Connection,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = SessionEnd> + Send;

    /// Runs after every failed attempt and every lost connection, before the back-off: to tell
    /// consumers the connection is down, or to count an undelivered message. `Break` stops the
    /// loop. The default does nothing.
    fn interrupted(&mut self) -> impl Future<Output = ControlFlow<()>> + Send {
        async { ControlFlow::Continue(()) }
    }

    /// Waits out one back-off delay. The default sleeps; a connector that must keep reading
    /// something meanwhile (say, a source whose latest message it keeps) overrides it.
    fn pause(&mut self, delay: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(delay)
    }
}

/// The loop: "connect → serve until it ends → back off → again", for one named peer.
#[derive(Debug, Clone)]
pub struct Reconnect {
    peer: String,
    backoff: Backoff,
}

impl Reconnect {
    /// A loop for `peer` (a description for the logs, such as a URL) with the default
    /// [`Backoff::reconnect`] pacing.
    pub fn new(peer: impl Into<String>) -> Self {
        Self {
            peer: peer.into(),
            backoff: Backoff::reconnect(),
        }
    }

    /// The same loop paced by `backoff` instead (tests use short delays).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Keeps `connector` connected until `shutdown` is cancelled, a session ends with
    /// [`SessionEnd::Finished`] or [`Connector::interrupted`] says `Break`.
    ///
    /// Every failure is retried after the back-off's next delay; a connection that was made
    /// resets the back-off, so a peer that comes back after a long outage is found at once the
    /// next time. The first failure of a run of failures is logged as a warning, the rest at
    /// debug level, so an outage does not flood the log.
    pub async fn run<C: Connector>(mut self, connector: &mut C, shutdown: &CancellationToken) {
        let peer = self.peer.as_str();
        // Attempts that failed since the last connection that worked.
        let mut failed_attempts: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let connected = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                connected = connector.connect() => connected,
            };
            match connected {
                Ok(connection) => {
                    if failed_attempts == 0 {
                        tracing::info!(peer, "connected");
                    } else {
                        tracing::info!(peer, failed_attempts, "connected again");
                    }
                    failed_attempts = 0;
                    self.backoff.reset();
                    match connector.serve(connection, shutdown).await {
                        SessionEnd::Finished => return,
                        SessionEnd::Lost(_) if shutdown.is_cancelled() => return,
                        SessionEnd::Lost(reason) => {
                            tracing::warn!(peer, %reason, "connection lost; reconnecting");
                        }
                    }
                }
                Err(error) => {
                    failed_attempts = failed_attempts.saturating_add(1);
                    if failed_attempts == 1 {
                        tracing::warn!(peer, %error, "cannot connect; retrying with back-off");
                    } else {
                        tracing::debug!(peer, %error, failed_attempts, "still cannot connect");
                    }
                }
            }
            let flow = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                flow = connector.interrupted() => flow,
            };
            if flow.is_break() {
                return;
            }
            let delay = self.backoff.next_delay();
            tracing::debug!(peer, ?delay, "backing off before reconnecting");
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                () = connector.pause(delay) => {}
            }
        }
    }
}
