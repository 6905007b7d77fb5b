//! A session's outbound path: the bounded queue every message to the client goes through, the
//! version-2 sequence numbers and recovery buffer, and the writer task that empties it onto the
//! socket.
//!
//! Producers (topic fan-out, request replies) push already-encoded `Bytes` under a short lock
//! and wake the writer; they never touch the socket. The queue is
//! `diffusion_core::conflation::SessionQueue`: it picks, per update, the shared delta (session
//! in step) or the shared full value, and applies each topic's `CONFLATION` policy when the
//! session falls behind. The writer takes everything queued at once, packs it into as few
//! frames as it can, feeds them all and flushes once. A push that leaves the queue past its
//! byte limit even after conflation closes the session instead of letting a slow client grow
//! the server's memory.
//!
//! A version-2 session outlives its connection. When the writer takes messages it numbers them
//! (`s`, added while framing so the encoded bytes stay shared) and keeps them in a recovery
//! buffer until the client acknowledges them. When the connection drops, the queue goes on
//! taking updates (still conflating, still bounded); a connection that resumes the session
//! takes it over — a new *generation* — and its writer first sends again what the client had
//! not processed, then the queue. A connection of an older generation can neither write nor
//! take messages any more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diffusion_core::conflation::{PushOutcome, QueueLimitReached, SessionQueue, TopicUpdate};
use diffusion_core::protocol::pack_sequenced_frames;
use futures_util::{Sink, SinkExt};
use service_kit::outbound::{self, Drain, WriterEnd};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

use crate::direct::{self, DirectSink, DirectSocket, RawFrame};
use crate::metrics::Metrics;

/// How long a session must have gone unwritten for its next message to be written directly
/// (see `State::idle_for_direct`): well above the gap between updates of a saturating feed,
/// well below that of a feed a person watches.
const DIRECT_AFTER_IDLE: Duration = Duration::from_millis(2);

/// Why a connection ends; decides the close frame, whether queued messages are still sent,
/// whether a version-2 session survives it, and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent a close frame saying it is done (1000, or no code).
    ClientClosed,
    /// The client sent a close frame with another code (it means to come back).
    ClientDropped,
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
    /// The client sent nothing for the heartbeat interval plus timeout.
    HeartbeatTimeout,
    /// Another connection resumed this session.
    Replaced,
    /// The connection's writer moves to the session it resumed (no close at all).
    Handover,
    /// The client sent a text frame that is not valid UTF-8.
    InvalidPayload,
    /// A request failed inside the server; the session cannot be trusted to go on.
    InternalError,
    /// The `connect` was refused by the security store (or too many failed lately).
    AuthenticationFailed,
    /// The token the session authenticated with has expired.
    TokenExpired,
    /// The principal already has as many sessions as its roles allow.
    SessionLimit,
}

impl CloseReason {
    /// Label for `topic_server_sessions_closed_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::ClientDropped => "client_dropped",
            Self::ConnectionLost => "connection_lost",
            Self::QueueLimit => "queue_limit",
            Self::MessageTooLarge => "message_too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Shutdown => "shutdown",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::Replaced => "replaced",
            Self::Handover => "resumed",
            Self::InvalidPayload => "invalid_payload",
            Self::InternalError => "internal_error",
            Self::AuthenticationFailed => "authentication_failed",
            Self::TokenExpired => "token_expired",
            Self::SessionLimit => "session_limit",
        }
    }

    /// The close frame the server sends, if it sends one.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            Self::ClientClosed | Self::ClientDropped | Self::ConnectionLost | Self::Handover => {
                None
            }
            Self::QueueLimit => Some((1008, "message queue limit reached")),
            Self::MessageTooLarge => Some((1009, "message too large")),
            Self::UnsupportedVersion => Some((1002, "unsupported protocol version")),
            Self::Shutdown => Some((1001, "server shutting down")),
            Self::HandshakeTimeout => Some((1008, "no connect message in time")),
            Self::HeartbeatTimeout => Some((4001, "heartbeat timeout")),
            Self::Replaced => Some((4002, "session resumed by another connection")),
            Self::InvalidPayload => Some((1007, "text frame is not valid UTF-8")),
            Self::InternalError => Some((1011, "internal error")),
            Self::AuthenticationFailed => Some((4003, "authentication failed")),
            Self::TokenExpired => Some((4004, "token expired")),
            Self::SessionLimit => Some((1008, "session limit reached")),
        }
    }

    /// Whether a version-2 session outlives a connection ending this way, waiting to be
    /// resumed.
    pub fn keeps_session(self) -> bool {
        matches!(
            self,
            Self::ClientDropped | Self::ConnectionLost | Self::HeartbeatTimeout | Self::Replaced
        )
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

/// Why a session could not be resumed; the reason `connected` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecoveryRefusal {
    /// The session is over (window passed, queue limit, ended by its client).
    UnknownSession,
    /// Messages after the client's sequence number are no longer held.
    Gap,
    /// The client claims a sequence number the server never sent.
    BadSequence,
}

