//! The registry of connected clients and the fan-out to them.
//!
//! The one Redis subscription hands every channel message to [`Hub::broadcast`], which pushes
//! the same (cheaply cloned) WebSocket message onto every client's bounded queue without ever
//! waiting for a client. Connections register on upgrade and unregister when their
//! [`Registration`] drops, which also lets shutdown wait until every connection has ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::{CloseFrame, Message};
use serde::Serialize;
use tokio::sync::watch;

use crate::queue::{ClientQueue, Push, QueueLimits};

/// Counters shown on `/healthz`, updated without locks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Whether the shared subscription is currently subscribed.
    pub redis_connected: AtomicBool,
    /// Client messages published to Redis.
    pub published: AtomicU64,
    /// Client messages that Redis could not take.
    pub publish_failures: AtomicU64,
    /// Channel messages received from Redis.
    pub received: AtomicU64,
    /// Messages queued for clients (one per client per channel message).
    pub delivered: AtomicU64,
    /// Clients closed because their send queue filled up.
    pub slow_clients_closed: AtomicU64,
}

/// A point-in-time copy of the bridge's counters and client count, as served on `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Whether the shared Redis subscription is up.
    pub redis_connected: bool,
    /// Connected WebSocket clients.
    pub clients: usize,
    /// Client messages published to Redis since start.
    pub published: u64,
    /// Client messages Redis could not take since start (each closed its client with 1013).
    pub publish_failures: u64,
    /// Channel messages received from Redis since start.
    pub received: u64,
    /// Messages queued for clients since start.
    pub delivered: u64,
    /// Clients closed as too slow since start.
    pub slow_clients_closed: u64,
}

/// The hub is shutting down and accepts no new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bridge is shutting down")]
pub(crate) struct ShuttingDown;

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    clients: HashMap<u64, Arc<ClientQueue>>,
    closed: bool,
}

/// Every connected client's queue, and the counters.
#[derive(Debug)]
pub(crate) struct Hub {
    limits: QueueLimits,
    registry: Mutex<Registry>,
    /// The client count, so shutdown can wait for zero.
    count: watch::Sender<usize>,
    /// Shared counters.
    pub stats: Stats,
}

impl Hub {
    /// An empty hub whose clients get queues with `limits`.
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            registry: Mutex::new(Registry::default()),
            count: watch::Sender::new(0),
            stats: Stats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Updates are single map operations, so a poisoned registry is still consistent.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a client; it stays registered until the returned handle drops.
    pub(crate) fn register(self: &Arc<Self>) -> Result<Registration, ShuttingDown> {
        let mut registry = self.lock();
        if registry.closed {
            return Err(ShuttingDown);
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let queue = Arc::new(crate::queue::new_queue(self.limits));
        registry.clients.insert(id, Arc::clone(&queue));
        let count = registry.clients.len();
        drop(registry);
        self.count.send_replace(count);
        Ok(Registration {
            hub: Arc::clone(self),
            id,
            queue,
        })
    }

    fn unregister(&self, id: u64) {
        let mut registry = self.lock();
        registry.clients.remove(&id);
        let count = registry.clients.len();
        drop(registry);
        self.count.send_replace(count);
    }

    /// Queues `message` for every client without waiting for any of them; clients whose queue
    /// is full are closed as too slow. Returns how many clients it was queued for.
    pub(crate) fn broadcast(&self, message: &Message) -> usize {
        let mut queued = 0;
        let mut slow = 0;
        {
            let registry = self.lock();
            for queue in registry.clients.values() {
                match queue.push(message.clone()) {
                    Push::Queued => queued += 1,
                    Push::Overflowed => slow += 1,
                    Push::Closed => {}
                }
            }
        }
        self.stats
            .delivered
            .fetch_add(queued as u64, Ordering::Relaxed);
        if slow > 0 {
            tracing::warn!(clients = slow, "closing clients whose send queue is full");
            self.stats
                .slow_clients_closed
                .fetch_add(slow, Ordering::Relaxed);
        }
        queued
    }

    /// Refuses new clients from now on and asks every connected one to close with `frame`.
    pub(crate) fn close_all(&self, frame: &CloseFrame) {
        let mut registry = self.lock();
        registry.closed = true;
        for queue in registry.clients.values() {
            queue.close(frame.clone());
        }
    }

    /// Connected clients.
    pub(crate) fn client_count(&self) -> usize {
        *self.count.borrow()
    }

    /// Completes when no client is connected.
    pub(crate) async fn wait_empty(&self) {
        let mut count = self.count.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// The counters as served on `/healthz`.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            redis_connected: s.redis_connected.load(Ordering::Relaxed),
            clients: self.client_count(),
            published: s.published.load(Ordering::Relaxed),
            publish_failures: s.publish_failures.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            slow_clients_closed: s.slow_clients_closed.load(Ordering::Relaxed),
        }
    }
}

/// A connected client's place in the hub; dropping it unregisters the client.
#[derive(Debug)]
pub(crate) struct Registration {
    hub: Arc<Hub>,
    id: u64,
    queue: Arc<ClientQueue>,
}

impl Registration {
    /// This client's queue.
    pub(crate) fn queue(&self) -> &ClientQueue {
        &self.queue
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close;
    use crate::queue::Closing;

    fn hub(messages: usize) -> Arc<Hub> {
        Arc::new(Hub::new(QueueLimits {
            messages,
            bytes: 1 << 20,
        }))
    }

    #[test]
    fn broadcast_reaches_everyone_and_closes_only_the_full_one() {
        let hub = hub(2);
        let a = hub.register().unwrap();
        let b = hub.register().unwrap();
        let msg = Message::Text("hello".into());
        assert_eq!(hub.broadcast(&msg), 2);
        assert_eq!(hub.broadcast(&msg), 2);
        // b drains, a does not.
        let mut batch = Vec::new();
        assert_eq!(b.queue().take(&mut batch), None);
        assert_eq!(batch.len(), 2);
        assert_eq!(hub.broadcast(&msg), 1);
        assert_eq!(hub.snapshot().slow_clients_closed, 1);
        batch.clear();
        assert_eq!(
            a.queue().take(&mut batch),
            Some(Closing::Send(close::frame(close::SLOW_CLIENT)))
        );
    }

    #[test]
    fn registrations_count_and_shutdown_refuses_newcomers() {
        let hub = hub(4);
        let a = hub.register().unwrap();
        assert_eq!(hub.client_count(), 1);
        hub.close_all(&close::frame(close::SHUTTING_DOWN));
        assert_eq!(hub.register().unwrap_err(), ShuttingDown);
        let mut batch = Vec::new();
        assert_eq!(
            a.queue().take(&mut batch),
            Some(Closing::Send(close::frame(close::SHUTTING_DOWN)))
        );
        drop(a);
        assert_eq!(hub.client_count(), 0);
    }
}
