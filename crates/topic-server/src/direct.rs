//! Direct writes: a session's messages go onto its socket from the thread that produced them.
//!
//! The usual path for a message is queue → wake the session's writer task → the writer packs
//! and writes. At a modest rate per session (one message per frame) that path costs a task
//! wake-up, a scheduler round and a copy into the WebSocket layer's buffer for every delivery,
//! more than the write itself. So on a plain-TCP connection the socket is shared
//! ([`DirectSocket`]) and an engine operation flushes the sessions it queued for as soon as it
//! has released the engine lock ([`FlushScope`]): each takes its queue and writes the frames
//! with one non-blocking `send`. Only when the socket cannot take everything does the writer
//! task come in, to write the rest once the socket is writable. The flushing is done by one
//! thread per core ([`flush_all`]): a fan-out to many sessions is split across them, and when
//! they fall behind a producer, what queued meanwhile goes out packed in one write.
//!
//! Order is kept by one rule: bytes reach the socket only under its `unsent` lock, as whole
//! frames, after whatever is already waiting there. The WebSocket layer's own writes (pongs,
//! the answer to a close) go through the same lock ([`ConnIo`]), and a session's queue is only
//! taken by a direct flush while its writer task has nothing in hand (see `outbound`).
//!
//! What waits unsent is bounded: a direct flush takes a session's queue only when nothing
//! waits, so at most one taken queue (itself within the queue limit) waits there, and the
//! writer task and the WebSocket layer stop adding past [`MAX_UNSENT_BYTES`]. Bytes waiting
//! there can no longer be conflated: a slow session may hold up to its queue limit there and
//! as much again in its queue before it is closed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use service_kit::http_server::LingeringStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::outbound::SessionOutbound;

/// Most bytes the WebSocket layer's own writes may leave waiting on a socket that does not
/// take them (a client flooding pings it never reads the pongs of); beyond this its writes wait.
const MAX_UNSENT_BYTES: usize = 1024 * 1024;

/// Most buffers handed to one `writev` (Linux accepts 1,024).
const MAX_IOVECS: usize = 512;

/// Writes up to this many bytes are copied into one buffer on the stack and sent whole.
const CONTIGUOUS_WRITE_MAX: usize = 2048;

/// A fan-out to at least this many sessions is split across the flush threads.
const PARALLEL_FLUSH_MIN: usize = 1024;

/// Lists of sessions each flush thread may have waiting; beyond that the producer flushes
/// itself.
const FLUSH_QUEUE_LISTS: usize = 1024;

/// One frame ready for the socket: its header (built here) and its payload (shared).
#[derive(Debug, Clone)]
pub(crate) struct RawFrame {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
}

impl RawFrame {
    /// A text frame carrying `payload` (server frames are not masked).
    pub fn text(payload: Bytes) -> Self {
        Self::new(0x1, payload)
    }

    /// A ping with no payload.
    pub fn ping() -> Self {
        Self::new(0x9, Bytes::new())
    }

    fn new(opcode: u8, payload: Bytes) -> Self {
        let mut header = [0u8; 10];
        header[0] = 0x80 | opcode;
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            header,
            header_len,
            payload,
        }
    }

    fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// Header and payload length together.
    pub fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }
}

/// Bytes accepted for the socket that it has not taken yet, in order.
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    parts: VecDeque<Bytes>,
    bytes: usize,
}

impl Unsent {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.bytes += part.len();
            self.parts.push_back(part);
        }
    }

    /// Drops the first `n` bytes (written). Once empty it lets go of the room a burst took.
    fn advance(&mut self, mut n: usize) {
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.parts.pop_front();
            } else {
                let rest = front.slice(n..);
                *front = rest;
                break;
            }
        }
        if self.parts.is_empty() {
            self.parts = VecDeque::new();
        }
    }

    /// Keeps the parts of `frames` from byte `written` on (the socket took the rest).
    fn keep_after(&mut self, frames: &[RawFrame], mut written: usize) {
        for frame in frames {
            let header = frame.header();
            if written >= header.len() {
                written -= header.len();
            } else {
                self.push(Bytes::copy_from_slice(&header[written..]));
                written = 0;
            }
            if written >= frame.payload.len() {
                written -= frame.payload.len();
            } else {
                self.push(frame.payload.slice(written..));
                written = 0;
            }
        }
    }
}

/// A plain-TCP WebSocket connection's socket, shared by its reader, its writer task and every
/// thread that flushes the session directly.
pub(crate) struct DirectSocket {
    stream: LingeringStream,
    unsent: Mutex<Unsent>,
    /// The tasks waiting for the socket to take more (the writer, and the reader when the
    /// WebSocket layer flushes a pong): tokio keeps one waker per direction, the last one
    /// registered, so the socket is given [`Self::wake_waiters`], which wakes them all.
    waiters: Arc<WriteWaiters>,
    wake_waiters: Waker,
}

