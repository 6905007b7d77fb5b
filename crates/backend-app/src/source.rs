//! The two ways of reading the channel, both reconnecting by themselves (through the shared
//! [`service_kit::feed`]) and both reporting through [`SubscriptionEvent`]s on a bounded channel.
//! Either may use TLS (`rediss://`, `wss://`), with the TLS settings made once, at start, by
//! [`Source::prepare`], so a bad CA file stops backend-app at once instead of failing every
//! attempt.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::ready;
use service_kit::feed::{self, MessageSource, Messages};
use service_kit::redis_subscription::{self, SubscriptionEvent};
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::config::SourceUrl;

/// The source, ready to read: its TLS settings made and checked.
pub enum Source {
    /// A Redis client (`redis://`, or `rediss://` with the private CA of `--redis-ca-file`).
    Redis(Box<redis::Client>),
    /// The bridge's URL and the TLS client configuration for `wss://`.
    Bridge(String, Arc<rustls::ClientConfig>),
}

impl Source {
    /// Prepares `source`: a Redis client (trusting `redis_ca_file` when given), or the bridge
    /// with the `tls` client configuration.
    pub fn prepare(
        source: SourceUrl,
        redis_ca_file: Option<&Path>,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        Ok(match source {
            SourceUrl::Redis(url) => Self::Redis(Box::new(service_kit::redis_client::client(
                &url,
                redis_ca_file,
            )?)),
            SourceUrl::Bridge(url) => Self::Bridge(url, tls),
        })
    }
}

/// Starts reading `source`; events arrive on the returned receiver until shutdown.
pub fn spawn(
    source: Source,
    channel: String,
    shutdown: CancellationToken,
) -> (
    mpsc::Receiver<SubscriptionEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(256);
    let task = match source {
        Source::Redis(client) => tokio::spawn(redis_subscription::run_client(
            *client, channel, tx, shutdown,
        )),
        Source::Bridge(url, tls) => {
            let peer = format!("redis-ws-bridge {url}");
            tokio::spawn(feed::run(peer, Bridge { url, tls }, tx, shutdown))
        }
    };
    (rx, task)
}

/// The bridge's WebSocket as a [`MessageSource`]: every text or binary frame is one channel
/// message; a close frame ends the feed.
struct Bridge {
    url: String,
    /// Used for `wss://` URLs (ignored for `ws://`).
    tls: Arc<rustls::ClientConfig>,
}

impl MessageSource for Bridge {
    type Error = tungstenite::Error;

    async fn open(&mut self) -> Result<Messages<Self::Error>, Self::Error> {
        let connector = Connector::Rustls(Arc::clone(&self.tls));
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            self.url.as_str(),
            None,
            false,
            Some(connector),
        )
        .await?;
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
