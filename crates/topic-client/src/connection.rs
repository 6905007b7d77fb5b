//! One WebSocket connection to the topic server: the handshake, the reader task that routes
//! replies and subscription messages, and the writer task that batches outgoing frames.
//!
//! The tasks share a [`Shared`] (pending requests by cid, and the "closed" flag). Whichever side
//! notices the connection is gone calls [`Shared::shut_down`]: every waiting request then fails
//! with [`ClientError::Closed`] and the other task stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diffusion_core::protocol::{
    ClientMessage, PROTOCOL_VERSION_1, ServerMessage, decode_server_message, split_frame,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::events::{TopicEvent, TopicTable};

/// The socket type this client uses.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Most outgoing frames the writer feeds before one flush.
const WRITE_BATCH: usize = 64;

/// How long the writer tries to send a farewell close frame once every handle is dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(2);

type PendingMap = HashMap<u64, oneshot::Sender<ServerMessage>>;

/// State shared by the client handle, the reader task and the writer task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Requests waiting for their reply; `None` once the connection is closed, so late
    /// registrations fail at once instead of waiting for their timeout.
    pending: Mutex<Option<PendingMap>>,
    /// Becomes `true` exactly once, when the connection is gone.
    closed: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            pending: Mutex::new(Some(HashMap::new())),
            closed: watch::Sender::new(false),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<PendingMap>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a request; its reply (or `error`) will be delivered to the returned receiver.
    pub(crate) fn register(
        &self,
        cid: u64,
    ) -> Result<oneshot::Receiver<ServerMessage>, ClientError> {
        let mut guard = self.pending();
        let map = guard.as_mut().ok_or(ClientError::Closed)?;
        let (tx, rx) = oneshot::channel();
        map.insert(cid, tx);
        Ok(rx)
    }

    /// Forgets a request that timed out or was cancelled, so the map does not grow.
    pub(crate) fn forget(&self, cid: u64) {
        if let Some(map) = self.pending().as_mut() {
            map.remove(&cid);
        }
    }

    /// Hands a reply to the request waiting for it.
    fn deliver(&self, cid: u64, reply: ServerMessage) {
        let waiter = self.pending().as_mut().and_then(|map| map.remove(&cid));
        match waiter {
            // The requester may have timed out meanwhile; nothing to do then.
            Some(tx) => drop(tx.send(reply)),
            None => tracing::debug!(cid, "reply for a request nobody is waiting for"),
        }
    }

    /// Marks the connection closed and fails every waiting request.
    pub(crate) fn shut_down(&self) {
        let waiters = self.pending().take();
        drop(waiters);
        self.closed.send_replace(true);
    }

    /// True once the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A receiver that observes the closed flag.
    pub(crate) fn closed_watch(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// Waits until the watched closed flag is set (or its sender is gone, which also means closed).
pub(crate) async fn wait_closed(mut closed: watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

/// What the handshake produced.
pub(crate) struct Established {
    pub(crate) socket: Socket,
    pub(crate) session: String,
    /// Messages the server packed into the same frame after `connected`.
    pub(crate) leftover: Vec<ServerMessage>,
}

/// Dials `url` and performs the `connect` / `connected` handshake, each step bounded by `timeout`.
pub(crate) async fn establish(
    url: &str,
    connect: ClientMessage,
    timeout: Duration,
    max_message_size: usize,
) -> Result<Established, ClientError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    let dial = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (mut socket, _response) = tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(|source| ClientError::Connect {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    let text = serde_json::to_string(&connect).map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::time::timeout(timeout, async {
        socket
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Handshake(format!("cannot send connect: {e}")))?;
        let frame = first_text_frame(&mut socket).await?;
        let mut messages = split_frame(&frame).map(decode_server_message);
        let first = messages
            .next()
            .ok_or_else(|| ClientError::Handshake("empty reply to connect".to_owned()))?
            .map_err(|e| ClientError::Handshake(format!("unreadable reply to connect: {e}")))?;
        let session = match first {
            ServerMessage::Connected { version, session, .. } if version == PROTOCOL_VERSION_1 => session,
            ServerMessage::Connected { version, .. } => {
                return Err(ClientError::Handshake(format!(
                    "server speaks protocol version {version}, this client {PROTOCOL_VERSION_1}"
                )));
            }
            ServerMessage::Error { code, message, .. } => {
                return Err(ClientError::Server { code, message });
            }
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected 'connected', got {}",
                    message_kind(&other)
                )));
            }
        };
        let leftover = messages.collect::<Result<Vec<_>, _>>().map_err(|e| {
            ClientError::Protocol(format!("unreadable message after connected: {e}"))
        })?;
        Ok(Established {
            socket,
            session,
            leftover,
        })
    })
    .await
    .map_err(|_| ClientError::Timeout(timeout))?
}

