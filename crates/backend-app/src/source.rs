//! The two ways of reading the channel, both reconnecting by themselves (through the shared
//! [`service_kit::feed`]) and both reporting through [`SubscriptionEvent`]s on a bounded channel.

use futures_util::StreamExt;
use futures_util::future::ready;
use service_kit::feed::{self, MessageSource, Messages};
use service_kit::redis_subscription::{self, SubscriptionEvent};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
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
        SourceUrl::Bridge(url) => {
            let peer = format!("redis-ws-bridge {url}");
            tokio::spawn(feed::run(peer, Bridge { url }, tx, shutdown))
        }
    };
    (rx, task)
}

/// The bridge's WebSocket as a [`MessageSource`]: every text or binary frame is one channel
/// message; a close frame ends the feed.
struct Bridge {
    url: String,
}

impl MessageSource for Bridge {
    type Error = tungstenite::Error;

    async fn open(&mut self) -> Result<Messages<Self::Error>, Self::Error> {
        let (socket, _) = tokio_tungstenite::connect_async(self.url.as_str()).await?;
        let messages = socket
            .take_while(|frame| ready(!matches!(frame, Ok(Message::Close(_)))))
            .filter_map(|frame| {
                ready(match frame {
                    Ok(Message::Text(text)) => Some(Ok(bytes::Bytes::from(text))),
                    Ok(Message::Binary(data)) => Some(Ok(data)),
                    // Pings are answered by the stream itself; nothing else carries a message.
                    Ok(_) => None,
                    Err(error) => Some(Err(error)),
                })
            });
        Ok(messages.boxed())
    }
}
