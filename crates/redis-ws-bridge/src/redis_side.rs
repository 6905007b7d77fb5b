//! Everything that talks to Redis: one shared publishing connection, and the one shared
//! subscription whose messages the hub fans out.
//!
//! The publisher is a lazily connecting `ConnectionManager` (one multiplexed connection shared by
//! every client, re-established after a Redis restart), so the bridge starts and serves clients
//! even while Redis is down. The subscription is `service_kit::redis_subscription::run`, which
//! reconnects with back-off and resubscribes by itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use service_kit::redis_subscription::{self, SubscriptionEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Longest a batch of PUBLISHes may take before the client is told Redis is unavailable.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Events buffered between the subscription reader and the fan-out. The fan-out never waits on
/// clients, so this only absorbs scheduling jitter.
const SUBSCRIPTION_BUFFER: usize = 1024;

/// Why a client's message could not be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// Redis refused the command or the connection failed.
    #[error("redis publish failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis publish timed out after {0:?}")]
    Timeout(Duration),
}

/// Publishes client messages to the channel over one shared, self-healing connection.
#[derive(Clone)]
pub(crate) struct Publisher {
    connection: ConnectionManager,
    channel: Arc<str>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for `channel` through `client`. Does not connect yet: the first publish
    /// does, so the bridge can start while Redis is down.
    pub(crate) fn new(client: redis::Client, channel: &str) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            // Fail fast while Redis is down: the client is told at once, and the next publish
            // tries again.
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(PUBLISH_TIMEOUT));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            channel: Arc::from(channel),
        })
    }

    /// PUBLISHes every payload to the channel, in order, in one pipelined round trip.
    pub(crate) async fn publish_all(&self, payloads: &[Bytes]) -> Result<(), PublishError> {
        let mut pipeline = redis::pipe();
        for payload in payloads {
            pipeline
                .cmd("PUBLISH")
                .arg(&*self.channel)
                .arg(payload.as_ref())
                .ignore();
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(PUBLISH_TIMEOUT, pipeline.query_async::<()>(&mut connection))
            .await
        {
            Ok(result) => Ok(result?),
            Err(_) => Err(PublishError::Timeout(PUBLISH_TIMEOUT)),
        }
    }
}

/// Turns one channel payload into the WebSocket message every client gets: a text message when
/// the payload is UTF-8 (the normal case: JSON), otherwise a binary message with the bytes
/// unchanged. Built once per channel message; cloning it for each client only bumps a refcount.
pub(crate) fn to_ws_message(payload: Bytes) -> Message {
    match Utf8Bytes::try_from(payload.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(payload),
    }
}

/// Starts the one shared subscription and the task that fans its messages out through `hub`.
/// Both end when `shutdown` fires; the returned handle completes when they have.
pub(crate) fn spawn_subscription(
    client: redis::Client,
    channel: String,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (events_tx, events_rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
    let subscription = tokio::spawn(redis_subscription::run_client(
        client, channel, events_tx, shutdown,
    ));
    tokio::spawn(async move {
        fan_out(events_rx, &hub).await;
        hub.stats.redis_connected.store(false, Ordering::Relaxed);
        if let Err(error) = subscription.await {
            tracing::error!(%error, "redis subscription task failed");
        }
    })
}

/// Applies subscription events to the hub until the subscription ends.
async fn fan_out(mut events: mpsc::Receiver<SubscriptionEvent>, hub: &Hub) {
    while let Some(event) = events.recv().await {
        match event {
            SubscriptionEvent::Connected => {
                hub.stats.redis_connected.store(true, Ordering::Relaxed);
            }
            SubscriptionEvent::Disconnected => {
                hub.stats.redis_connected.store(false, Ordering::Relaxed);
            }
            SubscriptionEvent::Message(payload) => {
                hub.stats.received.fetch_add(1, Ordering::Relaxed);
                hub.broadcast(&to_ws_message(payload));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_becomes_text_and_shares_the_buffer() {
        let payload = Bytes::from_static(b"{\"a\":1}");
        match to_ws_message(payload.clone()) {
            Message::Text(text) => {
                assert_eq!(text.as_str(), "{\"a\":1}");
                assert_eq!(text.as_ptr(), payload.as_ptr());
            }
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn non_utf8_becomes_binary_unchanged() {
        let payload = Bytes::from_static(&[0xff, 0x00, 0xfe]);
        assert_eq!(to_ws_message(payload.clone()), Message::Binary(payload));
    }
}