async fn first_text_frame(socket: &mut Socket) -> Result<String, ClientError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(_))) => {
                return Err(ClientError::Handshake(
                    "server sent a binary frame".to_owned(),
                ));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(ClientError::Handshake(
                    "server closed the connection during the handshake".to_owned(),
                ));
            }
            Some(Ok(Message::Frame(_))) => {}
            Some(Err(e)) => return Err(ClientError::Handshake(e.to_string())),
        }
    }
}

/// A short name for a message type, for error messages.
pub(crate) fn message_kind(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Connected { .. } => "connected",
        ServerMessage::Ok { .. } => "ok",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Subscribed { .. } => "subscribed",
        ServerMessage::Value { .. } => "value",
        ServerMessage::Unsubscribed { .. } => "unsubscribed",
        ServerMessage::Fetched { .. } => "fetched",
        ServerMessage::Pong { .. } => "pong",
        ServerMessage::Views { .. } => "views",
        ServerMessage::Delta { .. } => "delta",
        ServerMessage::Heartbeat => "heartbeat",
    }
}

/// Reads frames until the connection ends: replies go to their waiting request, subscription
/// messages become events. Sending an event waits for room in the bounded channel, so a slow
/// application stops this task reading, and TCP flow control pushes back on the server.
pub(crate) async fn read_loop(
    mut stream: SplitStream<Socket>,
    shared: Arc<Shared>,
    events: mpsc::Sender<TopicEvent>,
    leftover: Vec<ServerMessage>,
    table: TopicTable,
) {
    let mut dispatcher = Dispatcher {
        shared: &shared,
        events,
        table,
        closed: shared.closed_watch(),
    };
    for message in leftover {
        if !dispatcher.dispatch(message).await {
            shared.shut_down();
            return;
        }
    }
    loop {
        let frame = tokio::select! {
            biased;
            () = wait_closed(dispatcher.closed.clone()) => break,
            frame = stream.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                for raw in split_frame(text.as_str()) {
                    match decode_server_message(raw) {
                        Ok(message) => {
                            if !dispatcher.dispatch(message).await {
                                shared.shut_down();
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, message = raw, "ignoring unreadable server message")
                        }
                    }
                }
            }
            Some(Ok(Message::Binary(_))) => tracing::warn!("ignoring unexpected binary frame"),
            // Pings are answered by the WebSocket layer; after a close frame the stream ends
            // by itself once the close handshake is done.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "topic server connection failed");
                break;
            }
            None => break,
        }
    }
    tracing::debug!("topic server connection closed");
    shared.shut_down();
}

/// The reader's routing state: where replies go, where events go, and the topic table.
struct Dispatcher<'a> {
    shared: &'a Shared,
    events: mpsc::Sender<TopicEvent>,
    table: TopicTable,
    closed: watch::Receiver<bool>,
}

impl Dispatcher<'_> {
    /// Handles one message; `false` means the connection was closed while waiting.
    async fn dispatch(&mut self, message: ServerMessage) -> bool {
        match message {
            ServerMessage::Ok { cid }
            | ServerMessage::Pong { cid }
            | ServerMessage::Views { cid, .. }
            | ServerMessage::Fetched { cid, .. } => {
                self.shared.deliver(cid, message);
            }
            ServerMessage::Error { cid: Some(cid), .. } => self.shared.deliver(cid, message),
            ServerMessage::Error {
                cid: None,
                code,
                message,
            } => {
                tracing::warn!(?code, %message, "server reported an error for an unidentified request");
            }
            ServerMessage::Connected { .. } => tracing::warn!("ignoring a second 'connected'"),
            other => {
                if let Some(event) = self.table.apply(other) {
                    tokio::select! {
                        biased;
                        () = wait_closed(self.closed.clone()) => return false,
                        // An error means the application closed or dropped the event stream; keep
                        // serving replies.
                        _ = self.events.send(event) => {}
                    }
                }
            }
        }
        true
    }
}

/// Writes queued frames, feeding up to [`WRITE_BATCH`] before each flush. Ends when the
/// connection closes, or — after sending a close frame — when every client handle is dropped.
pub(crate) async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    mut outgoing: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
) {
    let closed = shared.closed_watch();
    loop {
        let first = tokio::select! {
            biased;
            () = wait_closed(closed.clone()) => break,
            next = outgoing.recv() => next,
        };
        let Some(first) = first else {
            let farewell = sink.send(Message::Close(None));
            let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, farewell).await;
            shared.shut_down();
            break;
        };
        let mut batch = Some(first);
        let mut fed = 0;
        let mut failed = None;
        while let Some(message) = batch.take() {
            if let Err(e) = sink.feed(message).await {
                failed = Some(e);
                break;
            }
            fed += 1;
            if fed < WRITE_BATCH {
                batch = outgoing.try_recv().ok();
            }
        }
        if failed.is_none() {
            failed = sink.flush().await.err();
        }
        if let Some(e) = failed {
            tracing::debug!(error = %e, "writing to the topic server failed");
            shared.shut_down();
            break;
        }
    }
}
