//! A session's outbound queue: bounded in bytes, so one slow client can never make the server
//! hold an unbounded backlog.
//!
//! The queue is a plain data structure; the server wraps it in a lock and a wake-up signal. Each
//! entry may name the topic it updates, which is what per-topic conflation keys on.

use std::collections::VecDeque;

use bytes::Bytes;

/// One queued message.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The topic the message updates, if it is a topic update.
    pub topic: Option<u64>,
    /// The encoded message, shared with other sessions.
    pub bytes: Bytes,
}

/// Pushing would take the queue past its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message queue limit reached ({queued} bytes queued, limit {limit})")]
pub struct QueueLimitReached {
    /// Bytes queued when the push was refused.
    pub queued: usize,
    /// The configured limit.
    pub limit: usize,
}

/// A FIFO of encoded messages with a byte limit.
#[derive(Debug)]
pub struct OutboundQueue {
    entries: VecDeque<Outbound>,
    queued_bytes: usize,
    limit_bytes: usize,
}

impl OutboundQueue {
    /// An empty queue that refuses to grow past `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            queued_bytes: 0,
            limit_bytes,
        }
    }

    /// Appends a message, or refuses when it would pass the limit. A single message larger
    /// than the limit is accepted into an empty queue, so large values can still be delivered.
    pub fn push(&mut self, entry: Outbound) -> Result<(), QueueLimitReached> {
        let len = entry.bytes.len();
        if !self.entries.is_empty() && self.queued_bytes + len > self.limit_bytes {
            return Err(QueueLimitReached {
                queued: self.queued_bytes,
                limit: self.limit_bytes,
            });
        }
        self.queued_bytes += len;
        self.entries.push_back(entry);
        Ok(())
    }

    /// Takes everything queued, oldest first.
    pub fn drain(&mut self) -> Vec<Outbound> {
        self.queued_bytes = 0;
        self.entries.drain(..).collect()
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Messages currently queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Outbound {
        Outbound {
            topic: Some(1),
            bytes: Bytes::from(vec![b'x'; n]),
        }
    }

    #[test]
    fn refuses_past_the_limit_and_drains_in_order() {
        let mut q = OutboundQueue::new(10);
        q.push(msg(4)).unwrap();
        q.push(msg(6)).unwrap();
        let err = q.push(msg(1)).unwrap_err();
        assert_eq!(err.queued, 10);
        let drained = q.drain();
        assert_eq!(drained.len(), 2);
        assert_eq!(drained[0].bytes.len(), 4);
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn oversize_message_fits_an_empty_queue() {
        let mut q = OutboundQueue::new(10);
        q.push(msg(50)).unwrap();
        assert!(q.push(msg(1)).is_err());
    }
}
