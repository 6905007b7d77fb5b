//! A session's outbound queue with per-topic conflation (reference §5).
//!
//! The queue holds encoded messages (`Bytes` shared with every other session) and is bounded in
//! bytes. It also remembers, per topic, which version of the value the session will hold once
//! the queue drains, so the server can hand it the shared delta when it is in step and the full
//! value when it is not.
//!
//! Policies, from the topic's `CONFLATION` property:
//! - `off`: updates are never merged;
//! - `conflate` (default): when the queue goes over its limit, every topic's queued updates are
//!   reduced to one message — the latest full value or one composite delta from the value the
//!   session holds, whichever is smaller;
//! - `always`: a topic never has more than one queued update;
//! - `unsubscribe`: under back pressure the session is unsubscribed from the topic.
//!
//! If the queue is still over its limit after that, the push fails and the server closes the
//! session ("message queue limit reached").
//!
//! The limit counts what the queue really keeps in memory, not only what it will send: an
//! update queued as a 40-byte delta still keeps its full value message, its new value and the
//! value it applies to alive, so all of those count (shared buffers are counted by every queue
//! that holds them: a bound, not a census). A stalled subscriber of large values therefore
//! conflates, and if need be is closed, long before it can pin much memory.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::delta;
use crate::protocol::encode_delta_message;
use crate::topic::Conflation;

/// One topic update as the server prepared it, once, for all subscribers.
#[derive(Debug, Clone)]
pub struct TopicUpdate {
    /// Server-wide topic id.
    pub topic: u64,
    /// The topic's version after this update (versions increase by one per update).
    pub version: u64,
    /// The topic's back-pressure policy.
    pub policy: Conflation,
    /// Canonical bytes of the new value, when the topic retains values and allows deltas;
    /// needed to build composite deltas.
    pub value: Option<Bytes>,
    /// Canonical bytes of the previous value (the base of `delta_message`).
    pub previous: Option<Bytes>,
    /// The encoded full-value message.
    pub value_message: Bytes,
    /// The encoded delta message from `version - 1`, when a delta exists and is smaller.
    pub delta_message: Option<Bytes>,
}

#[derive(Debug)]
enum Entry {
    /// Replies and notices: never merged.
    Control(Bytes),
    /// One update, shared with every other session that queued it (one reference count per
    /// push, whatever the update holds), sent as its delta or as its full value.
    Shared {
        /// The update.
        update: Arc<TopicUpdate>,
        /// Whether the delta message is sent (the session holds `update.previous`).
        delta: bool,
    },
    /// Several updates of one topic merged by conflation.
    Merged(Box<Merged>),
}

/// The result of conflating one topic's queued updates.
#[derive(Debug)]
struct Merged {
    topic: u64,
    policy: Conflation,
    /// What is sent: the latest full value or a composite delta.
    message: Bytes,
    /// The latest full-value message.
    value_message: Bytes,
    /// The value the session holds before this entry, when `message` is a delta against it.
    base: Option<Bytes>,
    /// The value after this entry.
    value: Option<Bytes>,
}

impl Entry {
    /// The bytes this entry sends.
    fn message(&self) -> &Bytes {
        match self {
            Self::Control(b) => b,
            Self::Shared { update, delta } => match (&update.delta_message, *delta) {
                (Some(d), true) => d,
                _ => &update.value_message,
            },
            Self::Merged(m) => &m.message,
        }
    }

    /// Every byte this entry keeps alive: the message it sends and the buffers it holds for
    /// conflation (see the module documentation).
    fn held_bytes(&self) -> usize {
        let len = |b: Option<&Bytes>| b.map_or(0, Bytes::len);
        match self {
            Self::Control(b) => b.len(),
            Self::Shared { update, .. } => {
                update.value_message.len()
                    + len(update.delta_message.as_ref())
                    + len(update.value.as_ref())
                    + len(update.previous.as_ref())
            }
            Self::Merged(m) => {
                let separate =
                    (m.message.as_ptr() != m.value_message.as_ptr()).then_some(&m.message);
                m.value_message.len() + len(separate) + len(m.base.as_ref()) + len(m.value.as_ref())
            }
        }
    }

    fn topic(&self) -> Option<u64> {
        match self {
            Self::Control(_) => None,
            Self::Shared { update, .. } => Some(update.topic),
            Self::Merged(m) => Some(m.topic),
        }
    }

    fn policy(&self) -> Option<Conflation> {
        match self {
            Self::Control(_) => None,
            Self::Shared { update, .. } => Some(update.policy),
            Self::Merged(m) => Some(m.policy),
        }
    }

