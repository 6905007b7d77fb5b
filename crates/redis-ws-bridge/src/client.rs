//! One WebSocket connection: a reader that publishes the client's text frames to Redis, and a
//! writer that drains the client's queue onto the socket.
//!
//! Both run in the connection's task. The reader publishes what the client has sent so far as
//! one pipelined batch and waits for Redis before reading on, so a client's messages reach Redis
//! in the order it sent them and a client that sends faster than Redis accepts is slowed down by
//! TCP back-pressure rather than buffered. The writer (service-kit's shared one) takes everything
//! queued, feeds it all, and flushes once. Any close the bridge decides on (slow client, oversize
//! or binary message, Redis unavailable, shutdown) goes through the queue, so the writer is the
//! only place that sends close frames.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, StreamExt};
use service_kit::outbound;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use crate::close;
use crate::hub::Hub;
use crate::queue::{ClientQueue, Closing};
use crate::redis_side::Publisher;

/// How long the bridge keeps trying to deliver a close frame (after what was still queued)
/// before dropping the connection.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the bridge then waits for the client to answer the close handshake.
pub(crate) const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Most client messages published in one pipelined round trip.
const PUBLISH_BATCH: usize = 256;

/// What one connection needs from the bridge.
#[derive(Debug, Clone)]
pub(crate) struct ClientContext {
    /// The registry and counters.
    pub hub: Arc<Hub>,
    /// The shared Redis publisher.
    pub publisher: Publisher,
    /// The configured message size limit, quoted in the 1009 close reason.
    pub max_message_bytes: usize,
    /// Whether this connection's text messages are published.
    pub publish: Publish,
}

/// Whether a connection may publish, and if not, why not (its close frame says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// The client presented the publish token.
    Allowed,
    /// The bridge has a publish token and the client did not present it.
    NeedsToken,
    /// The bridge has no publish token: nobody publishes.
    ReadOnlyBridge,
}

impl Publish {
    /// The close frame for a text message this connection may not publish, if any.
    fn refusal(self) -> Option<(u16, &'static str)> {
        match self {
            Self::Allowed => None,
            Self::NeedsToken => Some(close::PUBLISH_NEEDS_TOKEN),
            Self::ReadOnlyBridge => Some(close::BRIDGE_READ_ONLY),
        }
    }
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    /// A close frame went out, or the client closed first: the close handshake may still need
    /// the reader (which answers the client's close and reads its reply).
    Closing,
    /// The socket failed or would not take the close frame in time: drop the connection now.
    GaveUp,
}

/// Serves one upgraded connection until it ends.
pub(crate) async fn serve(mut socket: WebSocket, context: ClientContext) {
    let registration = match context.hub.register() {
        Ok(registration) => registration,
        Err(_shutting_down) => {
            let goodbye = Message::Close(Some(close::frame(close::SHUTTING_DOWN)));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(goodbye)).await;
            return;
        }
    };
    tracing::debug!(clients = context.hub.client_count(), "client connected");
    run_connection(socket, registration.queue(), &context).await;
    drop(registration);
    tracing::debug!(clients = context.hub.client_count(), "client disconnected");
}

/// Runs the reader and the writer until both are done (or the close handshake times out).
async fn run_connection(socket: WebSocket, queue: &ClientQueue, context: &ClientContext) {
    let (sink, stream) = socket.split();
    let reader = read_loop(stream, queue, context);
    let writer = write_loop(sink, queue);
    tokio::pin!(reader, writer);
    tokio::select! {
        end = &mut writer => {
            if end == WriterEnd::Closing {
                // Let the reader answer the client's close, or read its reply to ours.
                let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, &mut reader).await;
            }
        }
        () = &mut reader => {
            writer.await;
        }
    }
}

/// Publishes the client's text frames until the connection ends or the bridge decides to close
/// it. Text frames the client has already sent are published together (one pipelined round
/// trip, in order), so a fast sender is not limited to one message per Redis round trip. After
/// asking for a close it keeps reading, publishing nothing, so the close handshake can complete.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    queue: &ClientQueue,
    context: &ClientContext,
) {
    let mut closing = false;
    let mut texts: Vec<Bytes> = Vec::new();
    while let Some(first) = stream.next().await {
        let mut item = Some(first);
        while let Some(current) = item.take() {
            match current {
                Ok(Message::Text(text)) if !closing => match context.publish.refusal() {
                    None => {
                        texts.push(Bytes::from(text));
                        if texts.len() < PUBLISH_BATCH {
                            // Only what has already arrived: never wait here.
                            item = stream.next().now_or_never().flatten();
                        }
                    }
                    Some(refusal) => {
                        // Nothing of a read-only client is ever batched, so nothing is lost.
                        tracing::debug!(
                            reason = refusal.1,
                            "closing a client that may not publish"
                        );
                        queue.close(close::frame(refusal));
                        closing = true;
                    }
                },
                other => {
                    // Publish what came before, to keep the client's order.
                    closing |= !publish_batch(&mut texts, queue, context).await;
                    match handle_other(other, closing, queue, context) {
                        Handled::Continue { closing: now } => closing = now,
                        Handled::Stop => return,
                    }
                }
            }
        }
        closing |= !publish_batch(&mut texts, queue, context).await;
    }
    queue.close_quietly();
}

