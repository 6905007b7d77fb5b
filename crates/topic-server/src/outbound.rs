//! A session's outbound path: the bounded queue every message to the client goes through, and
//! the writer task that empties it onto the socket.
//!
//! Producers (topic fan-out, request replies) push already-encoded `Bytes` under a short lock
//! and wake the writer; they never touch the socket. The queue is
//! `diffusion_core::conflation::SessionQueue`: it picks, per update, the shared delta (session
//! in step) or the shared full value, and applies each topic's `CONFLATION` policy when the
//! session falls behind. The writer takes everything queued at once, packs it into as few
//! frames as it can, feeds them all and flushes once. A push that leaves the queue past its
//! byte limit even after conflation closes the session instead of letting a slow client grow
//! the server's memory.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use diffusion_core::conflation::{PushOutcome, QueueLimitReached, SessionQueue, TopicUpdate};
use diffusion_core::protocol::pack_frames;
use futures_util::{Sink, SinkExt};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Why a session ends; decides the close frame, whether queued messages are still sent, and the
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent a close frame (the WebSocket layer answers it).
    ClientClosed,
    /// The connection failed or ended without a close frame.
    ConnectionLost,
    /// The outbound queue hit its byte limit.
    QueueLimit,
    /// The client sent a message larger than the server accepts.
    MessageTooLarge,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The server is shutting down.
    Shutdown,
    /// No `connect` arrived within the handshake timeout.
    HandshakeTimeout,
    /// The client sent a text frame that is not valid UTF-8.
    InvalidPayload,
    /// A request failed inside the server; the session cannot be trusted to go on.
    InternalError,
}

impl CloseReason {
    /// Label for `topic_server_sessions_closed_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::ConnectionLost => "connection_lost",
            Self::QueueLimit => "queue_limit",
            Self::MessageTooLarge => "message_too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Shutdown => "shutdown",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::InvalidPayload => "invalid_payload",
            Self::InternalError => "internal_error",
        }
    }

    /// The close frame the server sends, if it sends one.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            Self::ClientClosed | Self::ConnectionLost => None,
            Self::QueueLimit => Some((1008, "message queue limit reached")),
            Self::MessageTooLarge => Some((1009, "message too large")),
            Self::UnsupportedVersion => Some((1002, "unsupported protocol version")),
            Self::Shutdown => Some((1001, "server shutting down")),
            Self::HandshakeTimeout => Some((1008, "no connect message in time")),
            Self::InvalidPayload => Some((1007, "text frame is not valid UTF-8")),
            Self::InternalError => Some((1011, "internal error")),
        }
    }

    /// Whether queued messages are thrown away rather than sent before closing: a client that
    /// is not reading gains nothing from its backlog, while an error reply must arrive.
    fn discards_queue(self) -> bool {
        matches!(self, Self::QueueLimit | Self::ConnectionLost)
    }
}

/// Why a push was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PushError {
    /// The session is closing; the message is dropped.
    #[error("session is closing")]
    Closing,
    /// This push hit the queue limit (even after conflation) and closed the session.
    #[error(transparent)]
    LimitReached(#[from] QueueLimitReached),
}

struct State {
    queue: SessionQueue,
    close: Option<CloseReason>,
    /// The most bytes this queue has held after a push (a high-water mark, for observing
    /// that conflation keeps the queue bounded).
    peak_bytes: usize,
}

/// One session's outbound queue with its wake-ups. Shared (`Arc`) between the session, the
/// topic engine's subscriber lists and the writer task.
pub(crate) struct SessionOutbound {
    state: Mutex<State>,
    /// Wakes the writer: data queued or close requested.
    data_ready: Notify,
    /// Wakes the session's reader loop: close requested.
    closing: Notify,
}

/// What the writer should do next.
enum Step {
    /// Write these messages.
    Send(Vec<Bytes>),
    /// Write these messages (possibly none), then close for this reason.
    Close(Vec<Bytes>, CloseReason),
}

