//! One client's outbound queue: bounded in messages and in bytes, never awaited by the sender.
//!
//! The fan-out pushes with [`ClientQueue::push`], which never blocks: when the queue is full the
//! client is marked for closing ("send queue full: client too slow") and its backlog dropped, so
//! one slow reader can neither stall the others nor make the bridge hold an unbounded backlog.
//! The connection's writer task drains everything queued at once and learns through
//! [`ClientQueue::interrupted`] when it should stop waiting on a stuck socket.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::extract::ws::{CloseFrame, Message};
use tokio::sync::Notify;

use crate::close;

/// How much one client may have queued before it counts as too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Most messages queued.
    pub messages: usize,
    /// Most bytes queued (a lone message larger than this is still accepted).
    pub bytes: usize,
}

/// Why and how the connection is ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Send this close frame (after whatever is still queued), then end.
    Send(CloseFrame),
    /// The peer is gone or has closed: end without sending anything more.
    Quiet,
}

/// What became of a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued for the writer.
    Queued,
    /// The queue was full: the client is now being closed as too slow, its backlog dropped.
    Overflowed,
    /// The client is already closing; the message was dropped.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Message>,
    bytes: usize,
    closing: Option<Closing>,
}

/// The queue between the fan-out (and the connection's own reader) and one client's writer.
#[derive(Debug)]
pub(crate) struct ClientQueue {
    limits: QueueLimits,
    state: Mutex<State>,
    /// The writer has something to do (a message or a close). One waiter, so a permit stored by
    /// `notify_one` is never lost between checking the queue and waiting.
    wake: Notify,
    /// The writer should abandon a write that is stuck on a slow socket: the client is closing.
    interrupt: Notify,
}

impl ClientQueue {
    /// An empty, open queue.
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            interrupt: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (every update is a few plain
        // assignments), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` without waiting. A full queue closes the client as too slow.
    pub(crate) fn push(&self, message: Message) -> Push {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Push::Closed;
        }
        let len = message_len(&message);
        let full = state.items.len() >= self.limits.messages
            || (!state.items.is_empty() && state.bytes.saturating_add(len) > self.limits.bytes);
        if full {
            state.items.clear();
            state.bytes = 0;
            state.closing = Some(Closing::Send(close::frame(close::SLOW_CLIENT)));
            drop(state);
            self.signal_closing();
            return Push::Overflowed;
        }
        state.bytes += len;
        state.items.push_back(message);
        drop(state);
        self.wake.notify_one();
        Push::Queued
    }

    /// Asks the writer to send `frame` (after anything already queued) and end. The first
    /// close wins; returns false if the client was already closing.
    pub(crate) fn close(&self, frame: CloseFrame) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.closing = Some(Closing::Send(frame));
        drop(state);
        self.signal_closing();
        true
    }

    /// Ends the writer without sending anything more: the peer is gone or has closed.
    pub(crate) fn close_quietly(&self) {
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

    /// Moves everything queued into `batch` (oldest first) and reports whether the client is
    /// closing.
    pub(crate) fn take(&self, batch: &mut Vec<Message>) -> Option<Closing> {
        let mut state = self.lock();
        batch.extend(state.items.drain(..));
        state.bytes = 0;
        state.closing.clone()
    }

    /// Completes when there may be something new to take.
    pub(crate) async fn wait_for_work(&self) {
        self.wake.notified().await;
    }

    /// Completes once the client is closing.
    pub(crate) async fn interrupted(&self) {
        loop {
            if self.lock().closing.is_some() {
                return;
            }
            self.interrupt.notified().await;
        }
    }

    /// Messages currently queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

/// The payload size a message adds to a queue.
fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    fn queue(messages: usize, bytes: usize) -> ClientQueue {
        ClientQueue::new(QueueLimits { messages, bytes })
    }

    #[test]
    fn message_limit_overflows_and_drops_the_backlog() {
        let q = queue(2, 1000);
        assert_eq!(q.push(text("a")), Push::Queued);
        assert_eq!(q.push(text("b")), Push::Queued);
        assert_eq!(q.push(text("c")), Push::Overflowed);
        assert_eq!(q.len(), 0);
        assert_eq!(q.push(text("d")), Push::Closed);
        let mut batch = Vec::new();
        let closing = q.take(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(
            closing,
            Some(Closing::Send(close::frame(close::SLOW_CLIENT)))
        );
    }

    #[test]
    fn byte_limit_overflows_but_a_lone_big_message_is_accepted() {
        let q = queue(100, 4);
        assert_eq!(q.push(text("0123456789")), Push::Queued);
        assert_eq!(q.push(text("x")), Push::Overflowed);

        let q = queue(100, 4);
        assert_eq!(q.push(text("ab")), Push::Queued);
        assert_eq!(q.push(text("cd")), Push::Queued);
        assert_eq!(q.push(text("e")), Push::Overflowed);
    }

    #[test]
    fn take_drains_in_order_and_frees_room() {
        let q = queue(2, 1000);
        q.push(text("a"));
        q.push(text("b"));
        let mut batch = Vec::new();
        assert_eq!(q.take(&mut batch), None);
        assert_eq!(batch, vec![text("a"), text("b")]);
        assert_eq!(q.push(text("c")), Push::Queued);
    }

    #[test]
    fn first_close_wins_and_keeps_the_backlog() {
        let q = queue(10, 1000);
        q.push(text("a"));
        assert!(q.close(close::frame(close::SHUTTING_DOWN)));
        assert!(!q.close(close::frame(close::TOO_BIG)));
        let mut batch = Vec::new();
        assert_eq!(
            q.take(&mut batch),
            Some(Closing::Send(close::frame(close::SHUTTING_DOWN)))
        );
        assert_eq!(batch, vec![text("a")]);
    }

    #[tokio::test]
    async fn interrupted_fires_on_close_even_if_it_came_first() {
        let q = queue(10, 1000);
        q.close_quietly();
        tokio::time::timeout(std::time::Duration::from_secs(1), q.interrupted())
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), q.wait_for_work())
            .await
            .unwrap();
    }
}