/// What the reader does after a frame that is not a text message to publish.
enum Handled {
    /// Keep reading; `closing` says whether the bridge has now asked for a close.
    Continue { closing: bool },
    /// The stream cannot be read any further.
    Stop,
}

/// Handles a binary frame, a close, a ping/pong, ignored data, or a read error.
fn handle_other(
    item: Result<Message, axum::Error>,
    closing: bool,
    queue: &ClientQueue,
    context: &ClientContext,
) -> Handled {
    match item {
        Ok(Message::Binary(_)) if !closing => {
            tracing::debug!("client sent a binary frame; closing it with 1003");
            queue.close(close::frame(close::BINARY_REFUSED));
            Handled::Continue { closing: true }
        }
        Ok(Message::Close(_)) => {
            // The WebSocket layer answers the close by itself while we keep reading.
            queue.close_quietly();
            Handled::Continue { closing: true }
        }
        // Pings are answered automatically; pongs, and data after a close, need nothing.
        Ok(_) => Handled::Continue { closing },
        Err(error) => {
            match read_error_close(&error, context.max_message_bytes) {
                Some(frame) => {
                    tracing::debug!(%error, code = frame.code, "closing client after a read error");
                    queue.close(frame);
                }
                None => queue.close_quietly(),
            }
            Handled::Stop
        }
    }
}

/// Publishes and clears `texts`. On failure asks for the 1013 close and returns false.
async fn publish_batch(
    texts: &mut Vec<Bytes>,
    queue: &ClientQueue,
    context: &ClientContext,
) -> bool {
    if texts.is_empty() {
        return true;
    }
    let stats = &context.hub.stats;
    let count = texts.len() as u64;
    match context.publisher.publish_all(texts).await {
        Ok(()) => {
            stats.published.fetch_add(count, Ordering::Relaxed);
            texts.clear();
            true
        }
        Err(error) => {
            stats.publish_failures.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(%error, messages = count, "could not publish client messages; closing the client with 1013");
            texts.clear();
            queue.close(close::frame(close::REDIS_UNAVAILABLE));
            false
        }
    }
}

/// The close frame to send after a read error, or `None` when the connection is already gone.
fn read_error_close(error: &axum::Error, max_message_bytes: usize) -> Option<CloseFrame> {
    let source = std::error::Error::source(error)?;
    let error = source.downcast_ref::<tungstenite::Error>()?;
    match error {
        tungstenite::Error::Capacity(_) => Some(CloseFrame {
            code: close::TOO_BIG.0,
            reason: format!("{} (limit {max_message_bytes} bytes)", close::TOO_BIG.1).into(),
        }),
        tungstenite::Error::Utf8(_) => Some(CloseFrame {
            code: close_code::INVALID,
            reason: "invalid UTF-8 in a text message".into(),
        }),
        tungstenite::Error::Protocol(_) => Some(close::frame(close::PROTOCOL_ERROR)),
        _ => None,
    }
}

/// Drains the queue onto the socket with the shared writer ([`outbound::run_writer`]):
/// everything available is fed, then flushed once. Ends after sending the close frame the queue
/// asks for (bounded by [`CLOSE_TIMEOUT`]), on a quiet close, or when the socket fails.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, queue: &ClientQueue) -> WriterEnd {
    let mut batch = Vec::new();
    let mut drain = queue;
    // No packing: the bridge's clients read one channel message per frame.
    let one_frame_each = |messages: &mut Vec<Message>, frames: &mut Vec<Message>| {
        frames.append(messages);
    };
    match outbound::run_writer(&mut sink, &mut drain, &mut batch, one_frame_each).await {
        outbound::WriterEnd::Closing(closing) => finish(&mut sink, &mut batch, closing).await,
        outbound::WriterEnd::Failed(error) => {
            tracing::debug!(%error, "client write failed");
            queue.close_quietly();
            WriterEnd::GaveUp
        }
    }
}

/// Sends what is left and the close frame, giving up after [`CLOSE_TIMEOUT`].
async fn finish(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Message>,
    closing: Closing<CloseFrame>,
) -> WriterEnd {
    let Closing::Send(frame) = closing else {
        return WriterEnd::Closing;
    };
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let frames = batch
        .drain(..)
        .chain(std::iter::once(Message::Close(Some(frame))));
    match tokio::time::timeout_at(deadline, outbound::write_all(sink, frames)).await {
        Ok(Ok(())) => WriterEnd::Closing,
        Ok(Err(error)) => {
            tracing::debug!(%error, "could not send the close frame");
            WriterEnd::GaveUp
        }
        Err(_elapsed) => {
            tracing::debug!("client did not take the close frame in time; dropping it");
            WriterEnd::GaveUp
        }
    }
}
