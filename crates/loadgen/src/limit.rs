//! The `limit` server: the ceiling for fan-out on this machine.
//!
//! It does nothing but what every fan-out server must do: take a message from its publisher
//! connection (`/publish`), keep it once as shared bytes, and write it to every other
//! connection. Writers (service-kit's shared batching writer, draining a cursor into the log)
//! pack whatever has queued up into `\n`-separated frames of at most `max_frame_bytes` (as the
//! topic server does when a subscriber is backlogged), feed them all and flush once. No parsing, no topics, no per-client state beyond a position in the log.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use diffusion_core::protocol::pack_frames;
use futures_util::{SinkExt, StreamExt};
use service_kit::outbound::{self, Drain};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

/// Settings of the limit server.
#[derive(Debug, Clone, Args)]
pub struct LimitConfig {
    /// Address to listen on (WebSocket: `/` subscribes, `/publish` publishes).
    #[arg(long, env = "LIMIT_LISTEN", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,

    /// Largest frame built when packing queued messages (a larger message goes alone).
    #[arg(long, env = "LIMIT_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Messages kept for writers that are behind; a writer further behind skips ahead (and the
    /// skipped messages are counted, never silently lost).
    #[arg(long, env = "LIMIT_LOG_MESSAGES", default_value_t = 4096)]
    pub log_messages: usize,

    /// WebSocket read buffer per connection, in bytes. Small by default: subscribers send almost
    /// nothing, and this buffer is most of a connection's memory (tungstenite's default is
    /// 128 KiB).
    #[arg(long, env = "LIMIT_READ_BUFFER_BYTES", default_value_t = 4 * 1024)]
    pub read_buffer_bytes: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            max_frame_bytes: 64 * 1024,
            log_messages: 4096,
            read_buffer_bytes: 4 * 1024,
        }
    }
}

/// The last messages published, numbered from 1.
#[derive(Debug, Default)]
struct Log {
    /// Sequence number of `messages[0]`.
    first: u64,
    messages: VecDeque<Bytes>,
}

/// What every connection shares.
#[derive(Debug)]
struct Hub {
    log: Mutex<Log>,
    /// The newest sequence number; writers wait on changes.
    latest: watch::Sender<u64>,
    capacity: usize,
    max_frame_bytes: usize,
    skipped: AtomicU64,
    subscribers: AtomicU64,
    read_buffer_bytes: usize,
}

impl Hub {
    fn publish(&self, message: Bytes) {
        let newest = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if log.messages.is_empty() {
                log.first = *self.latest.borrow() + 1;
            }
            log.messages.push_back(message);
            while log.messages.len() > self.capacity {
                log.messages.pop_front();
                log.first += 1;
            }
            log.first + log.messages.len() as u64 - 1
        };
        self.latest.send_replace(newest);
    }

    /// Messages from `next` on; returns them and the next position.
    fn since(&self, next: u64, out: &mut Vec<Bytes>) -> u64 {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let end = log.first + log.messages.len() as u64;
        let start = if next < log.first {
            self.skipped.fetch_add(log.first - next, Ordering::Relaxed);
            log.first
        } else {
            next
        };
        let skip = usize::try_from(start.saturating_sub(log.first)).unwrap_or(usize::MAX);
        out.extend(log.messages.iter().skip(skip).cloned());
        end.max(next)
    }
}

/// A bound limit server.
#[derive(Debug)]
pub struct LimitServer {
    listener: TcpListener,
    hub: Arc<Hub>,
}

/// Binds the listening socket.
pub async fn bind(config: LimitConfig) -> anyhow::Result<LimitServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let (latest, _) = watch::channel(0);
    Ok(LimitServer {
        listener,
        hub: Arc::new(Hub {
            log: Mutex::new(Log::default()),
            latest,
            capacity: config.log_messages.max(1),
            max_frame_bytes: config.max_frame_bytes.max(1),
            skipped: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            read_buffer_bytes: config.read_buffer_bytes,
        }),
    })
}

fn server_websocket_config(read_buffer_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes.max(256))
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024))
}

impl LimitServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Accepts connections until shutdown, then waits for every connection to close.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let hub = self.hub.clone();
                        let shutdown = shutdown.clone();
                        connections.spawn(serve(stream, hub, shutdown));
                    }
                    // Out of file descriptors, say: keep serving the connections we have.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = shutdown.cancelled() => break,
            }
        }
        while connections.join_next().await.is_some() {}
        let skipped = self.hub.skipped.load(Ordering::Relaxed);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "messages skipped by writers that fell behind the log"
            );
        }
        Ok(())
    }
}