/// Every task waiting for a socket to be writable, woken together.
#[derive(Default)]
struct WriteWaiters {
    wakers: Mutex<Vec<Waker>>,
}

impl WriteWaiters {
    fn add(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl Wake for WriteWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl DirectSocket {
    /// Shares `stream`.
    pub fn new(stream: LingeringStream) -> Arc<Self> {
        let waiters = Arc::new(WriteWaiters::default());
        Arc::new(Self {
            stream,
            unsent: Mutex::new(Unsent::default()),
            wake_waiters: Waker::from(Arc::clone(&waiters)),
            waiters,
        })
    }

    /// The write lock: whoever holds it may put bytes on the socket, after what waits.
    pub fn lock_unsent(&self) -> MutexGuard<'_, Unsent> {
        // Every critical section leaves `Unsent` consistent, so a poisoned lock is usable.
        self.unsent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `frames` without waiting, under the held write lock: what the socket does not
    /// take now waits in `unsent` for the writer task. Returns whether everything went.
    pub fn write_frames(&self, unsent: &mut Unsent, frames: &[RawFrame]) -> io::Result<bool> {
        if !unsent.is_empty() {
            unsent.keep_after(frames, 0);
            return Ok(false);
        }
        let tcp = self.stream.tcp()?;
        // Small writes (one update to a session keeping up, the common case) are copied into
        // one buffer and sent with `send`: cheaper for the kernel than `writev`, which also
        // takes the file's position lock.
        let total: usize = frames.iter().map(RawFrame::len).sum();
        if total <= CONTIGUOUS_WRITE_MAX {
            let mut buffer = [0u8; CONTIGUOUS_WRITE_MAX];
            let mut at = 0;
            for frame in frames {
                for part in [frame.header(), &frame.payload[..]] {
                    buffer[at..at + part.len()].copy_from_slice(part);
                    at += part.len();
                }
            }
            let written = match tcp.try_write(&buffer[..total]) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => return Err(error),
            };
            if written < total {
                unsent.keep_after(frames, written);
                return Ok(false);
            }
            return Ok(true);
        }
        let mut start = 0;
        while start < frames.len() {
            let end = (start + MAX_IOVECS / 2).min(frames.len());
            let chunk = &frames[start..end];
            let mut slices = Vec::with_capacity(chunk.len() * 2);
            for frame in chunk {
                slices.push(IoSlice::new(frame.header()));
                if !frame.payload.is_empty() {
                    slices.push(IoSlice::new(&frame.payload));
                }
            }
            let total: usize = chunk.iter().map(RawFrame::len).sum();
            let written = match tcp.try_write_vectored(&slices) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => return Err(error),
            };
            if written < total {
                unsent.keep_after(chunk, written);
                unsent.keep_after(&frames[end..], 0);
                return Ok(false);
            }
            start = end;
        }
        Ok(true)
    }

    /// Writes what waits until it is all gone (or the socket is not writable: then the task
    /// is woken when it is).
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tcp = self.stream.tcp()?;
        let mut unsent = self.lock_unsent();
        if unsent.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Whichever task the socket wakes, every waiting one is woken.
        self.waiters.add(cx.waker());
        let mut shared = Context::from_waker(&self.wake_waiters);
        while !unsent.is_empty() {
            ready!(tcp.poll_write_ready(&mut shared))?;
            let slices: Vec<IoSlice<'_>> = unsent
                .parts
                .iter()
                .take(MAX_IOVECS)
                .map(|p| IoSlice::new(p))
                .collect();
            match tcp.try_write_vectored(&slices) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => unsent.advance(n),
                // Readiness was cleared: the next `poll_write_ready` registers the waker.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        drop(unsent);
        // Anyone else waiting for these bytes to go need not wait for the next event.
        self.wake_waiters.wake_by_ref();
        Poll::Ready(Ok(()))
    }

    /// The WebSocket layer's write of `buf` (whole frames or pieces of one): accepted whole,
    /// after what waits, so that a direct write never lands inside it.
    fn poll_accept(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let over = self.lock_unsent().bytes + buf.len() > MAX_UNSENT_BYTES;
        if over {
            ready!(self.poll_drain(cx))?;
        }
        let tcp = self.stream.tcp()?;
        let mut unsent = self.lock_unsent();
        let written = if unsent.is_empty() {
            match tcp.try_write(buf) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => return Poll::Ready(Err(error)),
            }
        } else {
            0
        };
        unsent.push(Bytes::copy_from_slice(&buf[written..]));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let tcp: &TcpStream = self.stream.tcp()?;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match tcp.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// The writer task's way onto a plain-TCP socket: data frames go out as [`RawFrame`]s through
/// the same write lock as direct flushes, never through the WebSocket layer's buffer (which
/// would keep the capacity of the largest burst for the life of the connection).
pub(crate) struct DirectSink {
    socket: Arc<DirectSocket>,
}

impl DirectSink {
    /// A sink onto `socket`.
    pub fn new(socket: Arc<DirectSocket>) -> Self {
        Self { socket }
    }
}

impl futures_util::Sink<RawFrame> for DirectSink {
    type Error = io::Error;

