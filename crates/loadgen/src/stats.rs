//! Counters and latency histograms shared by every subscriber task.
//!
//! Subscribers update plain atomics once per frame and record latencies into one of a few
//! mutex-guarded histograms (picked by connection index), so thousands of tasks on two cores do
//! not fight over one lock. A phase's histogram travels in the JSON results in HdrHistogram's
//! standard compressed form ([`encode_histogram`]), so that the results of several loadgen
//! processes measuring one system can be merged exactly (see [`crate::merge`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::serialization::{
    DeserializeError, Deserializer, Serializer, V2DeflateSerializeError, V2DeflateSerializer,
};
use hdrhistogram::{CreationError, Histogram};

/// Highest latency the histograms track, in microseconds (one minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Data messages received (all connections).
    pub deliveries: u64,
    /// WebSocket frames (or TCP reads) received.
    pub frames: u64,
    /// Frame payload bytes received.
    pub bytes: u64,
    /// Sum over live connections of how many published messages each has caught up with.
    pub progress: u64,
    /// Connections subscribed and still open.
    pub alive: u64,
    /// Problems decoding what servers sent.
    pub decode_errors: u64,
    /// Connections that ended during the run.
    pub disconnects: u64,
}

/// The shared state.
#[derive(Debug)]
pub struct Stats {
    deliveries: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    progress: AtomicU64,
    alive: AtomicU64,
    decode_errors: AtomicU64,
    disconnects: AtomicU64,
    /// Messages with `seq` at or below this were published before this run (a retained value).
    seq_base: AtomicU64,
    /// Live subscribers per topic of the run's [`crate::plan::TopicPlan`] (one entry for the
    /// single-topic fan-out): what the messages published so far owe them.
    subscribed: Vec<AtomicU64>,
    /// Sum of `subscribed`.
    subscriptions: AtomicU64,
    recording: AtomicBool,
    shards: Vec<Mutex<Histogram<u64>>>,
    empty: Histogram<u64>,
    first_problem: Mutex<Option<String>>,
}

/// An empty latency histogram: microseconds, three significant figures over 1 µs..60 s.
pub fn new_histogram() -> Result<Histogram<u64>, CreationError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
}

/// Why a serialised histogram could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum HistogramCodecError {
    /// Serialising failed.
    #[error("serialising a histogram: {0}")]
    Serialize(#[from] V2DeflateSerializeError),
    /// The text is not base64.
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not a V2 (compressed or plain) HdrHistogram.
    #[error("reading a histogram: {0}")]
    Deserialize(#[from] DeserializeError),
}

/// A histogram as base64 text of HdrHistogram's V2 compressed encoding: the interchange format
/// every HdrHistogram implementation reads (a few hundred bytes for a typical phase).
pub fn encode_histogram(histogram: &Histogram<u64>) -> Result<String, HistogramCodecError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(histogram, &mut bytes)?;
    Ok(BASE64.encode(bytes))
}

/// Reads back what [`encode_histogram`] wrote.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, HistogramCodecError> {
    let bytes = BASE64.decode(text.trim())?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

impl Stats {
    /// Fresh counters with `shards` latency histograms, for a run on one topic.
    pub fn new(shards: usize) -> Result<Self, CreationError> {
        Self::with_topics(shards, 1)
    }