async fn serve(stream: TcpStream, hub: Arc<Hub>, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The signature is tungstenite's callback type; its error variant is large by design.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(server_websocket_config(hub.read_buffer_bytes)),
    )
    .await
    {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
    };
    if path == "/publish" {
        publish_loop(ws, &hub, shutdown).await;
    } else {
        hub.subscribers.fetch_add(1, Ordering::Relaxed);
        subscriber_loop(ws, &hub, shutdown).await;
        hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn publish_loop(
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    hub: &Hub,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => hub.publish(Bytes::from(text)),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            () = shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}

/// Writes the log to one subscriber with the shared batching writer until it closes, the
/// server shuts down (a close frame goes out) or a write fails; its reads only notice a close.
async fn subscriber_loop(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    hub: &Hub,
    shutdown: CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let mut latest = hub.latest.subscribe();
    let next = *latest.borrow_and_update() + 1;
    let mut cursor = Cursor {
        hub,
        latest,
        next,
        shutdown: &shutdown,
    };
    let mut batch = Vec::new();
    let max_frame_bytes = hub.max_frame_bytes;
    let pack = |messages: &mut Vec<Bytes>, frames: &mut Vec<Message>| {
        frames.extend(
            pack_frames(messages.drain(..), max_frame_bytes)
                .into_iter()
                // Every message came in as a text frame, so the packed frame is UTF-8 too.
                .filter_map(|frame| Utf8Bytes::try_from(frame).ok())
                .map(Message::Text),
        );
    };
    let writer = outbound::run_writer(&mut sink, &mut cursor, &mut batch, pack);
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                return;
            }
        }
    };
    let end = tokio::select! {
        end = writer => Some(end),
        () = reader => None,
    };
    if let Some(outbound::WriterEnd::Closing(LogEnd::Shutdown)) = end {
        let _ = sink.send(Message::Close(None)).await;
    }
}

/// Why a subscriber's [`Cursor`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogEnd {
    /// The server is shutting down: send a close frame.
    Shutdown,
    /// The hub is gone.
    HubGone,
}

/// One subscriber's position in the shared log, drained by the shared writer: a batch is every
/// message published since the last one (a writer that fell behind skips ahead, counted).
struct Cursor<'a> {
    hub: &'a Hub,
    latest: watch::Receiver<u64>,
    /// The sequence number of the next message to write.
    next: u64,
    shutdown: &'a CancellationToken,
}

impl Drain for Cursor<'_> {
    type Item = Bytes;
    type Closing = LogEnd;

    async fn next_batch(&mut self, batch: &mut Vec<Bytes>) -> Option<LogEnd> {
        loop {
            tokio::select! {
                changed = self.latest.changed() => if changed.is_err() {
                    return Some(LogEnd::HubGone);
                },
                () = self.shutdown.cancelled() => return Some(LogEnd::Shutdown),
            }
            self.next = self.hub.since(self.next, batch);
            if !batch.is_empty() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(capacity: usize) -> Hub {
        let (latest, _) = watch::channel(0);
        Hub {
            log: Mutex::new(Log::default()),
            latest,
            capacity,
            max_frame_bytes: 1024,
            skipped: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            read_buffer_bytes: 4096,
        }
    }

    #[test]
    fn writers_get_what_they_have_not_seen() {
        let hub = hub(3);
        let mut out = Vec::new();
        hub.publish(Bytes::from_static(b"a"));
        hub.publish(Bytes::from_static(b"b"));
        let next = hub.since(1, &mut out);
        assert_eq!(
            out,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert_eq!(next, 3);
        out.clear();
        assert_eq!(hub.since(3, &mut out), 3);
        assert!(out.is_empty());
    }

    #[test]
    fn a_writer_that_fell_behind_skips_and_is_counted() {
        let hub = hub(2);
        for m in ["a", "b", "c", "d"] {
            hub.publish(Bytes::from(m));
        }
        let mut out = Vec::new();
        assert_eq!(hub.since(1, &mut out), 5);
        assert_eq!(
            out,
            vec![Bytes::from_static(b"c"), Bytes::from_static(b"d")]
        );
        assert_eq!(hub.skipped.load(Ordering::Relaxed), 2);
    }
}
