//! The relay's inbox: channel messages in, the latest one that is JSON kept, as bytes.
//!
//! Each payload is checked to be one JSON value ([`RawValue`]: validated, never parsed into a
//! tree) and kept as the text it arrived as, so the topic server gets exactly the bytes that were
//! published — numbers included. Only the latest message is kept: while the topic server is away
//! a newer message supersedes an older one, since a stateful topic's subscribers would only see
//! the latest anyway. Oversize and non-JSON messages are counted, logged and skipped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::value::RawValue;
use service_kit::redis_subscription::SubscriptionEvent;
use tokio::sync::mpsc;

use crate::relay::RelayStats;

/// The source's events and the message waiting to be set.
#[derive(Debug)]
pub(crate) struct Inbox {
    events: mpsc::Receiver<SubscriptionEvent>,
    pending: Option<Box<RawValue>>,
    stats: Arc<RelayStats>,
    max_message_bytes: usize,
}

impl Inbox {
    /// An inbox reading `events`, skipping messages over `max_message_bytes`, counting in `stats`.
    pub fn new(
        events: mpsc::Receiver<SubscriptionEvent>,
        stats: Arc<RelayStats>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            events,
            pending: None,
            stats,
            max_message_bytes,
        }
    }

    /// Waits for the next source event and takes it in; false once the source has ended.
    pub async fn receive(&mut self) -> bool {
        match self.events.recv().await {
            Some(event) => {
                self.collect(event);
                true
            }
            None => false,
        }
    }

    /// Runs `work` to completion, taking in source events meanwhile, so the source's reader
    /// never stalls while the topic server is being (re)connected.
    pub async fn receive_during<F: Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                Some(event) = self.events.recv() => self.collect(event),
            }
        }
    }

    /// The message to set next, if one is waiting.
    pub fn take(&mut self) -> Option<Box<RawValue>> {
        self.pending.take()
    }

    /// A message that could not be set: keep it for the next connection, unless a newer one
    /// has arrived meanwhile.
    pub fn put_back(&mut self, value: Box<RawValue>) {
        if self.pending.is_none() {
            self.pending = Some(value);
        }
    }

    /// Takes in one source event: a message that is JSON (and not too large) becomes the
    /// pending one.
    fn collect(&mut self, event: SubscriptionEvent) {
        let SubscriptionEvent::Message(payload) = event else {
            return;
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if payload.len() > self.max_message_bytes {
            self.stats.skipped_oversize.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                bytes = payload.len(),
                limit = self.max_message_bytes,
                "skipping channel message larger than the limit"
            );
            return;
        }
        match raw_json(&payload) {
            Ok(value) => {
                if self.pending.replace(value).is_some() {
                    self.stats.superseded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                self.stats.skipped_invalid.fetch_add(1, Ordering::Relaxed);
                let preview: String = String::from_utf8_lossy(&payload).chars().take(80).collect();
                tracing::warn!(%error, %preview, "skipping channel message that is not JSON");
            }
        }
    }
}

/// `payload` as one JSON value, validated and copied once, never parsed into a tree. Whitespace
/// around the value is dropped; everything inside it is kept byte for byte.
fn raw_json(payload: &Bytes) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::from_slice(payload)
}
