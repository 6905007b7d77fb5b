//! A read-only look at a running server's outbound queues, for tests and operators.
//!
//! Conflation is only trustworthy if the queues really stay bounded; this is how a test (or a
//! monitoring hook) sees that without reaching into the engine.

use std::sync::Arc;

use service_kit::http_server::ConnectionCount;

use crate::ServerContext;

/// The outbound queues of one server, measured at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Sessions past the handshake (the ones that can subscribe).
    pub sessions: usize,
    /// Bytes queued now, over all those sessions.
    pub queued_bytes: usize,
    /// Bytes queued now in the fullest session's queue.
    pub max_queued_bytes: usize,
    /// The most bytes any one session's queue has held after a push, since the server
    /// started (closed sessions included). Conflation keeps this at or below the queue limit
    /// unless a single message is larger than the limit.
    pub peak_queued_bytes: usize,
    /// Pushes that found a queue over its limit and conflated it.
    pub conflations: u64,
    /// Subscriptions ended by back pressure (`CONFLATION=unsubscribe`).
    pub back_pressure_unsubscriptions: u64,
}

/// A cheap, cloneable handle onto a server's statistics; it stays usable after the server
/// stops.
#[derive(Clone)]
pub struct ServerStats {
    ctx: Arc<ServerContext>,
    connections: ConnectionCount,
}

impl ServerStats {
    pub(crate) fn new(ctx: Arc<ServerContext>, connections: ConnectionCount) -> Self {
        Self { ctx, connections }
    }

    /// TCP connections open now (each counts until its socket is closed).
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// Measures every registered session's outbound queue now.
    pub fn queues(&self) -> QueueStats {
        self.ctx.engine.queue_stats()
    }
}