impl RecoveryRefusal {
    /// The `reason` of a `connected` with `recovered: false`.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown_session",
            Self::Gap => "gap",
            Self::BadSequence => "bad_sequence",
        }
    }
}

/// An `ack` for a message the server has not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ack of message {acked}, but the last message sent is {last}")]
pub(crate) struct AckAhead {
    acked: u64,
    last: u64,
}

/// One thing for the writer to put on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// A message; `seq` is its version-2 sequence number.
    Message { seq: Option<u64>, bytes: Bytes },
    /// A WebSocket ping (the heartbeat of version-1 sessions).
    Ping,
}

/// A version-2 session's numbering and its recovery buffer: the messages sent and not yet
/// acknowledged, bounded in bytes (the oldest go first; resuming from before them then fails
/// with a gap).
struct ReplayLog {
    next_seq: u64,
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
    limit: usize,
}

impl ReplayLog {
    fn new(limit: usize) -> Self {
        Self {
            next_seq: 1,
            entries: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    fn record(&mut self, bytes: Bytes) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += bytes.len();
        self.entries.push_back((seq, bytes));
        while self.bytes > self.limit {
            match self.entries.pop_front() {
                Some((_, dropped)) => self.bytes -= dropped.len(),
                None => break,
            }
        }
        seq
    }

    fn last_sent(&self) -> u64 {
        self.next_seq - 1
    }

    fn ack(&mut self, acked: u64) -> Result<(), AckAhead> {
        if acked > self.last_sent() {
            return Err(AckAhead {
                acked,
                last: self.last_sent(),
            });
        }
        while let Some((seq, _)) = self.entries.front() {
            if *seq > acked {
                break;
            }
            if let Some((_, dropped)) = self.entries.pop_front() {
                self.bytes -= dropped.len();
            }
        }
        // An idle session holds nothing here: give the buffer back once everything is
        // acknowledged (reallocating at the next message costs less than keeping it).
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
        Ok(())
    }

    /// The messages after `acked`, to send again; fails when some are no longer held.
    fn after(&mut self, acked: u64) -> Result<VecDeque<(u64, Bytes)>, RecoveryRefusal> {
        if acked > self.last_sent() {
            return Err(RecoveryRefusal::BadSequence);
        }
        let first_held = self.entries.front().map_or(self.next_seq, |(seq, _)| *seq);
        if acked + 1 < first_held {
            return Err(RecoveryRefusal::Gap);
        }
        // Cannot fail: `acked` is at most the last message sent.
        let _ = self.ack(acked);
        Ok(self.entries.clone())
    }
}

/// The fields a push reads come first, so that a fan-out to many sessions, which meets each
/// session's state cold in the cache, touches as few cache lines as possible (`repr(C)` keeps
/// this order); what only the writer, a resume or a heartbeat uses comes last.
#[repr(C)]
struct State {
    close: Option<CloseReason>,
    /// The session is over: nothing more is taken, it cannot be resumed.
    ended: bool,
    /// A connection of the current generation is serving the session.
    attached: bool,
    /// `preamble` or `resend` holds something (read instead of them on every push).
    ahead: bool,
    /// The most bytes this queue has held after a push (a high-water mark, for observing
    /// that conflation keeps the queue bounded).
    peak_bytes: usize,
    queue: SessionQueue,
    /// Which connection owns the session; bumped by every resume.
    generation: u64,
    /// Unnumbered messages the writer sends before anything else: `connected`, heartbeats.
    preamble: Vec<Outgoing>,
    /// Numbered messages to send again (after a resume), before the queue.
    resend: VecDeque<(u64, Bytes)>,
    /// Version 2: numbering and recovery buffer.
    replay: Option<ReplayLog>,
    /// The writer task holds a batch it has taken and not finished writing: until it has, no
    /// direct flush may take the queue (its bytes would overtake the batch).
    writer_busy: bool,
    /// Bytes wait in the socket's `unsent` buffer: the writer task must write them out.
    flush_pending: bool,
    /// The socket of the connection serving the session, when it takes direct writes.
    direct: Option<Arc<DirectWriter>>,
    /// When the queue was last taken for writing (by a direct flush or the writer task).
    last_taken: Option<Instant>,
}

/// What a direct flush needs to write a session's queue onto its connection's socket.
pub(crate) struct DirectWriter {
    /// The connection generation the socket belongs to.
    generation: u64,
    socket: Arc<DirectSocket>,
    max_frame_bytes: usize,
    metrics: Metrics,
}

impl State {
    /// Whether the session still takes messages: a version-2 session does while it waits to
    /// be resumed.
    fn accepting(&self) -> bool {
        !self.ended
            && match self.close {
                None => true,
                Some(reason) => self.resumable(reason),
            }
    }