    /// The value the session holds before this entry, when the entry is a delta against it.
    fn base(&self) -> Option<&Bytes> {
        match self {
            Self::Control(_) => None,
            Self::Shared { update, delta } => update.previous.as_ref().filter(|_| *delta),
            Self::Merged(m) => m.base.as_ref(),
        }
    }

    /// The value after this entry, and its full-value message.
    fn latest(&self) -> Option<(Option<&Bytes>, &Bytes)> {
        match self {
            Self::Control(_) => None,
            Self::Shared { update, .. } => Some((update.value.as_ref(), &update.value_message)),
            Self::Merged(m) => Some((m.value.as_ref(), &m.value_message)),
        }
    }
}

/// The queue is over its limit even after conflation: the session must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message queue limit reached ({queued} bytes queued, limit {limit})")]
pub struct QueueLimitReached {
    /// Bytes queued after conflation.
    pub queued: usize,
    /// The configured limit.
    pub limit: usize,
}

/// What a push did besides queueing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// Topics with the `unsubscribe` policy that back pressure removed from this session; the
    /// server must drop the subscriptions and notify the session (reason `back_pressure`).
    pub unsubscribed: Vec<u64>,
    /// Whether conflation ran during this push.
    pub conflated: bool,
}

/// Entries a drained queue keeps room for; a larger buffer (left by a burst) is freed.
const KEPT_QUEUE_CAPACITY: usize = 16;

/// A bounded, conflating FIFO of encoded messages for one session.
#[derive(Debug)]
pub struct SessionQueue {
    entries: VecDeque<Entry>,
    queued_bytes: usize,
    limit_bytes: usize,
    /// Topic → version the session will hold once everything queued is sent.
    held: HashMap<u64, u64, BuildHasherDefault<IdHasher>>,
}

