//! A connection's outbound path, written once: a bounded queue that closes the connection when
//! its limit is passed, and a writer that takes everything queued at once, turns it into as few
//! frames as it can, feeds them all and flushes once.
//!
//! Producers (a fan-out, the connection's own reader) [`BoundedQueue::push`] without ever
//! waiting, so one slow reader can neither stall the others nor make a server hold an unbounded
//! backlog: the push that passes the limit drops the backlog and closes the connection instead.
//! The writer ([`run_writer`]) only knows the [`Drain`] trait — "wait, then take everything
//! queued" — so a queue with other rules (a conflating queue, a cursor into a shared log) plugs
//! into the same writer by implementing it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_util::{Sink, SinkExt};
use tokio::sync::Notify;

/// What a writer drains: everything queued, in one go.
pub trait Drain: Send {
    /// One queued message.
    type Item: Send;
    /// Why and how the connection ends, when it does.
    type Closing: Send;

    /// Waits until there is something to do, then moves everything queued into `batch` (oldest
    /// first). `Some` means the connection is ending: `batch` then holds what is still due
    /// before the close, if anything.
    fn next_batch(
        &mut self,
        batch: &mut Vec<Self::Item>,
    ) -> impl Future<Output = Option<Self::Closing>> + Send;

    /// Completes when the writer should abandon a write stuck on a slow socket (the connection
    /// is closing). The default never completes.
    fn interrupted(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// How a [`run_writer`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterEnd<C, E> {
    /// The queue said the connection ends; the batch holds what is still due before the close.
    Closing(C),
    /// Writing to the socket failed.
    Failed(E),
}

/// Drains `queue` onto `sink` until the queue says the connection ends or a write fails: takes
/// everything queued, lets `pack` turn it into frames (packing several messages into one frame
/// where the protocol allows; draining the items it is given), feeds them all and flushes once.
/// A write still under way when [`Drain::interrupted`] fires is abandoned. On
/// [`WriterEnd::Closing`], `batch` holds the items still due (not yet packed).
pub async fn run_writer<D, S, F>(
    sink: &mut S,
    queue: &mut D,
    batch: &mut Vec<D::Item>,
    mut pack: impl FnMut(&mut Vec<D::Item>, &mut Vec<F>) + Send,
) -> WriterEnd<D::Closing, S::Error>
where
    D: Drain,
    S: Sink<F> + Unpin + Send,
    F: Send,
    S::Error: Send,
{
    loop {
        if let Some(closing) = queue.next_batch(batch).await {
            return WriterEnd::Closing(closing);
        }
        // A fresh vector per batch: an idle connection keeps no buffer from its last burst.
        let mut frames = Vec::new();
        pack(batch, &mut frames);
        batch.clear();
        tokio::select! {
            written = write_all(sink, frames.drain(..)) => {
                if let Err(error) = written {
                    return WriterEnd::Failed(error);
                }
            }
            // A slow socket must not delay a close: abandon the write; the next batch says why.
            () = queue.interrupted() => frames.clear(),
        }
    }
}

/// Feeds every frame, then flushes once.
pub async fn write_all<S, F>(
    sink: &mut S,
    frames: impl IntoIterator<Item = F>,
) -> Result<(), S::Error>
where
    S: Sink<F> + Unpin,
{
    for frame in frames {
        sink.feed(frame).await?;
    }
    sink.flush().await
}

/// How much one connection may have queued before it counts as too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages queued.
    pub messages: usize,
    /// Most bytes queued (a lone message larger than this is still accepted).
    pub bytes: usize,
}

/// Why and how a connection is ending, as a [`BoundedQueue`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing<C> {
    /// Send this close (after whatever is still queued), then end.
    Send(C),
    /// The peer is gone or has closed: end without sending anything more.
    Quiet,
}