    fn resumable(&self, reason: CloseReason) -> bool {
        self.replay.is_some() && reason.keeps_session()
    }

    fn has_output(&self) -> bool {
        !self.queue.is_empty() || self.ahead
    }

    /// Whether a message for this session should be written directly: it has not been written
    /// to for [`DIRECT_AFTER_IDLE`]. A session written to all the time (a saturating feed)
    /// goes through its writer task instead, which by the time it runs finds several messages
    /// to pack into one frame and one write; written directly, each would cost a system call.
    fn idle_for_direct(&self) -> bool {
        self.last_taken
            .is_none_or(|at| at.elapsed() >= DIRECT_AFTER_IDLE)
    }

    /// Everything due now, in order: preamble, messages sent again, then the queue (numbered
    /// and recorded for recovery on a version-2 session).
    fn take_output(&mut self) -> Vec<Outgoing> {
        self.last_taken = Some(Instant::now());
        let queued = self.queue.drain();
        self.ahead = false;
        // Taken, not drained: an idle session keeps no buffers from its last burst.
        let mut out = std::mem::take(&mut self.preamble);
        out.reserve(self.resend.len() + queued.len());
        out.extend(
            std::mem::take(&mut self.resend)
                .into_iter()
                .map(|(seq, bytes)| Outgoing::Message {
                    seq: Some(seq),
                    bytes,
                }),
        );
        match &mut self.replay {
            Some(log) => out.extend(queued.into_iter().map(|bytes| Outgoing::Message {
                seq: Some(log.record(bytes.clone())),
                bytes,
            })),
            None => out.extend(
                queued
                    .into_iter()
                    .map(|bytes| Outgoing::Message { seq: None, bytes }),
            ),
        }
        out
    }
}

/// One session's outbound queue with its wake-ups. Shared (`Arc`) between the session's
/// connection, the topic engine's subscriber lists and the writer task.
pub(crate) struct SessionOutbound {
    state: Mutex<State>,
    /// When the session last heard from its client, in [`crate::liveness::Liveness`]'s
    /// milliseconds (outside the lock: the reader stores it on every frame).
    last_heard: AtomicU64,
    /// Wakes the writer: data queued (and everything that wakes `closing`).
    data_ready: Notify,
    /// Wakes the connection's reader and the detached-session watch: close requested, session
    /// taken over or ended. Separate from `data_ready` so a push never wakes the reader.
    closing: Notify,
}

/// What the writer should do next.
enum Step {
    /// Write these.
    Send(Vec<Outgoing>),
    /// Write these (possibly nothing), then close for this reason.
    Close(Vec<Outgoing>, CloseReason),
}

impl SessionOutbound {
    /// An empty queue limited to `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                close: None,
                ended: false,
                attached: true,
                ahead: false,
                peak_bytes: 0,
                queue: SessionQueue::new(limit_bytes),
                generation: 0,
                preamble: Vec::new(),
                resend: VecDeque::new(),
                replay: None,
                writer_busy: false,
                flush_pending: false,
                direct: None,
                last_taken: None,
            }),
            last_heard: AtomicU64::new(0),
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
        self: &Arc<Self>,
        push: impl FnOnce(&mut SessionQueue) -> Result<PushOutcome, QueueLimitReached>,
    ) -> Result<PushOutcome, PushError> {
        let mut state = self.lock();
        if !state.accepting() {
            return Err(PushError::Closing);
        }
        let was_empty = !state.has_output();
        match push(&mut state.queue) {
            Ok(outcome) => {
                let queued = state.queue.queued_bytes();
                state.peak_bytes = state.peak_bytes.max(queued);
                let wake = was_empty && state.has_output() && state.attached;
                let direct = wake && state.direct.is_some() && state.idle_for_direct();
                drop(state);
                // The writer drains everything it finds, so only the first message of a batch
                // needs to wake it — or, on a socket that takes direct writes and a session
                // that was idle, to be flushed once the engine operation under way has
                // released its lock.
                if wake && !(direct && direct::defer(self)) {
                    self.data_ready.notify_waiters();
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
    pub fn push_control(self: &Arc<Self>, message: Bytes) -> Result<PushOutcome, PushError> {
        self.push_with(|q| q.push_control(message))
    }

    /// Queues the value a newly subscribed session starts from (`None`: the topic has no
    /// value yet), resetting what the queue believes the session holds for that topic.
    pub fn push_initial(
        self: &Arc<Self>,
        topic: u64,
        update: Option<&Arc<TopicUpdate>>,
    ) -> Result<PushOutcome, PushError> {
        self.push_with(|q| q.push_initial(topic, update))
    }

    /// Queues a topic update: the queue picks the shared delta or the full value, and applies
    /// the topic's conflation policy.
    pub fn push_update(
        self: &Arc<Self>,
        update: &Arc<TopicUpdate>,
    ) -> Result<PushOutcome, PushError> {
        self.push_with(|q| q.push_update(update))
    }

    /// Sends `message` ahead of everything queued, without a sequence number (`connected`,
    /// heartbeats). A heartbeat or ping already waiting is not doubled.
    pub fn push_unnumbered(&self, message: Outgoing) {
        let mut state = self.lock();
        if state.close.is_some() || state.ended || state.preamble.contains(&message) {
            return;
        }
        state.preamble.push(message);
        state.ahead = true;
        let wake = state.attached;
        drop(state);
        if wake {
            self.data_ready.notify_waiters();
        }
    }

    /// Makes this a version-2 session: from now on every queued message is numbered and kept
    /// until acknowledged (at most `recovery_limit_bytes`). What was queued before (replies
    /// during the handshake) goes out unnumbered, then `connected`.
    pub fn start_numbering(&self, connected: Bytes, recovery_limit_bytes: usize) {
        let mut state = self.lock();
        let earlier = state.queue.drain();
        state.preamble.extend(
            earlier
                .into_iter()
                .map(|bytes| Outgoing::Message { seq: None, bytes }),
        );
        state.preamble.push(Outgoing::Message {
            seq: None,
            bytes: connected,
        });
        state.ahead = true;
        state.replay = Some(ReplayLog::new(recovery_limit_bytes));
        drop(state);
        self.data_ready.notify_waiters();
    }

    /// The client has processed every message up to `acked`: forget them.
    pub fn ack(&self, acked: u64) -> Result<(), AckAhead> {
        match &mut self.lock().replay {
            Some(log) => log.ack(acked),
            None => Ok(()),
        }
    }

    /// The generation of the connection serving the session now.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A resuming connection takes the session over: the connection serving it (if any) is
    /// replaced, and the new one first sends `connected` and then again every message after
    /// `acked`. Returns the new generation.
    pub fn take_over(&self, acked: u64, connected: Bytes) -> Result<u64, RecoveryRefusal> {
        let mut state = self.lock();
        let ending = state.close.is_some_and(|r| !state.resumable(r));
        if state.ended || ending {
            return Err(RecoveryRefusal::UnknownSession);
        }
        let Some(log) = state.replay.as_mut() else {
            return Err(RecoveryRefusal::UnknownSession);
        };
        let resend = log.after(acked)?;
        state.resend = resend;
        state.preamble = vec![Outgoing::Message {
            seq: None,
            bytes: connected,
        }];
        state.ahead = true;
        state.generation += 1;
        state.close = None;
        state.attached = true;
        let generation = state.generation;
        drop(state);
        self.wake_all();
        Ok(generation)
    }

    /// The connection of `generation` is gone but the session lives on: it waits, taking
    /// messages, to be resumed. False when the session cannot be kept (it is ending, or
    /// another connection has taken it over).
    pub fn detach(&self, generation: u64) -> bool {
        let mut state = self.lock();
        if state.generation != generation || state.ended {
            return false;
        }
        match state.close {
            Some(reason) if state.resumable(reason) => {
                state.close = None;
                state.attached = false;
                state.preamble.clear();
                state.ahead = !state.resend.is_empty();
                true
            }
            _ => false,
        }
    }

    /// Ends the session if it is still waiting, unclaimed, since the connection of
    /// `generation` left. True when this call ended it.
    pub fn end_if_detached(&self, generation: u64) -> bool {
        let mut state = self.lock();
        if state.generation != generation || state.attached || state.ended {
            return false;
        }
        Self::end_locked(&mut state);
        true
    }

    /// The client was heard from at `now_ms`.
    pub fn heard(&self, now_ms: u64) {
        self.last_heard.store(now_ms, Ordering::Relaxed);
    }

    /// When the client was last heard from.
    pub fn last_heard(&self) -> u64 {
        self.last_heard.load(Ordering::Relaxed)
    }

    fn wake_all(&self) {
        self.data_ready.notify_waiters();
        self.closing.notify_waiters();
    }

    /// Ends the session: nothing more is taken and its memory goes.
    pub fn end(&self) {
        Self::end_locked(&mut self.lock());
        self.wake_all();
    }

    fn end_locked(state: &mut State) {
        state.ended = true;
        state.queue.drain();
        state.preamble.clear();
        state.resend.clear();
        state.ahead = false;
        state.replay = None;
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

    /// Takes everything queued now, without a writer (for in-process fan-out measurements),
    /// as a writer would — numbered on a version-2 session — and acknowledges it at once, as
    /// a client keeping up does.
    #[cfg(any(test, feature = "bench"))]
    pub fn take_now(&self) -> Vec<(Option<u64>, Bytes)> {
        let mut state = self.lock();
        let taken = state.take_output();
        if let Some(log) = &mut state.replay {
            let last = log.last_sent();
            let _ = log.ack(last);
        }
        taken
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::Message { seq, bytes } => Some((seq, bytes)),
                Outgoing::Ping => None,
            })
            .collect()
    }

    /// [`Self::take_now`] without the sequence numbers.
    #[cfg(any(test, feature = "bench"))]
    pub fn drain_now(&self) -> Vec<Bytes> {
        self.take_now()
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect()
    }

    /// From now on the connection of `generation` takes direct writes on `socket`.
    pub fn attach_direct(
        &self,
        generation: u64,
        socket: Arc<DirectSocket>,
        max_frame_bytes: usize,
        metrics: Metrics,
    ) {
        let mut state = self.lock();
        if state.generation == generation {
            state.direct = Some(Arc::new(DirectWriter {
                generation,
                socket,
                max_frame_bytes,
                metrics,
            }));
        }
    }

    /// The connection of `generation` is done writing: the session lets go of its socket
    /// (so that it closes once the connection's tasks have).
    pub fn release_direct(&self, generation: u64) {
        let mut state = self.lock();
        if state
            .direct
            .as_ref()
            .is_some_and(|d| d.generation == generation)
        {
            state.direct = None;
        }
    }

    /// Writes what is queued straight onto the connection's socket, when it takes direct
    /// writes and the writer task holds nothing; what the socket does not take now, or a
    /// session that cannot be flushed here, is left to the writer task (woken).
    pub fn flush(&self) {
        let Some(direct) = self.lock().direct.clone() else {
            self.data_ready.notify_waiters();
            return;
        };
        let written = {
            let mut unsent = direct.socket.lock_unsent();
            let mut state = self.lock();
            let usable = state.generation == direct.generation
                && state.attached
                && state.close.is_none()
                && !state.writer_busy;
            if !usable || !unsent.is_empty() {
                state.flush_pending |= usable;
                drop(state);
                drop(unsent);
                self.data_ready.notify_waiters();
                return;
            }
            if !state.has_output() {
                return;
            }
            let mut output = state.take_output();
            drop(state);
            let mut frames = Vec::new();
            pack_raw(
                &mut output,
                &mut frames,
                direct.max_frame_bytes,
                &direct.metrics,
            );
            direct.metrics.direct_writes.increment(1);
            direct.socket.write_frames(&mut unsent, &frames)
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                self.lock().flush_pending = true;
                self.data_ready.notify_waiters();
            }
            Err(error) => {
                tracing::debug!(%error, "direct write failed; closing session");
                self.close(CloseReason::ConnectionLost);
            }
        }
    }

    fn begin_close(state: &mut State, reason: CloseReason) {
        state.close = Some(reason);
        if reason.discards_queue() && !state.resumable(reason) {
            state.queue.drain();
        }
    }

    /// Asks for the current connection to close. The first reason wins; returns whether this
    /// call set it.
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

    /// The reason the connection is closing, once it is.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// Completes once the connection of `generation` must close: a close was requested, or
    /// another connection took the session over ([`CloseReason::Replaced`]).
    pub async fn closed(&self, generation: u64) -> CloseReason {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.generation != generation {
                    return CloseReason::Replaced;
                }
                if let Some(reason) = state.close {
                    return reason;
                }
            }
            notified.await;
        }
    }

    async fn next_step(&self, generation: u64) -> Step {
        loop {
            let notified = self.data_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.generation != generation {
                    return Step::Close(Vec::new(), CloseReason::Replaced);
                }
                // The writer comes back for more once its last batch is written.
                state.writer_busy = false;
                if let Some(reason) = state.close {
                    // A version-2 session that outlives this connection keeps its queue
                    // for the connection that resumes it.
                    let due = if state.resumable(reason) {
                        Vec::new()
                    } else {
                        state.take_output()
                    };
                    state.writer_busy = true;
                    return Step::Close(due, reason);
                }
                // Possibly nothing new, when only bytes a direct flush left unsent wait: the
                // writer's flush writes them once the socket takes them.
                if state.has_output() || state.flush_pending {
                    state.flush_pending = false;
                    state.writer_busy = true;
                    return Step::Send(state.take_output());
                }
            }
            notified.await;
        }
    }
}