/// Hashes topic ids (small sequential integers) with one multiplication instead of SipHash:
/// the map is probed once per update per session, on the fan-out path, and its keys are not
/// chosen by clients.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing spreads sequential ids over the table.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl SessionQueue {
    /// An empty queue bounded at `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            queued_bytes: 0,
            limit_bytes,
            held: HashMap::default(),
        }
    }

    /// Queues a reply or notice.
    pub fn push_control(&mut self, message: Bytes) -> Result<PushOutcome, QueueLimitReached> {
        self.queued_bytes += message.len();
        self.entries.push_back(Entry::Control(message));
        self.relieve()
    }

    /// Queues the first value of a topic for this session (after subscribing), or records that
    /// it holds no value yet when `update` is `None`. Resets what the session holds, and drops
    /// updates still queued from an earlier subscription to the topic: they belong to that
    /// subscription, and conflation must never merge them with this one's values across the
    /// notices queued in between.
    pub fn push_initial(
        &mut self,
        topic: u64,
        update: Option<&Arc<TopicUpdate>>,
    ) -> Result<PushOutcome, QueueLimitReached> {
        self.remove_topic(topic, true);
        match update {
            Some(update) => self.push_update_as(update, false),
            None => Ok(PushOutcome::default()),
        }
    }

    /// Queues a topic update: the shared delta when the session is in step, else the full value.
    pub fn push_update(
        &mut self,
        update: &Arc<TopicUpdate>,
    ) -> Result<PushOutcome, QueueLimitReached> {
        self.push_update_as(update, true)
    }

    fn push_update_as(
        &mut self,
        update: &Arc<TopicUpdate>,
        allow_delta: bool,
    ) -> Result<PushOutcome, QueueLimitReached> {
        let in_step = self.held.get(&update.topic) == Some(&(update.version.wrapping_sub(1)));
        let delta = allow_delta && in_step && update.delta_message.is_some();
        self.held.insert(update.topic, update.version);
        let entry = Entry::Shared {
            update: Arc::clone(update),
            delta,
        };
        self.queued_bytes += entry.held_bytes();
        self.entries.push_back(entry);
        if update.policy == Conflation::Always {
            self.conflate_topic(update.topic);
        }
        self.relieve()
    }

    /// The session stopped receiving `topic`: forget what it holds and, when `tidy`, drop the
    /// topic's queued updates.
    pub fn remove_topic(&mut self, topic: u64, tidy: bool) {
        self.held.remove(&topic);
        if tidy {
            self.entries.retain(|e| e.topic() != Some(topic));
            self.recount();
        }
    }

    /// Takes every queued message, oldest first.
    pub fn drain(&mut self) -> Vec<Bytes> {
        self.queued_bytes = 0;
        let message = |e: Entry| match e {
            Entry::Control(b) => b,
            other => other.message().clone(),
        };
        // A session that queued a burst does not keep the room it took once the burst is
        // written; a queue that keeps up (a few entries at a time) reuses its buffer.
        if self.entries.capacity() > KEPT_QUEUE_CAPACITY {
            std::mem::take(&mut self.entries)
                .into_iter()
                .map(message)
                .collect()
        } else {
            self.entries.drain(..).map(message).collect()
        }
    }

    /// Bytes the queue keeps alive now (what the limit applies to; see the module docs).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn recount(&mut self) {
        self.queued_bytes = self.entries.iter().map(Entry::held_bytes).sum();
    }

    /// Applies the back-pressure policies when over the limit.
    fn relieve(&mut self) -> Result<PushOutcome, QueueLimitReached> {
        let mut outcome = PushOutcome::default();
        // A single message larger than the limit may still go through an otherwise empty queue.
        if self.queued_bytes <= self.limit_bytes || self.entries.len() <= 1 {
            return Ok(outcome);
        }
        outcome.conflated = true;
        let mut topics: Vec<(u64, Conflation)> = Vec::new();
        for entry in &self.entries {
            if let (Some(topic), Some(policy)) = (entry.topic(), entry.policy())
                && !topics.iter().any(|(t, _)| *t == topic)
            {
                topics.push((topic, policy));
            }
        }
        for (topic, policy) in topics {
            match policy {
                Conflation::Conflate | Conflation::Always => self.conflate_topic(topic),
                Conflation::Unsubscribe => {
                    self.entries.retain(|e| e.topic() != Some(topic));
                    self.held.remove(&topic);
                    outcome.unsubscribed.push(topic);
                }
                Conflation::Off => {}
            }
        }
        self.recount();
        if self.queued_bytes > self.limit_bytes && self.entries.len() > 1 {
            return Err(QueueLimitReached {
                queued: self.queued_bytes,
                limit: self.limit_bytes,
            });
        }
        Ok(outcome)
    }

    /// Reduces one topic's queued updates to a single message at the first one's position.
    fn conflate_topic(&mut self, topic: u64) {
        let positions: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.topic() == Some(topic))
            .map(|(i, _)| i)
            .collect();
        let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else {
            return;
        };
        if first == last {
            return;
        }
        let base = self.entries[first].base().cloned();
        let last_entry = &self.entries[last];
        let (Some(policy), Some((value, value_message))) =
            (last_entry.policy(), last_entry.latest())
        else {
            return;
        };
        let (value, value_message) = (value.cloned(), value_message.clone());
        let composite = match (&base, &value) {
            (Some(base), Some(value)) => delta::diff(base, value)
                .map(|d| encode_delta_message(topic, &d))
                .filter(|m| m.len() < value_message.len()),
            _ => None,
        };
        let merged = Entry::Merged(Box::new(Merged {
            topic,
            policy,
            base: composite.as_ref().and(base),
            message: composite.unwrap_or_else(|| value_message.clone()),
            value_message,
            value,
        }));
        for &i in positions.iter().rev() {
            self.entries.remove(i);
        }
        self.entries.insert(first, merged);
        self.recount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ServerMessage, decode_server_frame, encode_value_message};
    use base64::Engine as _;

    /// Simulates a topic whose value is a JSON document with a counter and padding.
    struct Topic {
        id: u64,
        version: u64,
        policy: Conflation,
        value: Option<Bytes>,
    }

    impl Topic {
        fn new(id: u64, policy: Conflation) -> Self {
            Self {
                id,
                version: 0,
                policy,
                value: None,
            }
        }

        fn doc(n: u64) -> Bytes {
            Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(200)))
        }

        fn update(&mut self, n: u64) -> Arc<TopicUpdate> {
            let value = Self::doc(n);
            let previous = self.value.replace(value.clone());
            self.version += 1;
            let delta_message = previous
                .as_ref()
                .and_then(|p| delta::diff(p, &value))
                .map(|d| encode_delta_message(self.id, &d));
            Arc::new(TopicUpdate {
                topic: self.id,
                version: self.version,
                policy: self.policy,
                value: Some(value.clone()),
                previous,
                value_message: encode_value_message(self.id, &value),
                delta_message,
            })
        }
    }

    /// Replays drained messages like a client would and returns the value held per topic.
    fn replay(messages: &[Bytes], held: &mut HashMap<u64, Bytes>) {
        for m in messages {
            for msg in decode_server_frame(std::str::from_utf8(m).unwrap()).unwrap() {
                match msg {
                    ServerMessage::Value { id, value } => {
                        held.insert(id, Bytes::from(serde_json::to_vec(&value).unwrap()));
                    }
                    ServerMessage::Delta { id, delta: d } => {
                        let raw = base64::engine::general_purpose::STANDARD.decode(d).unwrap();
                        let new = delta::apply(&held[&id], &raw, 1 << 20).unwrap();
                        held.insert(id, new);
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_drained_burst_gives_its_room_back_and_a_small_queue_keeps_it() {
        let mut q = SessionQueue::new(1 << 20);
        for _ in 0..1_000 {
            q.push_control(Bytes::from_static(b"x")).unwrap();
        }
        assert_eq!(q.drain().len(), 1_000);
        assert_eq!(q.entries.capacity(), 0, "the burst's buffer was kept");
        for _ in 0..3 {
            q.push_control(Bytes::from_static(b"x")).unwrap();
        }
        let room = q.entries.capacity();
        assert_eq!(q.drain().len(), 3);
        assert_eq!(q.entries.capacity(), room, "a small buffer is reused");
    }

    #[test]
    fn in_step_sessions_get_the_shared_delta() {
        let mut t = Topic::new(1, Conflation::Conflate);
        let mut q = SessionQueue::new(1 << 20);
        let first = t.update(1);
        q.push_initial(1, Some(&first)).unwrap();
        let second = t.update(2);
        q.push_update(&second).unwrap();
        let drained = q.drain();
        assert_eq!(drained[0], first.value_message);
        assert_eq!(drained[1], second.delta_message.clone().unwrap());
        let mut held = HashMap::new();
        replay(&drained, &mut held);
        assert_eq!(held[&1], Topic::doc(2));
    }

    #[test]
    fn out_of_step_session_gets_full_value() {
        let mut t = Topic::new(1, Conflation::Conflate);
        let mut q = SessionQueue::new(1 << 20);
        let u1 = t.update(1);
        q.push_initial(1, Some(&u1)).unwrap();
        let _missed = t.update(2);
        let u3 = t.update(3);
        q.push_update(&u3).unwrap();
        assert_eq!(q.drain()[1], u3.value_message);
    }

    #[test]
    fn over_the_limit_conflates_to_one_composite_delta_per_topic() {
        let mut a = Topic::new(1, Conflation::Conflate);
        let mut b = Topic::new(2, Conflation::Conflate);
        let mut q = SessionQueue::new(4000);
        let mut held = HashMap::new();
        let first_a = a.update(0);
        let first_b = b.update(0);
        q.push_initial(1, Some(&first_a)).unwrap();
        q.push_initial(2, Some(&first_b)).unwrap();
        replay(&q.drain(), &mut held);
        let mut conflated = false;
        for n in 1..100 {
            conflated |= q.push_update(&a.update(n)).unwrap().conflated;
            conflated |= q.push_update(&b.update(n * 7)).unwrap().conflated;
            assert!(q.queued_bytes() <= 4000);
        }
        assert!(conflated);
        assert!(q.len() < 20, "{} of 198 updates still queued", q.len());
        replay(&q.drain(), &mut held);
        assert_eq!(held[&1], Topic::doc(99));
        assert_eq!(held[&2], Topic::doc(99 * 7));
        // Still in step afterwards: the next update is the shared delta.
        let next = a.update(100);
        q.push_update(&next).unwrap();
        assert_eq!(q.drain()[0], next.delta_message.clone().unwrap());
    }

    #[test]
    fn always_keeps_one_update_per_topic() {
        let mut t = Topic::new(1, Conflation::Always);
        let mut q = SessionQueue::new(1 << 20);
        let mut held = HashMap::new();
        q.push_initial(1, Some(&t.update(0))).unwrap();
        replay(&q.drain(), &mut held);
        for n in 1..10 {
            q.push_update(&t.update(n)).unwrap();
        }
        assert_eq!(q.len(), 1);
        replay(&q.drain(), &mut held);
        assert_eq!(held[&1], Topic::doc(9));
    }

    #[test]
    fn off_never_merges_and_the_limit_then_closes() {
        let mut t = Topic::new(1, Conflation::Off);
        let mut q = SessionQueue::new(1000);
        q.push_initial(1, Some(&t.update(0))).unwrap();
        let mut failed = None;
        for n in 1..100 {
            if let Err(e) = q.push_update(&t.update(n)) {
                failed = Some(e);
                break;
            }
        }
        let err = failed.expect("an 'off' topic must overflow");
        assert!(err.queued > 1000);
    }

    #[test]
    fn unsubscribe_policy_drops_the_topic_under_pressure() {
        let mut noisy = Topic::new(1, Conflation::Unsubscribe);
        let mut calm = Topic::new(2, Conflation::Conflate);
        let mut q = SessionQueue::new(800);
        q.push_initial(2, Some(&calm.update(0))).unwrap();
        q.push_initial(1, Some(&noisy.update(0))).unwrap();
        let mut dropped = Vec::new();
        for n in 1..20 {
            dropped = q.push_update(&noisy.update(n)).unwrap().unsubscribed;
            if !dropped.is_empty() {
                // The server now removes the subscription: no more updates for this topic.
                break;
            }
        }
        assert_eq!(dropped, vec![1]);
        let drained = q.drain();
        assert!(
            drained
                .iter()
                .all(|m| !std::str::from_utf8(m).unwrap().contains("\"id\":1,"))
        );
    }

    #[test]
    fn tidy_on_unsubscribe_drops_queued_updates() {
        let mut t = Topic::new(1, Conflation::Off);
        let mut q = SessionQueue::new(1 << 20);
        q.push_control(Bytes::from_static(b"{\"type\":\"pong\",\"cid\":1}"))
            .unwrap();
        q.push_initial(1, Some(&t.update(0))).unwrap();
        q.push_update(&t.update(1)).unwrap();
        q.remove_topic(1, true);
        assert_eq!(q.len(), 1);
        assert_eq!(q.queued_bytes(), br#"{"type":"pong","cid":1}"#.len());
    }

    #[test]
    fn a_new_subscription_never_merges_with_the_previous_one() {
        let mut t = Topic::new(1, Conflation::Always);
        let mut q = SessionQueue::new(1 << 20);
        let notice = |text: &'static str| Bytes::from_static(text.as_bytes());
        q.push_control(notice("subscribed-1")).unwrap();
        q.push_initial(1, Some(&t.update(0))).unwrap();
        q.push_control(notice("unsubscribed-1")).unwrap();
        q.push_control(notice("subscribed-2")).unwrap();
        let resubscribed = t.update(1);
        q.push_initial(1, Some(&resubscribed)).unwrap();
        let drained = q.drain();
        assert_eq!(
            drained,
            vec![
                notice("subscribed-1"),
                notice("unsubscribed-1"),
                notice("subscribed-2"),
                resubscribed.value_message.clone(),
            ],
            "the new value comes after the new notice, and the stale one is gone"
        );
    }

    #[test]
    fn the_limit_counts_the_values_a_queued_delta_keeps_alive() {
        // Large values, tiny deltas: counting only the deltas would let a stalled session pin
        // every 20 KB value of a long backlog.
        let big = |n: u64| Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(20_000)));
        let mut version = 0;
        let mut previous = big(0);
        let mut update = |n: u64| {
            let value = big(n);
            version += 1;
            let d = delta::diff(&previous, &value);
            Arc::new(TopicUpdate {
                topic: 1,
                version,
                policy: Conflation::Off,
                value: Some(value.clone()),
                previous: Some(std::mem::replace(&mut previous, value.clone())),
                value_message: encode_value_message(1, &value),
                delta_message: d.map(|d| encode_delta_message(1, &d)),
            })
        };
        let mut q = SessionQueue::new(1 << 20);
        q.push_initial(1, Some(&update(0))).unwrap();
        let mut sent_bytes = 0;
        let mut closed = false;
        for n in 1..1_000 {
            let u = update(n);
            sent_bytes += u.delta_message.as_ref().map_or(0, Bytes::len);
            if q.push_update(&u).is_err() {
                closed = true;
                break;
            }
            assert!(q.queued_bytes() <= 1 << 20);
        }
        assert!(
            closed,
            "a conflation-off backlog of large values hits the limit"
        );
        assert!(
            sent_bytes < 20_000,
            "the deltas alone were only {sent_bytes} bytes"
        );
    }

    #[test]
    fn controls_count_toward_the_limit() {
        let mut q = SessionQueue::new(100);
        q.push_control(Bytes::from(vec![b'x'; 60])).unwrap();
        assert!(q.push_control(Bytes::from(vec![b'x'; 60])).is_err());
    }
}