/// What became of a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the writer.
    Queued,
    /// The queue was full: the connection is now closing as too slow, its backlog dropped.
    Overflowed,
    /// The connection is already closing; the message was dropped.
    Closed,
}

#[derive(Debug)]
struct State<T, C> {
    items: VecDeque<T>,
    bytes: usize,
    closing: Option<Closing<C>>,
}

/// A queue bounded in messages and in bytes between producers and one writer, never awaited by
/// producers. `C` is the close the connection gets (a close frame, say).
#[derive(Debug)]
pub struct BoundedQueue<T, C> {
    limits: QueueLimits,
    /// The bytes an item adds to the queue.
    weigh: fn(&T) -> usize,
    /// The close sent when a push passes the limits.
    overflow: C,
    state: Mutex<State<T, C>>,
    /// The writer has something to do (a message or a close). One waiter, so a permit stored by
    /// `notify_one` is never lost between checking the queue and waiting.
    wake: Notify,
    /// The writer should abandon a write that is stuck on a slow socket: the connection closes.
    interrupt: Notify,
}

impl<T, C: Clone> BoundedQueue<T, C> {
    /// An empty, open queue within `limits`, measuring items with `weigh`, that closes with
    /// `overflow` when a push would pass the limits.
    pub fn new(limits: QueueLimits, weigh: fn(&T) -> usize, overflow: C) -> Self {
        Self {
            limits,
            weigh,
            overflow,
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closing: None,
            }),
            wake: Notify::new(),
            interrupt: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, C>> {
        // The state stays consistent even if a holder panicked (every update is a few plain
        // assignments), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` without waiting. A push past the limits drops the backlog and closes the
    /// connection with the overflow close.
    pub fn push(&self, item: T) -> Push {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Push::Closed;
        }
        let len = (self.weigh)(&item);
        let full = state.items.len() >= self.limits.messages
            || (!state.items.is_empty() && state.bytes.saturating_add(len) > self.limits.bytes);
        if full {
            state.items.clear();
            state.bytes = 0;
            state.closing = Some(Closing::Send(self.overflow.clone()));
            drop(state);
            self.signal_closing();
            return Push::Overflowed;
        }
        state.bytes += len;
        state.items.push_back(item);
        drop(state);
        self.wake.notify_one();
        Push::Queued
    }

    /// Asks the writer to send `close` (after anything already queued) and end. The first
    /// close wins; returns false if the connection was already closing.
    pub fn close(&self, close: C) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.closing = Some(Closing::Send(close));
        drop(state);
        self.signal_closing();
        true
    }

    /// Ends the writer without sending anything more: the peer is gone or has closed.
    pub fn close_quietly(&self) {
        let mut state = self.lock();
        state.items.clear();
        state.bytes = 0;
        state.closing = Some(Closing::Quiet);
        drop(state);
        self.signal_closing();
    }

    fn signal_closing(&self) {
        self.wake.notify_one();
        self.interrupt.notify_one();
    }

    /// Moves everything queued into `batch` (oldest first) and reports whether the connection
    /// is closing.
    pub fn take(&self, batch: &mut Vec<T>) -> Option<Closing<C>> {
        let mut state = self.lock();
        batch.extend(state.items.drain(..));
        state.bytes = 0;
        state.closing.clone()
    }

    /// Messages queued now (for tests and gauges).
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writer's side: a shared queue is drained through a reference to it.
impl<T: Send, C: Clone + Send + Sync> Drain for &BoundedQueue<T, C> {
    type Item = T;
    type Closing = Closing<C>;

    async fn next_batch(&mut self, batch: &mut Vec<T>) -> Option<Closing<C>> {
        loop {
            let closing = self.take(batch);
            if closing.is_some() || !batch.is_empty() {
                return closing;
            }
            self.wake.notified().await;
        }
    }

    async fn interrupted(&mut self) {
        loop {
            if self.lock().closing.is_some() {
                return;
            }
            self.interrupt.notified().await;
        }
    }
}