    /// Ready while what waits unsent is under the limit; beyond it, waits for the socket.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.socket.lock_unsent().bytes >= MAX_UNSENT_BYTES {
            return self.socket.poll_drain(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: RawFrame) -> io::Result<()> {
        let mut unsent = self.socket.lock_unsent();
        self.socket
            .write_frames(&mut unsent, std::slice::from_ref(&frame))
            .map(|_| ())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_drain(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_drain(cx)
    }
}

/// What a WebSocket session runs on: a plain-TCP socket shared for direct writes, or any other
/// upgraded connection (TLS), written by the writer task alone.
pub(crate) enum ConnIo {
    /// Plain TCP.
    Direct(Arc<DirectSocket>),
    /// TLS (or anything hyper upgraded that is not plain TCP).
    Upgraded(Box<TokioIo<Upgraded>>),
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(socket) => socket.poll_read(cx, buf),
            Self::Upgraded(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(socket) => socket.poll_accept(cx, buf),
            Self::Upgraded(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(socket) => socket.poll_drain(cx),
            Self::Upgraded(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    /// Plain TCP: writes what waits; the socket's write side is shut when it is dropped
    /// (lingering close).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(socket) => socket.poll_drain(cx),
            Self::Upgraded(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

thread_local! {
    /// Sessions queued for during the engine operation running on this thread.
    static DEFERRED: RefCell<Option<Vec<Arc<SessionOutbound>>>> = const { RefCell::new(None) };
}

/// While alive, sessions queued for on this thread are flushed when it drops (the engine
/// holds one with its lock guard, dropped just after the lock). Nested scopes join the
/// outermost.
pub(crate) struct FlushScope {
    owner: bool,
}

impl FlushScope {
    /// Opens a scope on this thread (or joins the one open).
    pub fn open() -> Self {
        let owner = DEFERRED.with(|deferred| {
            let mut deferred = deferred.borrow_mut();
            match *deferred {
                Some(_) => false,
                None => {
                    *deferred = Some(Vec::new());
                    true
                }
            }
        });
        Self { owner }
    }
}

impl Drop for FlushScope {
    fn drop(&mut self) {
        if self.owner
            && let Some(sessions) = DEFERRED.with(|deferred| deferred.borrow_mut().take())
            && !sessions.is_empty()
        {
            flush_all(sessions);
        }
    }
}

/// Leaves `outbound` to be flushed when this thread's scope closes; false when no scope is
/// open (the caller then wakes the writer task).
pub(crate) fn defer(outbound: &Arc<SessionOutbound>) -> bool {
    DEFERRED.with(|deferred| match deferred.borrow_mut().as_mut() {
        Some(sessions) => {
            sessions.push(Arc::clone(outbound));
            true
        }
        None => false,
    })
}

/// The flush threads, one per core: they write what engine operations queued, so that the
/// thread that produced an update goes on at once. A thread that falls behind finds several
/// updates queued for a session when it gets to it, and writes them packed into one frame:
/// under load, writes coalesce by themselves instead of costing one system call per update.
struct FlushPool {
    workers: Vec<SyncSender<Vec<Arc<SessionOutbound>>>>,
    next: AtomicUsize,
}

fn pool() -> &'static FlushPool {
    static POOL: OnceLock<FlushPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The threads enter the runtime that started them, so that a socket whose last
        // reference goes on one of them still closes the lingering way (which spawns a task).
        let runtime = tokio::runtime::Handle::try_current().ok();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let mut workers = Vec::new();
        for index in 0..cores {
            let (sender, receiver) = std::sync::mpsc::sync_channel(FLUSH_QUEUE_LISTS);
            let runtime = runtime.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("flush-{index}"))
                .spawn(move || {
                    let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    flush_worker(receiver);
                });
            match spawned {
                Ok(_) => workers.push(sender),
                Err(error) => tracing::warn!(%error, "could not start a flush thread"),
            }
        }
        FlushPool {
            workers,
            next: AtomicUsize::new(0),
        }
    })
}

fn flush_worker(lists: Receiver<Vec<Arc<SessionOutbound>>>) {
    while let Ok(list) = lists.recv() {
        for outbound in list {
            outbound.flush();
        }
    }
}

/// Hands `sessions` to the flush threads: a long list in one share per thread, a short one to
/// the next thread in turn. A share no thread can take now (each has
/// [`FLUSH_QUEUE_LISTS`] waiting) is flushed here, which slows the producer down to the
/// pace of the sockets.
pub(crate) fn flush_all(mut sessions: Vec<Arc<SessionOutbound>>) {
    let pool = pool();
    let workers = pool.workers.len();
    if workers == 0 {
        sessions.into_iter().for_each(|o| o.flush());
        return;
    }
    let shares = if sessions.len() >= PARALLEL_FLUSH_MIN {
        workers
    } else {
        1
    };
    let share = sessions.len().div_ceil(shares);
    let first = pool.next.fetch_add(shares, Ordering::Relaxed);
    let mut overflow = Vec::new();
    for index in 0..shares {
        if sessions.is_empty() {
            break;
        }
        let theirs = sessions.split_off(sessions.len().saturating_sub(share));
        let worker = &pool.workers[(first + index) % workers];
        if let Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) =
            worker.try_send(theirs)
        {
            overflow.extend(back);
        }
    }
    for outbound in overflow {
        outbound.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_length_boundaries() {
        for (len, header_len, second) in [
            (0, 2, 0u8),
            (125, 2, 125),
            (126, 4, 126),
            (65_535, 4, 126),
            (65_536, 10, 127),
        ] {
            let frame = RawFrame::text(Bytes::from(vec![b'x'; len]));
            assert_eq!(frame.header().len(), header_len, "{len}");
            assert_eq!(frame.header()[0], 0x81);
            assert_eq!(frame.header()[1], second);
            assert_eq!(frame.len(), header_len + len);
            match header_len {
                4 => assert_eq!(
                    u16::from_be_bytes([frame.header[2], frame.header[3]]),
                    len as u16
                ),
                10 => assert_eq!(
                    u64::from_be_bytes(frame.header[2..10].try_into().unwrap()),
                    len as u64
                ),
                _ => {}
            }
        }
        assert_eq!(RawFrame::ping().header(), &[0x89, 0]);
    }

    fn flatten(unsent: &Unsent) -> Vec<u8> {
        unsent
            .parts
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect()
    }

    #[test]
    fn what_the_socket_did_not_take_is_kept_in_order() {
        let frames = [
            RawFrame::text(Bytes::from_static(b"abc")),
            RawFrame::text(Bytes::from_static(b"defg")),
        ];
        let all: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.header().iter().chain(f.payload.iter()).copied())
            .collect();
        for written in 0..=all.len() {
            let mut unsent = Unsent::default();
            unsent.keep_after(&frames, written);
            assert_eq!(flatten(&unsent), all[written..], "after {written} bytes");
            assert_eq!(unsent.bytes, all.len() - written);
        }
        let mut unsent = Unsent::default();
        unsent.keep_after(&frames, 0);
        unsent.advance(4);
        assert_eq!(flatten(&unsent), all[4..]);
        unsent.advance(all.len());
        assert!(unsent.is_empty());
        assert_eq!(unsent.bytes, 0);
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counted(std::sync::atomic::AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn every_task_waiting_for_the_socket_is_woken_whichever_registered_last() {
        // The writer waits first, the reader (flushing a pong) second: the socket keeps one
        // waker, the shared one, and waking it must reach both.
        let waiters = Arc::new(WriteWaiters::default());
        let shared = Waker::from(Arc::clone(&waiters));
        let (writer, reader) = (Arc::new(Counted::default()), Arc::new(Counted::default()));
        let (writer_waker, reader_waker) = (
            Waker::from(Arc::clone(&writer)),
            Waker::from(Arc::clone(&reader)),
        );
        waiters.add(&writer_waker);
        waiters.add(&reader_waker);
        waiters.add(&writer_waker);
        shared.wake_by_ref();
        assert_eq!(
            writer.0.load(Ordering::Relaxed),
            1,
            "the writer was not woken once"
        );
        assert_eq!(reader.0.load(Ordering::Relaxed), 1);
        // Woken tasks register again when they wait again.
        shared.wake_by_ref();
        assert_eq!(writer.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_scope_collects_only_while_open_and_nests() {
        let outbound = Arc::new(SessionOutbound::new(1024));
        assert!(!defer(&outbound));
        {
            let _outer = FlushScope::open();
            {
                let inner = FlushScope::open();
                assert!(!inner.owner);
                assert!(defer(&outbound));
            }
            // The inner scope did not flush: the list is still the outer one's.
            assert!(DEFERRED.with(|d| d.borrow().as_ref().is_some_and(|l| l.len() == 1)));
        }
        assert!(DEFERRED.with(|d| d.borrow().is_none()));
        assert!(!defer(&outbound));
    }
}
