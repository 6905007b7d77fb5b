//! One client's outbound queue: the shared [`service_kit::outbound::BoundedQueue`], holding
//! WebSocket messages and closing a client that falls too far behind with "send queue full:
//! client too slow".
//!
//! The fan-out pushes without ever waiting: when the queue is full the client is marked for
//! closing and its backlog dropped, so one slow reader can neither stall the others nor make the
//! bridge hold an unbounded backlog. The connection's writer (see [`crate::client`]) drains
//! everything queued at once.

use axum::extract::ws::{CloseFrame, Message};
use service_kit::outbound::BoundedQueue;
pub(crate) use service_kit::outbound::{Closing, Push, QueueLimits};

use crate::close;

/// The queue between the fan-out (and the connection's own reader) and one client's writer;
/// closes are WebSocket close frames.
pub(crate) type ClientQueue = BoundedQueue<Message, CloseFrame>;

/// An empty, open client queue within `limits`.
pub(crate) fn new_queue(limits: QueueLimits) -> ClientQueue {
    BoundedQueue::new(limits, message_len, close::frame(close::SLOW_CLIENT))
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

    #[test]
    fn overflow_closes_as_a_slow_client_and_sizes_are_payload_bytes() {
        let q = new_queue(QueueLimits {
            messages: 100,
            bytes: 4,
        });
        assert_eq!(q.push(text("ab")), Push::Queued);
        assert_eq!(q.push(text("cd")), Push::Queued);
        assert_eq!(q.push(text("e")), Push::Overflowed);
        let mut batch = Vec::new();
        assert_eq!(
            q.take(&mut batch),
            Some(Closing::Send(close::frame(close::SLOW_CLIENT)))
        );
        assert!(batch.is_empty());
    }
}
