//! One Redis subscription that survives Redis restarts.
//!
//! A plain redis-rs pub/sub connection does not reconnect by itself; this loop connects,
//! subscribes, forwards every message, and on any failure waits (with back-off) and starts over,
//! until shutdown. Consumers receive [`SubscriptionEvent`]s on a bounded channel, so a consumer
//! that falls behind slows this reader (and Redis's own output-buffer limit protects Redis).

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;

use crate::Backoff;

/// What the subscription loop reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// Subscribed (again) to the channel.
    Connected,
    /// One message published on the channel, payload unchanged.
    Message(Bytes),
    /// The connection was lost; a reconnect is under way.
    Disconnected,
}

/// Runs the subscription until shutdown, sending events to `events`. Returns when shutdown
/// begins or when the receiver is dropped. Never returns an error: Redis outages are retried.
pub async fn run(
    redis_url: String,
    channel: String,
    events: mpsc::Sender<SubscriptionEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let session = subscribe_once(&redis_url, &channel, &events, &mut backoff);
        let outcome = tokio::select! {
            outcome = session => outcome,
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(()) => tracing::warn!(channel, "redis subscription ended; reconnecting"),
            Err(error) => {
                tracing::warn!(channel, %error, "redis subscription failed; reconnecting")
            }
        }
        if events.send(SubscriptionEvent::Disconnected).await.is_err() {
            return;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn subscribe_once(
    redis_url: &str,
    channel: &str,
    events: &mpsc::Sender<SubscriptionEvent>,
    backoff: &mut Backoff,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(redis_url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    tracing::info!(channel, "subscribed to redis channel");
    backoff.reset();
    if events.send(SubscriptionEvent::Connected).await.is_err() {
        return Ok(());
    }
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload = Bytes::copy_from_slice(message.get_payload_bytes());
        if events
            .send(SubscriptionEvent::Message(payload))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
