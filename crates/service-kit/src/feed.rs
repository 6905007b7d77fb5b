//! A reconnecting feed of messages — a Redis subscription, a WebSocket that fans out a channel —
//! reported as [`SubscriptionEvent`]s on a bounded channel.
//!
//! What differs between feeds is only how to open one ([`MessageSource`]); forwarding, telling
//! the consumer about connects and disconnects, and reconnecting with back-off are written once
//! here, on top of [`crate::reconnect`]. The channel is bounded, so a consumer that falls behind
//! slows the reader instead of piling messages up in memory.

use std::fmt::Display;
use std::future::Future;
use std::ops::ControlFlow;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reconnect::{Connector, Reconnect, SessionEnd};

/// What a feed reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// Connected (again): messages follow.
    Connected,
    /// One message, payload unchanged.
    Message(Bytes),
    /// The connection was lost (or could not be made); a reconnect is under way.
    Disconnected,
}

/// The messages of one open feed, until the connection ends (or fails with an error).
pub type Messages<E> = BoxStream<'static, Result<Bytes, E>>;

/// Something that can be opened into a stream of messages, as often as needed.
pub trait MessageSource: Send {
    /// Why opening the feed or reading it failed.
    type Error: Display + Send + 'static;

    /// Connects and subscribes; the stream yields each message as it arrives.
    fn open(&mut self) -> impl Future<Output = Result<Messages<Self::Error>, Self::Error>> + Send;
}

/// Reads `source` (described as `peer` in the logs) until `shutdown` or until the receiver of
/// `events` is dropped, reconnecting with back-off. Never returns an error: outages are retried.
pub async fn run<S: MessageSource>(
    peer: String,
    source: S,
    events: mpsc::Sender<SubscriptionEvent>,
    shutdown: CancellationToken,
) {
    let mut forwarder = Forwarder { source, events };
    Reconnect::new(peer).run(&mut forwarder, &shutdown).await;
}

/// The [`Connector`] behind [`run`]: opens the source and forwards what it yields.
struct Forwarder<S> {
    source: S,
    events: mpsc::Sender<SubscriptionEvent>,
}

impl<S: MessageSource> Forwarder<S> {
    /// Forwards messages until the feed ends (`Lost`) or the receiver is gone (`Finished`).
    async fn forward(&mut self, mut messages: Messages<S::Error>) -> SessionEnd {
        if self
            .events
            .send(SubscriptionEvent::Connected)
            .await
            .is_err()
        {
            return SessionEnd::Finished;
        }
        loop {
            let payload = match messages.next().await {
                Some(Ok(payload)) => payload,
                Some(Err(error)) => return SessionEnd::Lost(error.to_string()),
                None => return SessionEnd::Lost("the feed ended".to_owned()),
            };
            if self
                .events
                .send(SubscriptionEvent::Message(payload))
                .await
                .is_err()
            {
                return SessionEnd::Finished;
            }
        }
    }
}

impl<S: MessageSource> Connector for Forwarder<S> {
    type Connection = Messages<S::Error>;
    type Error = S::Error;

    async fn connect(&mut self) -> Result<Self::Connection, Self::Error> {
        self.source.open().await
    }

    async fn serve(
        &mut self,
        messages: Self::Connection,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => SessionEnd::Finished,
            end = self.forward(messages) => end,
        }
    }

    async fn interrupted(&mut self) -> ControlFlow<()> {
        match self.events.send(SubscriptionEvent::Disconnected).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}
