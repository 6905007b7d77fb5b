//! The dashboard's stand-in: a topic-client subscribed to the relayed topic on the dashboard's
//! node (in a cluster, given all three node URLs, as the dashboard's `?topics=` is), which
//! timestamps every *new* value.
//!
//! A value counts as new when it was never seen before: a restarted backend-app puts its last
//! value back, a resumed or re-subscribed session is sent the current value again, and neither
//! means that the pipeline delivers. The synthetic feed stamps each new price with its time, so
//! with a price change on every poll each relayed value is distinct.
//!
//! A new value is not yet a live one: values that queued up behind a stopped process arrive
//! after it resumes, though they were produced before. The feed's stamp (`time.updatedISO`,
//! whole seconds of the feeder's clock, the same machine's) tells them apart: a value stamped
//! with a second later than an instant was produced after that instant.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::watch;
use topic_client::{ConnectOptions, TopicClient, TopicEvent};

/// Arrival times kept (about 80 minutes of a 200 ms feed); older ones are dropped.
const MAX_ARRIVALS: usize = 25_000;

/// One new value: when it arrived, and when the feeder says it produced it (whole seconds;
/// `None` when the value carries no readable stamp).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    stamp: Option<SystemTime>,
}

/// What the watcher has seen.
#[derive(Default)]
struct Seen {
    /// Hashes of every value seen (at most [`MAX_ARRIVALS`] kept, oldest dropped).
    hashes: HashSet<u64>,
    order: VecDeque<u64>,
    /// When each new value arrived, oldest first, with the time the feed stamped it with.
    arrivals: VecDeque<Arrival>,
    /// Why the client stopped, if it did.
    closed: Option<String>,
}

impl Seen {
    /// Records a value arriving at `at`; true when it was new.
    fn record(&mut self, hash: u64, at: Instant, stamp: Option<SystemTime>) -> bool {
        if !self.hashes.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        self.arrivals.push_back(Arrival { at, stamp });
        if self.order.len() > MAX_ARRIVALS
            && let Some(old) = self.order.pop_front()
        {
            self.hashes.remove(&old);
            self.arrivals.pop_front();
        }
        true
    }

    /// The first new value's arrival strictly after `after`.
    fn first_after(&self, after: Instant) -> Option<Instant> {
        self.arrivals
            .iter()
            .map(|arrival| arrival.at)
            .find(|at| *at > after)
    }

    /// The arrival of the first new value stamped later than `produced_after`, i.e. produced
    /// after it (a stamp is a whole second, at or before the value was produced).
    fn first_produced_after(&self, produced_after: SystemTime) -> Option<Instant> {
        self.arrivals
            .iter()
            .find(|arrival| arrival.stamp.is_some_and(|stamp| stamp > produced_after))
            .map(|arrival| arrival.at)
    }

    /// The longest time between consecutive new values from the last one at or before `from`
    /// up to the last one at or before `to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let start = self
            .arrivals
            .iter()
            .rposition(|arrival| arrival.at <= from)
            .unwrap_or(0);
        let window: Vec<Instant> = self
            .arrivals
            .iter()
            .skip(start)
            .map(|arrival| arrival.at)
            .take_while(|at| *at <= to)
            .collect();
        window
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }
}

