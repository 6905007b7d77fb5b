//! The one task that changes a cluster node's tree: it applies, in each partition's order,
//! every change Redis accepted — from the pub/sub feed as it comes, from the partition's log
//! when the feed skipped something, and from the partition's state when the log no longer
//! reaches back far enough. One owner, messages in: nothing else writes the node's copy of
//! the shared tree, so no two sources can race.
//!
//! Per stream (partition or views) it knows the sequence number it has applied up to:
//! - a message numbered exactly one more is applied;
//! - a message it has already applied (numbered no more) is skipped — unless it is not the
//!   message it applied under that number (Redis lost its last changes, say in a crash with
//!   `appendfsync everysec`, and numbered new ones again): then the partition is reloaded;
//! - a message further ahead means a gap: the log fills it (`XRANGE`), then the message;
//! - a log that starts past the gap (trimmed), or a counter of another epoch (Redis lost its
//!   data and started counting again), means the partition is *reloaded*: its topics' latest
//!   values are applied — subscribers get them as they would after a conflation — and topics
//!   Redis no longer holds are removed.
//!
//! Every second, and whenever a subscription is confirmed again (after Redis came back), it
//! compares each counter with its own and catches up, so a change whose message was lost
//! is applied within about a second even when nothing else happens on its partition.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::keys::{PARTITIONS, STREAMS, StreamKeys, VIEWS, partition_of};
use super::link::{Commands, FeedBudget, Push};
use super::message::{self, parse_topic_spec, parse_view_definition};
use crate::engine::{AddTopic, Engine, Replicated, value_from_wire};
use crate::metrics::Metrics;

/// How often every partition's counter is compared with what was applied.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Log entries read per request while catching up.
const CATCH_UP_BATCH: usize = 1_000;
/// Per stream, how many of the last applied messages are remembered (by number and hash) to
/// tell a duplicate from a different change under a number already applied.
const REMEMBERED: usize = 1_024;

/// Reads one stream's sequence number, epoch and state in one atomic step.
const SNAPSHOT_SCRIPT: &str = "return {redis.call('GET', KEYS[1]) or '0', \
     redis.call('GET', KEYS[2]) or '', redis.call('HGETALL', KEYS[3])}";

/// The applier's state: what it applied, and where it says so.
pub(crate) struct Applier {
    engine: Arc<Engine>,
    commands: Commands,
    /// The subscription's connection, pinged at every check: a connection that stayed down
    /// after Redis came back is re-established (and resubscribed) by the next command.
    subscription: Commands,
    metrics: Metrics,
    /// Per stream, the sequence number applied up to.
    applied: Vec<u64>,
    /// Per stream, the epoch of those numbers (`None`: nothing numbered yet).
    epochs: Vec<Option<String>>,
    /// Per stream, the last applied messages' numbers and hashes, oldest first.
    recent: Vec<VecDeque<(u64, u64)>>,
    /// Per stream, the same for those waiting for their own change to be applied.
    published: Vec<watch::Sender<u64>>,
    snapshot: redis::Script,
}

/// What went wrong talking to Redis (retried at the next check).
type RedisResult<T> = Result<T, redis::RedisError>;

impl Applier {
    /// An applier for `engine`, and the receivers that follow what it has applied.
    pub fn new(
        engine: Arc<Engine>,
        commands: Commands,
        subscription: Commands,
        metrics: Metrics,
    ) -> (Self, Vec<watch::Receiver<u64>>) {
        let (published, receivers) = (0..STREAMS).map(|_| watch::channel(0)).unzip();
        (
            Self {
                engine,
                commands,
                subscription,
                metrics,
                applied: vec![0; STREAMS],
                epochs: vec![None; STREAMS],
                recent: vec![VecDeque::new(); STREAMS],
                published,
                snapshot: redis::Script::new(SNAPSHOT_SCRIPT),
            },
            receivers,
        )
    }

    /// Loads every stream from Redis: views first, so the topics that follow derive.
    pub async fn load(&mut self) -> RedisResult<()> {
        self.reload(VIEWS, None).await?;
        for partition in 0..PARTITIONS {
            self.reload(partition, None).await?;
        }
        Ok(())
    }