    /// Fresh counters with `shards` latency histograms, for a run publishing on `topics`
    /// topics (those of its [`crate::plan::TopicPlan`]).
    pub fn with_topics(shards: usize, topics: usize) -> Result<Self, CreationError> {
        let shards = (0..shards.max(1))
            .map(|_| new_histogram().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            deliveries: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            alive: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            seq_base: AtomicU64::new(0),
            subscribed: (0..topics.max(1)).map(|_| AtomicU64::new(0)).collect(),
            subscriptions: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            shards,
            empty: new_histogram()?,
            first_problem: Mutex::new(None),
        })
    }

    /// Sets the sequence number just below the first one this run publishes.
    pub fn set_seq_base(&self, base: u64) {
        self.seq_base.store(base, Ordering::Relaxed);
    }

    /// The sequence number just below the first one this run publishes.
    pub fn seq_base(&self) -> u64 {
        self.seq_base.load(Ordering::Relaxed)
    }

    /// Starts or stops recording latencies.
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Whether latencies are being recorded.
    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// Counts one received frame.
    pub fn frame(&self, bytes: usize, messages: u64) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if messages > 0 {
            self.deliveries.fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// Adds to the progress sum (a connection caught up with more published messages).
    pub fn advance(&self, by: u64) {
        if by > 0 {
            self.progress.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// A connection is subscribed to `topics` (topic numbers of the run's plan; empty when
    /// what it receives is not counted against the plan, as for view subscribers).
    pub fn connection_up(&self, topics: &[usize]) {
        self.alive.fetch_add(1, Ordering::Relaxed);
        self.count_subscriptions(topics, true);
    }

    fn count_subscriptions(&self, topics: &[usize], up: bool) {
        for &topic in topics {
            let counter = &self.subscribed[topic % self.subscribed.len()];
            if up {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let n = topics.len() as u64;
        if up {
            self.subscriptions.fetch_add(n, Ordering::Relaxed);
        } else {
            self.subscriptions.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The progress the live subscribers owe once they have received the first `published`
    /// messages of the run, when message k went to topic (k − 1) mod topics (see
    /// [`crate::plan::TopicPlan::topic_of_message`]): on one topic, `published × alive`.
    pub fn expected_progress(&self, published: u64) -> u64 {
        let topics = self.subscribed.len() as u64;
        let rounds = published / topics;
        let rest = (published % topics) as usize;
        let partial: u64 = self.subscribed[..rest]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        rounds * self.subscriptions.load(Ordering::Relaxed) + partial
    }

    /// A subscribed connection (on `topics`, as given to [`Self::connection_up`]) ended,
    /// having made `progress`; `reason` is set when the server or the network ended it
    /// (rather than the run finishing).
    pub fn connection_down(&self, topics: &[usize], progress: u64, reason: Option<String>) {
        self.alive.fetch_sub(1, Ordering::Relaxed);
        self.count_subscriptions(topics, false);
        self.progress.fetch_sub(progress, Ordering::Relaxed);
        if let Some(reason) = reason {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
            self.problem(reason);
        }
    }

    /// Counts a decoding problem and remembers the first one.
    pub fn decode_error(&self, what: String) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
        self.problem(what);
    }

    fn problem(&self, what: String) {
        let mut first = self
            .first_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(what);
    }

    /// The first problem seen (a decode error or why a connection ended).
    pub fn first_problem(&self) -> Option<String> {
        self.first_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records latencies (µs) into the shard for connection `index`.
    pub fn record_latencies(&self, index: usize, latencies_us: &[u64]) {
        if latencies_us.is_empty() {
            return;
        }
        let shard = &self.shards[index % self.shards.len()];
        let mut histogram = shard.lock().unwrap_or_else(PoisonError::into_inner);
        for &us in latencies_us {
            histogram.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// Merges every shard into one histogram and empties the shards.
    pub fn take_histogram(&self) -> Histogram<u64> {
        let mut total = self.empty.clone();
        for shard in &self.shards {
            let mut histogram = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds everywhere, so adding cannot fail.
            let _ = total.add(&*histogram);
            histogram.reset();
        }
        total
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Counters {
        Counters {
            deliveries: self.deliveries.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            progress: self.progress.load(Ordering::Relaxed),
            alive: self.alive.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_and_reset() {
        let stats = Stats::new(4).unwrap();
        stats.record_latencies(0, &[100, 200]);
        stats.record_latencies(3, &[300]);
        let merged = stats.take_histogram();
        assert_eq!(merged.len(), 3);
        assert!(merged.value_at_quantile(1.0) >= 300);
        assert_eq!(stats.take_histogram().len(), 0);
    }

    #[test]
    fn histograms_survive_encoding() {
        let mut histogram = new_histogram().unwrap();
        for us in [1, 250, 251, 9_999, 120_000, MAX_LATENCY_US] {
            histogram.record(us).unwrap();
        }
        let text = encode_histogram(&histogram).unwrap();
        let back = decode_histogram(&text).unwrap();
        assert_eq!(back, histogram);
        assert_eq!(
            back.value_at_quantile(0.5),
            histogram.value_at_quantile(0.5)
        );
        assert!(decode_histogram("not base64!").is_err());
        assert!(matches!(
            decode_histogram("AAAA"),
            Err(HistogramCodecError::Deserialize(_))
        ));
    }

    #[test]
    fn connections_carry_their_progress_away() {
        let stats = Stats::new(1).unwrap();
        stats.connection_up(&[0]);
        stats.connection_up(&[0]);
        stats.advance(10);
        stats.advance(7);
        assert_eq!(stats.expected_progress(5), 10);
        stats.connection_down(&[0], 7, Some("closed".into()));
        let c = stats.snapshot();
        assert_eq!((c.alive, c.progress, c.disconnects), (1, 10, 1));
        assert_eq!(stats.first_problem().as_deref(), Some("closed"));
        assert_eq!(stats.expected_progress(5), 5);
    }

    #[test]
    fn expected_progress_follows_the_topics_subscribed() {
        use crate::plan::TopicPlan;
        let plan = TopicPlan::market("md", 10, 2).unwrap();
        let stats = Stats::with_topics(1, plan.len()).unwrap();
        let subscribers: Vec<Vec<usize>> = (0..7).map(|i| plan.topics_of(i)).collect();
        for topics in &subscribers {
            stats.connection_up(topics);
        }
        // A view subscriber is alive but owed nothing.
        stats.connection_up(&[]);
        for published in 0..35 {
            let owed: u64 = subscribers
                .iter()
                .map(|topics| plan.messages_for(topics, published))
                .sum();
            assert_eq!(stats.expected_progress(published), owed, "{published}");
        }
        stats.connection_down(&subscribers[0], 0, None);
        let owed: u64 = subscribers[1..]
            .iter()
            .map(|topics| plan.messages_for(topics, 13))
            .sum();
        assert_eq!(stats.expected_progress(13), owed);
    }
}