/// A subscriber that timestamps new values of one topic.
pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    news: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Connects anonymously (as the dashboard does) to `urls` and subscribes to `topic`.
    pub async fn start(urls: &str, topic: &str) -> anyhow::Result<Self> {
        let client = TopicClient::connect(urls, ConnectOptions::default())
            .await
            .with_context(|| format!("connecting the watcher to {urls}"))?;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (news_tx, news) = watch::channel(0u64);
        let task = {
            let seen = Arc::clone(&seen);
            let topic = topic.to_owned();
            let client = client.clone();
            tokio::spawn(async move {
                let mut count = 0u64;
                while let Some(event) = client.next_event().await {
                    let TopicEvent::Value { path, value, .. } = event else {
                        continue;
                    };
                    if path != topic || value.is_null() {
                        continue;
                    }
                    let at = Instant::now();
                    let mut hasher = DefaultHasher::new();
                    value.to_string().hash(&mut hasher);
                    let new = lock(&seen).record(hasher.finish(), at, feed_stamp(&value));
                    if new {
                        count += 1;
                        let _ = news_tx.send(count);
                    }
                }
                lock(&seen).closed = Some(match client.refusal() {
                    Some(refusal) => format!("the watcher's client was refused: {refusal:?}"),
                    None => "the watcher's client closed".to_owned(),
                });
                // Wakes anyone waiting, who then sees `closed`.
                let _ = news_tx.send(u64::MAX);
            })
        };
        client
            .subscribe(topic)
            .await
            .with_context(|| format!("subscribing the watcher to {topic}"))?;
        Ok(Self { seen, news, task })
    }

    /// Waits until a new value arrives after `after`, at most until `deadline`; returns when
    /// it arrived, or `None` at the deadline. Fails if the watcher's client has stopped.
    pub async fn first_new_after(
        &mut self,
        after: Instant,
        deadline: Instant,
    ) -> anyhow::Result<Option<Instant>> {
        self.wait_for(deadline, |seen| seen.first_after(after))
            .await
    }

    /// Waits until a new value produced after `produced_after` (by the feed's stamp) arrives,
    /// at most until `deadline`; returns when it arrived, or `None` at the deadline. Fails if
    /// the watcher's client has stopped.
    pub async fn first_produced_after(
        &mut self,
        produced_after: SystemTime,
        deadline: Instant,
    ) -> anyhow::Result<Option<Instant>> {
        self.wait_for(deadline, |seen| seen.first_produced_after(produced_after))
            .await
    }

    /// Waits until `found` finds an arrival in what was seen, at most until `deadline`.
    async fn wait_for(
        &mut self,
        deadline: Instant,
        found: impl Fn(&Seen) -> Option<Instant>,
    ) -> anyhow::Result<Option<Instant>> {
        // Bounded by `deadline`: every turn waits for news or the deadline.
        loop {
            {
                let seen = lock(&self.seen);
                if let Some(at) = found(&seen) {
                    return Ok(Some(at));
                }
                if let Some(why) = &seen.closed {
                    anyhow::bail!("{why}");
                }
            }
            let wait = tokio::time::timeout_at(deadline.into(), self.news.changed()).await;
            match wait {
                Err(_) => return Ok(None),
                Ok(Err(_)) => anyhow::bail!("the watcher stopped"),
                Ok(Ok(())) => {}
            }
        }
    }

    /// The longest time between new values from the last one before `from` to the last one
    /// before `to`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        lock(&self.seen).longest_gap(from, to)
    }

    /// New values seen so far.
    pub fn count(&self) -> usize {
        lock(&self.seen).arrivals.len()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The time the synthetic feed stamped a value with (`time.updatedISO`, whole seconds), whether
/// the topic carries the payload as JSON or as a string of JSON.
fn feed_stamp(value: &Value) -> Option<SystemTime> {
    let parsed;
    let payload = match value {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    let iso = payload.get("time")?.get("updatedISO")?.as_str()?;
    let at = chrono::DateTime::parse_from_rfc3339(iso).ok()?;
    Some(SystemTime::from(at))
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_never_seen_count_and_gaps_span_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut seen = Seen::default();
        assert!(seen.record(1, at(0), None));
        assert!(seen.record(2, at(200), None));
        assert!(
            !seen.record(2, at(300), None),
            "a value sent again is not new"
        );
        assert!(seen.record(3, at(2_200), None));
        assert!(seen.record(4, at(2_400), None));
        assert_eq!(seen.first_after(at(200)), Some(at(2_200)));
        assert_eq!(seen.first_after(at(2_400)), None);
        // From the last value before 1 s (at 200 ms) to 2.4 s: the 2 s silence.
        assert_eq!(
            seen.longest_gap(at(1_000), at(2_400)),
            Duration::from_secs(2)
        );
        assert_eq!(
            seen.longest_gap(at(2_200), at(2_400)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_value_counts_as_live_only_when_stamped_after_the_instant() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let secs = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let mut seen = Seen::default();
        // Queued behind a paused process: produced before 1000.5 s, arriving after it.
        seen.record(1, t0 + Duration::from_millis(10), secs(999));
        seen.record(2, t0 + Duration::from_millis(11), secs(1_000));
        seen.record(3, t0 + Duration::from_millis(12), None);
        let fault_end = wall + Duration::from_millis(500);
        assert_eq!(seen.first_after(t0), Some(t0 + Duration::from_millis(10)));
        assert_eq!(seen.first_produced_after(fault_end), None);
        seen.record(4, t0 + Duration::from_millis(900), secs(1_001));
        assert_eq!(
            seen.first_produced_after(fault_end),
            Some(t0 + Duration::from_millis(900))
        );
    }

    #[test]
    fn the_feed_stamp_is_read_from_the_payload_or_a_string_of_it() {
        let payload = serde_json::json!({
            "time": {"updated": "May 4, 2021 12:45:00 UTC", "updatedISO": "2021-05-04T12:45:00+00:00"},
            "bpi": {}
        });
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_620_132_300);
        assert_eq!(feed_stamp(&payload), Some(expected));
        assert_eq!(
            feed_stamp(&Value::String(payload.to_string())),
            Some(expected)
        );
        assert_eq!(feed_stamp(&serde_json::json!({"time": {}})), None);
        assert_eq!(feed_stamp(&Value::String("not json".into())), None);
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let t0 = Instant::now();
        let mut seen = Seen::default();
        for i in 0..(MAX_ARRIVALS as u64 + 10) {
            seen.record(i, t0 + Duration::from_millis(i), None);
        }
        assert_eq!(seen.arrivals.len(), MAX_ARRIVALS);
        assert_eq!(seen.hashes.len(), MAX_ARRIVALS);
    }
}