    /// Applies what the feed brings, and checks every partition each second, until `stop`.
    pub async fn run(
        mut self,
        mut feed: mpsc::Receiver<Push>,
        budget: Arc<FeedBudget>,
        stop: CancellationToken,
    ) {
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                push = feed.recv() => {
                    let Some(push) = push else { return };
                    budget.release(push.len());
                    match push {
                        Push::Change { stream, message } => self.on_message(stream, &message).await,
                        Push::Subscribed { stream } => self.catch_up(stream).await,
                    }
                }
                _ = check.tick() => {
                    if budget.take_overflow() {
                        tracing::warn!("the cluster feed overflowed: catching up from the logs");
                    }
                    self.check_all().await
                }
            };
            if let Err(error) = outcome {
                self.metrics.cluster_redis_errors.increment(1);
                tracing::warn!(%error, "cluster: Redis failed while applying changes; retrying at the next check");
            }
        }
    }

    /// A message from the feed.
    async fn on_message(&mut self, stream: usize, message: &[u8]) -> RedisResult<()> {
        let Some((seq, epoch)) = peek_header(message) else {
            self.skip_bad(stream, message, "no sequence number");
            return Ok(());
        };
        if !self.same_epoch(stream, epoch) {
            return self.reload(stream, Some("lost")).await;
        }
        if seq <= self.applied[stream] {
            if self.conflicts(stream, seq, message) {
                return self.reload(stream, Some("lost")).await;
            }
            return Ok(());
        }
        if seq > self.applied[stream] + 1 {
            self.catch_up(stream).await?;
            if seq <= self.applied[stream] {
                return Ok(());
            }
        }
        self.apply_message(stream, message);
        Ok(())
    }

    /// Whether `message`, numbered `seq` (already applied), is another change than the one
    /// applied under that number. Too old to remember: taken for a duplicate.
    fn conflicts(&self, stream: usize, seq: u64, message: &[u8]) -> bool {
        self.recent[stream]
            .iter()
            .find(|(applied, _)| *applied == seq)
            .is_some_and(|(_, hash)| *hash != hash_of(message))
    }

    /// Decodes and applies one accepted message, whose number is the next one.
    fn apply_message(&mut self, stream: usize, message: &[u8]) {
        if let Some(seq) = peek_seq(message) {
            let recent = &mut self.recent[stream];
            if recent.len() == REMEMBERED {
                recent.pop_front();
            }
            recent.push_back((seq, hash_of(message)));
        }
        match message::decode(message) {
            Ok((seq, change)) => {
                self.engine.apply_replicated(change);
                self.metrics.cluster_applied.increment(1);
                self.advance(stream, seq);
            }
            Err(error) => {
                let seq = peek_seq(message).unwrap_or(self.applied[stream] + 1);
                self.skip_bad(stream, message, &error.to_string());
                self.advance(stream, seq);
            }
        }
    }

    fn skip_bad(&self, stream: usize, message: &[u8], reason: &str) {
        self.metrics.cluster_bad_messages.increment(1);
        tracing::warn!(
            stream,
            reason,
            message = %String::from_utf8_lossy(&message[..message.len().min(200)]),
            "cluster: a change could not be applied; skipped"
        );
    }

    /// Whether `epoch` continues what the stream has applied (a stream that has applied
    /// nothing numbered yet takes it on).
    fn same_epoch(&mut self, stream: usize, epoch: &str) -> bool {
        match &self.epochs[stream] {
            Some(known) => known == epoch,
            None if self.applied[stream] == 0 => {
                self.epochs[stream] = Some(epoch.to_owned());
                true
            }
            None => false,
        }
    }

    fn advance(&mut self, stream: usize, seq: u64) {
        self.applied[stream] = seq;
        self.published[stream].send_replace(seq);
    }

    /// Compares every stream's counter with what was applied.
    async fn check_all(&mut self) -> RedisResult<()> {
        let _: RedisResult<String> = redis::cmd("PING").query_async(&mut self.subscription).await;
        for stream in 0..STREAMS {
            let keys = StreamKeys::of(stream);
            let (current, epoch): (Option<u64>, Option<String>) = redis::cmd("MGET")
                .arg(&keys.seq)
                .arg(&keys.epoch)
                .query_async(&mut self.commands)
                .await?;
            if epoch != self.epochs[stream] {
                if epoch.is_some() || self.applied[stream] > 0 {
                    self.reload(stream, Some("lost")).await?;
                }
            } else if current.unwrap_or(0) != self.applied[stream] {
                self.catch_up(stream).await?;
            }
        }
        Ok(())
    }

    async fn counter(&mut self, stream: usize) -> RedisResult<u64> {
        let seq: Option<u64> = self.commands.get(StreamKeys::of(stream).seq).await?;
        Ok(seq.unwrap_or(0))
    }

    /// Applies what the stream's log holds past what was applied; reloads the stream when
    /// the log no longer reaches back that far, or Redis's counter went backwards.
    async fn catch_up(&mut self, stream: usize) -> RedisResult<()> {
        let keys = StreamKeys::of(stream);
        loop {
            let from = self.applied[stream] + 1;
            let reply: redis::streams::StreamRangeReply = self
                .commands
                .xrange_count(&keys.log, format!("{from}-0"), "+", CATCH_UP_BATCH)
                .await?;
            let Some(first) = reply.ids.first() else {
                let current = self.counter(stream).await?;
                if current > self.applied[stream] {
                    return self.reload(stream, Some("trimmed")).await;
                }
                if current < self.applied[stream] {
                    return self.reload(stream, Some("lost")).await;
                }
                return Ok(());
            };
            if entry_seq(&first.id) != Some(from) {
                return self.reload(stream, Some("trimmed")).await;
            }
            let count = reply.ids.len();
            for entry in &reply.ids {
                let Some(redis::Value::BulkString(message)) = entry.map.get("m") else {
                    continue;
                };
                let Some((seq, epoch)) = peek_header(message) else {
                    continue;
                };
                if !self.same_epoch(stream, epoch) {
                    return self.reload(stream, Some("lost")).await;
                }
                if seq == self.applied[stream] + 1 {
                    self.metrics.cluster_caught_up.increment(1);
                    self.apply_message(stream, &message[..]);
                }
            }
            if count < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }

    /// Makes the node's copy of one stream equal to what Redis holds now. `reason` is `None`
    /// at start-up, else why the log could not be used (counted and logged).
    async fn reload(&mut self, stream: usize, reason: Option<&'static str>) -> RedisResult<()> {
        let keys = StreamKeys::of(stream);
        let (seq, epoch, fields): (u64, String, HashMap<String, Vec<u8>>) = self
            .snapshot
            .key(&keys.seq)
            .key(&keys.epoch)
            .key(&keys.state)
            .invoke_async(&mut self.commands)
            .await?;
        let changes = if stream == VIEWS {
            self.view_changes(fields)
        } else {
            self.topic_changes(stream, fields)
        };
        let count = changes.len();
        for change in changes {
            self.engine.apply_replicated(change);
        }
        if let Some(reason) = reason {
            self.metrics.cluster_reloaded(reason);
            tracing::warn!(
                stream,
                reason,
                changes = count,
                "cluster: the log could not fill a gap; reloaded the partition's latest state"
            );
        }
        self.epochs[stream] = (!epoch.is_empty()).then_some(epoch);
        self.recent[stream].clear();
        self.advance(stream, seq);
        Ok(())
    }

    /// The changes that make this node's topics in `partition` equal to `fields`.
    fn topic_changes(&self, partition: usize, fields: HashMap<String, Vec<u8>>) -> Vec<Replicated> {
        let mut specs = BTreeMap::new();
        let mut values = HashMap::new();
        let mut owners = HashMap::new();
        for (field, bytes) in fields {
            match field.split_once(':') {
                Some(("s", path)) => {
                    specs.insert(path.to_owned(), bytes);
                }
                Some(("v", path)) => {
                    values.insert(path.to_owned(), bytes);
                }
                Some(("o", path)) => {
                    owners.insert(
                        path.to_owned(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    );
                }
                _ => {}
            }
        }
        let gone = self.engine.normal_topics_where(|path| {
            partition_of(path) == partition && !specs.contains_key(path)
        });
        let mut changes = vec![Replicated::Remove { paths: gone }];
        for (path, spec) in specs {
            let decoded = parse_topic_spec(&spec).and_then(|(topic_type, properties)| {
                let value = match values.get(&path) {
                    Some(wire) => Some(value_from_wire(topic_type, wire)?),
                    None if properties.dont_retain_value => None,
                    None => Some(None),
                };
                let owner = owners.get(&path).map(|o| Arc::from(o.as_str()));
                let path = diffusion_core::TopicPath::parse(&path).map_err(|e| e.to_string())?;
                Ok(AddTopic {
                    path,
                    topic_type,
                    properties,
                    value,
                    owner,
                })
            });
            match decoded {
                Ok(add) => changes.push(Replicated::Add(add)),
                Err(reason) => {
                    self.metrics.cluster_bad_messages.increment(1);
                    tracing::warn!(path, reason, "cluster: a stored topic could not be loaded");
                }
            }
        }
        changes
    }

    /// The changes that make this node's views equal to `fields`, in precedence order.
    fn view_changes(&self, fields: HashMap<String, Vec<u8>>) -> Vec<Replicated> {
        let mut definitions = HashMap::new();
        let mut created = HashMap::new();
        for (field, bytes) in fields {
            match field.split_once(':') {
                Some(("d", name)) => {
                    definitions.insert(name.to_owned(), bytes);
                }
                Some(("c", name)) => {
                    let seq = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                    created.insert(name.to_owned(), seq.unwrap_or(u64::MAX));
                }
                _ => {}
            }
        }
        let installed: HashMap<String, String> = self.engine.view_specs().into_iter().collect();
        let stored: HashSet<&String> = definitions.keys().collect();
        let mut changes: Vec<Replicated> = installed
            .keys()
            .filter(|name| !stored.contains(name))
            .map(|name| Replicated::RemoveView { name: name.clone() })
            .collect();
        let mut ordered: Vec<(u64, String, Vec<u8>)> = definitions
            .into_iter()
            .map(|(name, d)| (created.get(&name).copied().unwrap_or(u64::MAX), name, d))
            .collect();
        ordered.sort();
        for (_, name, definition) in ordered {
            let decoded = parse_view_definition(&definition).and_then(|(text, creator)| {
                let spec =
                    diffusion_core::view::ViewSpec::parse(&text).map_err(|e| e.to_string())?;
                Ok((text, spec, creator))
            });
            match decoded {
                Ok((text, _, _)) if installed.get(&name) == Some(&text) => {}
                Ok((_, spec, creator)) => changes.push(Replicated::CreateView {
                    name,
                    spec: Arc::new(spec),
                    creator,
                }),
                Err(reason) => {
                    self.metrics.cluster_bad_messages.increment(1);
                    tracing::warn!(
                        view = name,
                        reason,
                        "cluster: a stored view could not be loaded"
                    );
                }
            }
        }
        changes
    }
}

/// The sequence number at the start of an accepted message (`{"s":N,…`), without decoding
/// the rest.
fn peek_seq(message: &[u8]) -> Option<u64> {
    peek_header(message).map(|(seq, _)| seq)
}

/// The sequence number and epoch at the start of an accepted message
/// (`{"s":N,"e":"EPOCH",…`), without decoding the rest.
fn peek_header(message: &[u8]) -> Option<(u64, &str)> {
    let rest = message.strip_prefix(b"{\"s\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    let seq = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let rest = rest[end..].strip_prefix(b",\"e\":\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    Some((seq, std::str::from_utf8(&rest[..end]).ok()?))
}

/// A message's fingerprint (not kept anywhere but this process).
fn hash_of(message: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.hash(&mut hasher);
    hasher.finish()
}

/// The sequence number of a log entry (id `SEQ-1`).
fn entry_seq(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_read_without_decoding() {
        assert_eq!(
            peek_header(br#"{"s":42,"e":"0a1b","t":1,"op":"set"}"#),
            Some((42, "0a1b"))
        );
        assert_eq!(peek_seq(br#"{"s":42,"t":1}"#), None, "no epoch");
        assert_eq!(peek_seq(br#"{"t":1}"#), None);
        assert_eq!(peek_seq(br#"{"s":}"#), None);
        assert_eq!(entry_seq("17-1"), Some(17));
        assert_eq!(entry_seq("x"), None);
    }
}