impl SessionOutbound {
    /// An empty queue limited to `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: SessionQueue::new(limit_bytes),
                close: None,
                peak_bytes: 0,
            }),
            data_ready: Notify::new(),
            closing: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections cannot panic half-way, so a poisoned lock still holds a
        // consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one push on the queue. Hitting the limit closes the session with
    /// [`CloseReason::QueueLimit`] and reports it, once; a closing session takes nothing.
    fn push_with(
        &self,
        push: impl FnOnce(&mut SessionQueue) -> Result<PushOutcome, QueueLimitReached>,
    ) -> Result<PushOutcome, PushError> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(PushError::Closing);
        }
        let was_empty = state.queue.is_empty();
        match push(&mut state.queue) {
            Ok(outcome) => {
                let queued = state.queue.queued_bytes();
                state.peak_bytes = state.peak_bytes.max(queued);
                let wake = was_empty && !state.queue.is_empty();
                drop(state);
                // The writer drains everything it finds, so only the first message of a batch
                // needs to wake it.
                if wake {
                    self.data_ready.notify_one();
                }
                Ok(outcome)
            }
            Err(limit) => {
                Self::begin_close(&mut state, CloseReason::QueueLimit);
                drop(state);
                self.wake_all();
                Err(PushError::LimitReached(limit))
            }
        }
    }

    /// Queues a reply or notice (never merged with anything).
    pub fn push_control(&self, message: Bytes) -> Result<PushOutcome, PushError> {
        self.push_with(|q| q.push_control(message))
    }

    /// Queues the value a newly subscribed session starts from (`None`: the topic has no
    /// value yet), resetting what the queue believes the session holds for that topic.
    pub fn push_initial(
        &self,
        topic: u64,
        update: Option<&Arc<TopicUpdate>>,
    ) -> Result<PushOutcome, PushError> {
        self.push_with(|q| q.push_initial(topic, update))
    }

    /// Queues a topic update: the queue picks the shared delta or the full value, and applies
    /// the topic's conflation policy.
    pub fn push_update(&self, update: &Arc<TopicUpdate>) -> Result<PushOutcome, PushError> {
        self.push_with(|q| q.push_update(update))
    }

    /// The session no longer receives `topic`; `tidy` drops its queued updates too.
    pub fn remove_topic(&self, topic: u64, tidy: bool) {
        self.lock().queue.remove_topic(topic, tidy);
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queue.queued_bytes()
    }

    /// The most bytes the queue has held after any push.
    pub fn peak_queued_bytes(&self) -> usize {
        self.lock().peak_bytes
    }

    /// Takes everything queued now, without a writer (for in-process fan-out measurements).
    #[cfg(any(test, feature = "bench"))]
    pub fn drain_now(&self) -> Vec<Bytes> {
        self.lock().queue.drain()
    }

    fn begin_close(state: &mut State, reason: CloseReason) {
        state.close = Some(reason);
        if reason.discards_queue() {
            state.queue.drain();
        }
    }

    fn wake_all(&self) {
        self.data_ready.notify_one();
        self.closing.notify_one();
    }

    /// Asks for the session to close. The first reason wins; returns whether this call set it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        Self::begin_close(&mut state, reason);
        drop(state);
        self.wake_all();
        true
    }

    /// The reason the session is closing, once it is.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// Completes once a close has been requested, with its reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            self.closing.notified().await;
        }
    }

    async fn next_step(&self) -> Step {
        loop {
            {
                let mut state = self.lock();
                if let Some(reason) = state.close {
                    return Step::Close(state.queue.drain(), reason);
                }
                if !state.queue.is_empty() {
                    return Step::Send(state.queue.drain());
                }
            }
            self.data_ready.notified().await;
        }
    }
}

