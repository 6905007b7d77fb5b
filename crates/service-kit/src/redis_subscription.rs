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
    let client = ClientSource::Url(redis_url);
    run_source(client, channel, events, shutdown).await;
}

/// [`run`] with a client made beforehand, e.g. by [`crate::redis_client::client`] for a
/// `rediss://` server with a private CA.
pub async fn run_client(
    client: redis::Client,
    channel: String,
    events: mpsc::Sender<SubscriptionEvent>,
    shutdown: CancellationToken,
) {
    run_source(
        ClientSource::Client(Box::new(client)),
        channel,
        events,
        shutdown,
    )
    .await;
}

async fn run_source(
    client: ClientSource,
    channel: String,
    events: mpsc::Sender<SubscriptionEvent>,
    shutdown: CancellationToken,
) {
    // The URL may carry a password: the logs name the channel only.
    let peer = format!("redis channel {channel}");
    feed::run(peer, RedisChannel { client, channel }, events, shutdown).await;
}

/// How the subscription gets its client: parsed from the URL at every attempt (so a bad URL is
/// logged and retried like an outage), or made beforehand.
enum ClientSource {
    Url(String),
    Client(Box<redis::Client>),
}

/// A Redis channel as a [`MessageSource`]: each open is a new connection and SUBSCRIBE.
struct RedisChannel {
    client: ClientSource,
    channel: String,
}

impl MessageSource for RedisChannel {
    type Error = redis::RedisError;

    async fn open(&mut self) -> Result<Messages<Self::Error>, Self::Error> {
        let client = match &self.client {
            ClientSource::Url(url) => redis::Client::open(url.as_str())?,
            ClientSource::Client(client) => (**client).clone(),
        };
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
