//! One Redis subscription that survives Redis restarts.
//!
//! A plain redis-rs pub/sub connection does not reconnect by itself; [`run`] opens one as a
//! [`crate::feed`] source, so it connects, subscribes, forwards every message, and on any failure
//! waits (with back-off) and starts over, until shutdown. Consumers receive
//! [`SubscriptionEvent`]s on a bounded channel, so a consumer that falls behind slows this reader
//! (and Redis's own output-buffer limit protects Redis).

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::feed::SubscriptionEvent;
use crate::feed::{self, MessageSource, Messages};

/// Runs the subscription until shutdown, sending events to `events`. Returns when shutdown
/// begins or when the receiver is dropped. Never returns an error: Redis outages are retried.
pub async fn run(
    redis_url: String,
    channel: String,
    events: mpsc::Sender<SubscriptionEvent>,
    shutdown: CancellationToken,
) {
    // The URL may carry a password: the logs name the channel only.
    let peer = format!("redis channel {channel}");
    feed::run(peer, RedisChannel { redis_url, channel }, events, shutdown).await;
}

/// A Redis channel as a [`MessageSource`]: each open is a new connection and SUBSCRIBE.
struct RedisChannel {
    redis_url: String,
    channel: String,
}

impl MessageSource for RedisChannel {
    type Error = redis::RedisError;

    async fn open(&mut self) -> Result<Messages<Self::Error>, Self::Error> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        // The stream owns the whole PubSub (not only its message half), so the connection lives
        // exactly as long as the stream.
        let messages = futures_util::stream::unfold(pubsub, |mut pubsub| async move {
            let message = pubsub.on_message().next().await?;
            let payload = Bytes::copy_from_slice(message.get_payload_bytes());
            Some((Ok(payload), pubsub))
        });
        Ok(messages.boxed())
    }
}