/// The writer's view of one connection's share of a session: what `service_kit`'s batching
/// writer drains.
struct ConnectionDrain {
    outbound: Arc<SessionOutbound>,
    generation: u64,
}

impl Drain for ConnectionDrain {
    type Item = Outgoing;
    type Closing = CloseReason;

    async fn next_batch(&mut self, batch: &mut Vec<Outgoing>) -> Option<CloseReason> {
        match self.outbound.next_step(self.generation).await {
            Step::Send(entries) => {
                take_into(batch, entries);
                None
            }
            Step::Close(entries, reason) => {
                take_into(batch, entries);
                Some(reason)
            }
        }
    }

    /// A write stuck on a slow socket is abandoned when nothing it carries is still owed to
    /// this connection: the session ends without its backlog, or it lives on and whatever was
    /// numbered is in its recovery buffer. Replies owed before a close (an error) still go out.
    async fn interrupted(&mut self) {
        let reason = self.outbound.closed(self.generation).await;
        if !(reason.discards_queue() || reason.keeps_session()) {
            std::future::pending::<()>().await;
        }
    }
}

/// Appends `entries` to `batch`, moving the vector itself when `batch` is empty (it always is
/// after packing), so no buffer outlives its batch.
fn take_into(batch: &mut Vec<Outgoing>, entries: Vec<Outgoing>) {
    if batch.is_empty() {
        *batch = entries;
    } else {
        batch.extend(entries);
    }
}

