//! The two ways of reading the channel, both reconnecting by themselves and both reporting
//! through [`SubscriptionEvent`]s on a bounded channel.

use futures_util::StreamExt;
use service_kit::Backoff;
use service_kit::redis_subscription::{self, SubscriptionEvent};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::SourceUrl;

/// Starts reading `source`; events arrive on the returned receiver until shutdown.
pub fn spawn(
    source: SourceUrl,
    channel: String,
    shutdown: CancellationToken,
) -> (
    mpsc::Receiver<SubscriptionEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(256);
    let task = match source {
        SourceUrl::Redis(url) => tokio::spawn(redis_subscription::run(url, channel, tx, shutdown)),
        SourceUrl::Bridge(url) => tokio::spawn(read_bridge(url, tx, shutdown)),
    };
    (rx, task)
}

/// Reads the bridge's WebSocket, reconnecting with back-off, until shutdown or until the
/// receiver is gone.
async fn read_bridge(
    url: String,
    events: mpsc::Sender<SubscriptionEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    loop {
        let attempt = async {
            let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
            tracing::info!(%url, "connected to redis-ws-bridge");
            backoff.reset();
            if events.send(SubscriptionEvent::Connected).await.is_err() {
                return Ok(());
            }
            while let Some(frame) = socket.next().await {
                let payload = match frame? {
                    Message::Text(text) => bytes::Bytes::from(text),
                    Message::Binary(data) => data,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if events
                    .send(SubscriptionEvent::Message(payload))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok::<(), tokio_tungstenite::tungstenite::Error>(())
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(()) => tracing::warn!(%url, "bridge connection closed; reconnecting"),
            Err(error) => tracing::warn!(%url, %error, "bridge connection failed; reconnecting"),
        }
        if events.send(SubscriptionEvent::Disconnected).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {},
            _ = shutdown.cancelled() => return,
        }
    }
}