/// Writes one batch: packs it into frames, feeds them all, flushes once.
async fn write_batch<S>(
    sink: &mut S,
    entries: Vec<Bytes>,
    max_frame_bytes: usize,
    metrics: &Metrics,
) -> Result<(), axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if entries.is_empty() {
        return Ok(());
    }
    let messages = entries.len() as u64;
    let mut bytes = 0u64;
    for frame in pack_frames(entries, max_frame_bytes) {
        bytes += frame.len() as u64;
        match Utf8Bytes::try_from(frame) {
            Ok(text) => sink.feed(Message::Text(text)).await?,
            // Every message is compact JSON from serde, so this cannot happen; never send a
            // broken text frame if it somehow does.
            Err(error) => tracing::error!(%error, "dropping a frame that is not UTF-8"),
        }
    }
    sink.flush().await?;
    metrics.messages_out.increment(messages);
    metrics.bytes_out.increment(bytes);
    Ok(())
}

/// The per-connection writer task: waits for queued messages, writes them in batches, and on a
/// close request writes what is still due, sends the close frame and returns.
pub(crate) async fn run_writer<S>(
    mut sink: S,
    outbound: Arc<SessionOutbound>,
    max_frame_bytes: usize,
    metrics: Metrics,
) where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    loop {
        match outbound.next_step().await {
            Step::Send(entries) => {
                if let Err(error) = write_batch(&mut sink, entries, max_frame_bytes, &metrics).await
                {
                    tracing::debug!(%error, "write failed; closing session");
                    outbound.close(CloseReason::ConnectionLost);
                    return;
                }
            }
            Step::Close(entries, reason) => {
                if write_batch(&mut sink, entries, max_frame_bytes, &metrics)
                    .await
                    .is_err()
                {
                    return;
                }
                let result = match reason.close_frame() {
                    Some((code, text)) => {
                        sink.send(Message::Close(Some(CloseFrame {
                            code,
                            reason: Utf8Bytes::from(text),
                        })))
                        .await
                    }
                    // Flushes the WebSocket layer's own answer to the client's close frame.
                    None => sink.close().await,
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "close frame not delivered");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    fn pong(cid: u64) -> Bytes {
        Bytes::from(format!("{{\"type\":\"pong\",\"cid\":{cid}}}"))
    }

    #[test]
    fn limit_closes_once_and_discards_backlog() {
        let out = SessionOutbound::new(10);
        out.push_control(bytes(6)).unwrap();
        assert!(matches!(
            out.push_control(bytes(6)),
            Err(PushError::LimitReached(_))
        ));
        assert_eq!(out.close_reason(), Some(CloseReason::QueueLimit));
        assert_eq!(out.push_control(bytes(1)), Err(PushError::Closing));
        assert!(out.lock().queue.is_empty());
        assert!(!out.close(CloseReason::Shutdown), "first reason wins");
    }

    #[test]
    fn graceful_close_keeps_queued_replies() {
        let out = SessionOutbound::new(100);
        out.push_control(bytes(5)).unwrap();
        assert!(out.close(CloseReason::MessageTooLarge));
        assert_eq!(out.lock().queue.len(), 1);
    }

    #[test]
    fn peak_is_a_high_water_mark() {
        let out = SessionOutbound::new(1000);
        out.push_control(pong(1)).unwrap();
        out.push_control(pong(2)).unwrap();
        let two = out.queued_bytes();
        assert_eq!(out.drain_now().len(), 2);
        out.push_control(pong(3)).unwrap();
        assert!(out.queued_bytes() < two);
        assert_eq!(out.peak_queued_bytes(), two);
    }

    #[tokio::test]
    async fn next_step_sees_data_then_close() {
        let out = SessionOutbound::new(100);
        out.push_control(bytes(3)).unwrap();
        out.push_control(bytes(4)).unwrap();
        match out.next_step().await {
            Step::Send(entries) => assert_eq!(entries.len(), 2),
            Step::Close(..) => panic!("expected data"),
        }
        out.close(CloseReason::Shutdown);
        match out.next_step().await {
            Step::Close(entries, reason) => {
                assert!(entries.is_empty());
                assert_eq!(reason, CloseReason::Shutdown);
            }
            Step::Send(_) => panic!("expected close"),
        }
        assert_eq!(out.closed().await, CloseReason::Shutdown);
    }
}