/// One frame's content, before the WebSocket layer (or a direct write) frames it.
enum Frame {
    Text(Bytes),
    Ping,
}

/// Packs runs of messages into frames (a ping between them stays in its place), counts them,
/// and hands each frame to `emit`, in order.
fn pack_into(
    entries: Vec<Outgoing>,
    max_frame_bytes: usize,
    metrics: &Metrics,
    mut emit: impl FnMut(Frame),
) {
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut run = Vec::with_capacity(entries.len());
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let mut ping = false;
        for entry in entries.by_ref() {
            match entry {
                Outgoing::Message { seq, bytes } => run.push((seq, bytes)),
                Outgoing::Ping => {
                    ping = true;
                    break;
                }
            }
        }
        messages += run.len() as u64;
        for frame in pack_sequenced_frames(run.drain(..), max_frame_bytes) {
            bytes += frame.len() as u64;
            emit(Frame::Text(frame));
        }
        if ping {
            emit(Frame::Ping);
        }
    }
    metrics.messages_out.increment(messages);
    metrics.bytes_out.increment(bytes);
}

/// [`pack_into`] as WebSocket messages, for the writer task. Takes the entries' vector,
/// leaving an unallocated one.
fn pack(
    entries: &mut Vec<Outgoing>,
    frames: &mut Vec<Message>,
    max_frame_bytes: usize,
    metrics: &Metrics,
) {
    pack_into(
        std::mem::take(entries),
        max_frame_bytes,
        metrics,
        |frame| match frame {
            Frame::Text(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => frames.push(Message::Text(text)),
                // Every message is compact JSON from serde, so this cannot happen; never send
                // a broken text frame if it somehow does.
                Err(error) => tracing::error!(%error, "dropping a frame that is not UTF-8"),
            },
            Frame::Ping => frames.push(Message::Ping(Bytes::new())),
        },
    );
}

/// Lets go of a connection's socket when its writer task ends — or is dropped before it ever
/// ran: created with the task, not inside it.
pub(crate) struct ReleaseDirect {
    outbound: Arc<SessionOutbound>,
    generation: u64,
}

impl ReleaseDirect {
    /// Releases `outbound`'s socket of `generation` when dropped.
    pub fn new(outbound: &Arc<SessionOutbound>, generation: u64) -> Self {
        Self {
            outbound: Arc::clone(outbound),
            generation,
        }
    }
}

impl Drop for ReleaseDirect {
    fn drop(&mut self) {
        self.outbound.release_direct(self.generation);
    }
}

/// [`pack_into`] as raw frames, for writing straight onto a plain-TCP socket.
fn pack_raw(
    entries: &mut Vec<Outgoing>,
    frames: &mut Vec<RawFrame>,
    max_frame_bytes: usize,
    metrics: &Metrics,
) {
    pack_into(std::mem::take(entries), max_frame_bytes, metrics, |frame| {
        frames.push(match frame {
            Frame::Text(bytes) => RawFrame::text(bytes),
            Frame::Ping => RawFrame::ping(),
        });
    });
}

/// Runs the batching writer on `sink` until the session says the connection closes, then
/// writes what is still due; returns why it closes, or the write error.
async fn write_until_closed<S, F>(
    sink: &mut S,
    drain: &mut ConnectionDrain,
    batch: &mut Vec<Outgoing>,
    mut pack: impl FnMut(&mut Vec<Outgoing>, &mut Vec<F>) + Send,
) -> Result<CloseReason, String>
where
    S: Sink<F> + Unpin + Send,
    S::Error: std::fmt::Display + Send,
    F: Send,
{
    match outbound::run_writer(sink, drain, batch, &mut pack).await {
        WriterEnd::Closing(reason) => {
            let mut frames = Vec::new();
            pack(batch, &mut frames);
            outbound::write_all(sink, frames)
                .await
                .map(|()| reason)
                .map_err(|e| e.to_string())
        }
        WriterEnd::Failed(error) => Err(error.to_string()),
    }
}

/// The per-connection writer task: `service_kit`'s batching writer (take everything queued,
/// pack, feed all, flush once) over this connection's share of the session — data frames
/// straight onto a plain-TCP socket (`direct`), else through the WebSocket layer; on a close
/// request it writes what is still due, sends the close frame (through the WebSocket layer,
/// which keeps the closing handshake) and returns. On a [`CloseReason::Handover`] it returns
/// the sink instead, for the session being resumed.
pub(crate) async fn run_writer<S>(
    mut sink: S,
    direct: Option<Arc<DirectSocket>>,
    outbound: Arc<SessionOutbound>,
    generation: u64,
    max_frame_bytes: usize,
    metrics: Metrics,
) -> Option<S>
where
    S: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin + Send,
{
    let mut drain = ConnectionDrain {
        outbound: Arc::clone(&outbound),
        generation,
    };
    let mut batch = Vec::new();
    let ended = match &direct {
        Some(socket) => {
            let packer = |entries: &mut Vec<Outgoing>, frames: &mut Vec<RawFrame>| {
                metrics.writer_writes.increment(1);
                pack_raw(entries, frames, max_frame_bytes, &metrics);
            };
            let mut raw = DirectSink::new(Arc::clone(socket));
            write_until_closed(&mut raw, &mut drain, &mut batch, packer).await
        }
        None => {
            let packer = |entries: &mut Vec<Outgoing>, frames: &mut Vec<Message>| {
                metrics.writer_writes.increment(1);
                pack(entries, frames, max_frame_bytes, &metrics);
            };
            write_until_closed(&mut sink, &mut drain, &mut batch, packer).await
        }
    };
    let reason = match ended {
        Ok(reason) => reason,
        Err(error) => {
            tracing::debug!(%error, "write failed; closing session");
            outbound.close(CloseReason::ConnectionLost);
            return None;
        }
    };
    if reason == CloseReason::Handover {
        return Some(sink);
    }
    let result = match reason.close_frame() {
        Some((code, text)) => {
            sink.send(Message::Close(Some(CloseFrame {
                code: code.into(),
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
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    const HEARTBEAT_FOR_TEST: &[u8] = br#"{"type":"heartbeat"}"#;

    fn pong(cid: u64) -> Bytes {
        Bytes::from(format!("{{\"type\":\"pong\",\"cid\":{cid}}}"))
    }

    #[test]
    fn only_a_session_left_unwritten_for_a_while_is_written_directly() {
        let out = Arc::new(SessionOutbound::new(1000));
        assert!(out.lock().idle_for_direct(), "never written");
        out.push_control(bytes(3)).unwrap();
        let _ = out.take_now();
        assert!(!out.lock().idle_for_direct(), "just written");
        out.lock().last_taken = Some(Instant::now() - DIRECT_AFTER_IDLE);
        assert!(out.lock().idle_for_direct(), "idle long enough");
    }

    #[test]
    fn limit_closes_once_and_discards_backlog() {
        let out = Arc::new(SessionOutbound::new(10));
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
        let out = Arc::new(SessionOutbound::new(100));
        out.push_control(bytes(5)).unwrap();
        assert!(out.close(CloseReason::MessageTooLarge));
        assert_eq!(out.lock().queue.len(), 1);
    }

    #[test]
    fn peak_is_a_high_water_mark() {
        let out = Arc::new(SessionOutbound::new(1000));
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
        let out = Arc::new(SessionOutbound::new(100));
        out.push_control(bytes(3)).unwrap();
        out.push_control(bytes(4)).unwrap();
        match out.next_step(0).await {
            Step::Send(entries) => assert_eq!(entries.len(), 2),
            Step::Close(..) => panic!("expected data"),
        }
        out.close(CloseReason::Shutdown);
        match out.next_step(0).await {
            Step::Close(entries, reason) => {
                assert!(entries.is_empty());
                assert_eq!(reason, CloseReason::Shutdown);
            }
            Step::Send(_) => panic!("expected close"),
        }
        assert_eq!(out.closed(0).await, CloseReason::Shutdown);
    }

    fn sent(step: Step) -> Vec<(Option<u64>, Bytes)> {
        match step {
            Step::Send(entries) => entries
                .into_iter()
                .filter_map(|o| match o {
                    Outgoing::Message { seq, bytes } => Some((seq, bytes)),
                    Outgoing::Ping => None,
                })
                .collect(),
            Step::Close(..) => panic!("expected data"),
        }
    }

    fn seqs(entries: &[(Option<u64>, Bytes)]) -> Vec<Option<u64>> {
        entries.iter().map(|(s, _)| *s).collect()
    }

    #[tokio::test]
    async fn version_2_numbers_messages_after_connected() {
        let out = Arc::new(SessionOutbound::new(1000));
        out.push_control(pong(1)).unwrap(); // a reply during the handshake
        out.start_numbering(Bytes::from_static(b"{\"type\":\"connected\"}"), 1000);
        out.push_control(pong(2)).unwrap();
        out.push_unnumbered(Outgoing::Message {
            seq: None,
            bytes: Bytes::from_static(HEARTBEAT_FOR_TEST),
        });
        out.push_unnumbered(Outgoing::Message {
            seq: None,
            bytes: Bytes::from_static(HEARTBEAT_FOR_TEST),
        });
        let first = sent(out.next_step(0).await);
        assert_eq!(
            seqs(&first),
            [None, None, None, Some(1)],
            "one heartbeat, not two"
        );
        out.push_control(pong(3)).unwrap();
        assert_eq!(seqs(&sent(out.next_step(0).await)), [Some(2)]);
        assert!(out.ack(3).is_err(), "3 was never sent");
        out.ack(1).unwrap();
        assert_eq!(out.lock().replay.as_ref().map(|l| l.entries.len()), Some(1));
    }

    #[tokio::test]
    async fn a_resumed_session_resends_what_was_not_processed_then_the_queue() {
        let out = Arc::new(SessionOutbound::new(1000));
        out.start_numbering(Bytes::from_static(b"{}"), 1000);
        for cid in 1..=3 {
            out.push_control(pong(cid)).unwrap();
        }
        let _ = sent(out.next_step(0).await); // connected + 1..=3
        // The connection drops; the session waits and keeps taking messages.
        out.close(CloseReason::ConnectionLost);
        assert!(matches!(out.next_step(0).await, Step::Close(ref e, _) if e.is_empty()));
        assert!(out.detach(0));
        out.push_control(pong(4)).unwrap();
        assert_eq!(
            out.take_over(9, Bytes::new()),
            Err(RecoveryRefusal::BadSequence)
        );
        let generation = out.take_over(1, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(generation, 1);
        // The old connection's writer can take nothing more.
        assert!(matches!(
            out.next_step(0).await,
            Step::Close(_, CloseReason::Replaced)
        ));
        let resent = sent(out.next_step(generation).await);
        assert_eq!(seqs(&resent), [None, Some(2), Some(3), Some(4)]);
        assert_eq!(resent[1].1, pong(2));
        assert_eq!(resent[3].1, pong(4));
    }

    #[test]
    fn a_gap_and_an_ended_session_cannot_be_resumed() {
        let out = Arc::new(SessionOutbound::new(1000));
        // A recovery buffer of 30 bytes holds one pong at a time.
        out.start_numbering(Bytes::from_static(b"{}"), 30);
        for cid in 1..=3 {
            out.push_control(pong(cid)).unwrap();
            let _ = out.lock().take_output();
        }
        out.close(CloseReason::HeartbeatTimeout);
        assert!(out.detach(0));
        assert_eq!(out.take_over(0, Bytes::new()), Err(RecoveryRefusal::Gap));
        assert!(out.end_if_detached(0));
        assert_eq!(
            out.take_over(2, Bytes::new()),
            Err(RecoveryRefusal::UnknownSession)
        );
        assert_eq!(out.push_control(pong(9)), Err(PushError::Closing));
    }

    #[test]
    fn version_1_sessions_do_not_survive_their_connection() {
        let out = Arc::new(SessionOutbound::new(1000));
        out.close(CloseReason::ConnectionLost);
        assert!(!out.detach(0));
        assert_eq!(out.push_control(pong(1)), Err(PushError::Closing));
    }
}
