//! The one task that changes a cluster node's tree: it applies, in each partition's order,
//! every change Redis accepted — from the pub/sub feed as it comes, from the partition's log
//! when the feed skipped something, and from the partition's state when the log no longer
//! reaches back far enough. One owner, messages in: nothing else writes the node's copy of
//! the shared tree, so no two sources can race.
//!
//! Per stream (partition or views) it knows the sequence number it has applied up to:
//! - a message numbered exactly one more is applied;
//! - a message it has already applied (numbered no more) is skipped;
//! - a message further ahead means a gap: the log fills it (`XRANGE`), then the message;
//! - a log that starts past the gap (trimmed) means the partition is *reloaded*: its topics'
//!   latest values are applied — subscribers get them as they would after a conflation — and
//!   topics Redis no longer holds are removed;
//! - every change names the one before it (`p`, the previous change's id `i`): a change that
//!   does not follow the one applied last, a counter of another epoch (Redis started counting
//!   again), a counter behind ours, or a last change Redis names differently than we do, all
//!   mean Redis lost changes this node applied (a crash with `appendfsync everysec`, a
//!   failover to a lagging replica) and numbered others again: the partition is reloaded.
//!
//! Every second, and whenever a subscription is confirmed again (after Redis came back), it
//! compares each counter with its own and catches up, so a change whose message was lost
//! is applied within about a second even when nothing else happens on its partition.

use std::collections::{BTreeMap, HashMap, HashSet};
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
/// Log entries read per request while catching up (with 1 MiB values, 100 MiB a reply).
const CATCH_UP_BATCH: usize = 100;

/// Reads one stream's sequence number, epoch, last change and state in one atomic step.
const SNAPSHOT_SCRIPT: &str = "return {redis.call('GET', KEYS[1]) or '0', \
     redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or '', \
     redis.call('HGETALL', KEYS[4])}";

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
    /// Per stream, the id of the change applied last (`None`: not known, after a reload of
    /// a stream that has none yet).
    last_ids: Vec<Option<String>>,
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
                last_ids: vec![None; STREAMS],
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
                        Push::Unsubscribed { stream } => self.resubscribe(stream).await,
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
        let Some(header) = Header::read(message) else {
            self.skip_bad(stream, message, "no header");
            return Ok(());
        };
        if !self.same_epoch(stream, header.epoch) {
            // Buffered from before a reload that already took the new epoch on? Then stale.
            let current: Option<String> = self.commands.get(StreamKeys::of(stream).epoch).await?;
            if current.as_deref() == self.epochs[stream].as_deref() {
                return Ok(());
            }
            return self.reload(stream, Some("lost")).await;
        }
        if header.seq <= self.applied[stream] {
            return Ok(());
        }
        if header.seq > self.applied[stream] + 1 {
            self.catch_up(stream).await?;
            if header.seq <= self.applied[stream] {
                return Ok(());
            }
        }
        self.apply_next(stream, &header, message).await
    }

    /// Applies the message numbered next, unless it does not follow the change applied last
    /// (another history): then the stream is reloaded instead.
    async fn apply_next(
        &mut self,
        stream: usize,
        header: &Header<'_>,
        message: &[u8],
    ) -> RedisResult<()> {
        if let Some(last) = &self.last_ids[stream]
            && last != header.prev
        {
            return self.reload(stream, Some("lost")).await;
        }
        self.last_ids[stream] = Some(header.id.to_owned());
        self.apply_message(stream, header.seq, message);
        Ok(())
    }

    /// Decodes and applies one accepted message numbered `seq`. A panic while applying is
    /// contained (the engine survives it): the change is skipped, counted and logged.
    fn apply_message(&mut self, stream: usize, seq: u64, message: &[u8]) {
        match message::decode(message) {
            Ok((_, change)) => {
                let engine = &self.engine;
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    engine.apply_replicated(change);
                }));
                match applied {
                    Ok(()) => self.metrics.cluster_applied.increment(1),
                    Err(_) => {
                        self.metrics.internal_errors.increment(1);
                        self.skip_bad(stream, message, "applying it failed inside the server");
                    }
                }
            }
            Err(error) => self.skip_bad(stream, message, &error.to_string()),
        }
        self.advance(stream, seq);
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

    /// Compares every stream's counter, epoch and last change with what was applied.
    async fn check_all(&mut self) -> RedisResult<()> {
        let _: RedisResult<String> = redis::cmd("PING").query_async(&mut self.subscription).await;
        for stream in 0..STREAMS {
            let keys = StreamKeys::of(stream);
            let (current, epoch, last): (Option<u64>, Option<String>, Option<String>) =
                redis::cmd("MGET")
                    .arg(&keys.seq)
                    .arg(&keys.epoch)
                    .arg(&keys.last)
                    .query_async(&mut self.commands)
                    .await?;
            let (current, applied) = (current.unwrap_or(0), self.applied[stream]);
            let fresh = applied == 0 && self.epochs[stream].is_none();
            let diverged = if fresh {
                false
            } else if epoch != self.epochs[stream] {
                epoch.is_some() || applied > 0
            } else {
                current < applied
                    || (current == applied
                        && self.last_ids[stream].is_some()
                        && last != self.last_ids[stream])
            };
            if diverged {
                self.reload(stream, Some("lost")).await?;
            } else if current != applied {
                self.catch_up(stream).await?;
            }
        }
        Ok(())
    }

    /// Redis dropped this node's subscription to a stream's channel (a Redis Cluster moved
    /// its slot): subscribe again, then catch up with what was missed.
    async fn resubscribe(&mut self, stream: usize) -> RedisResult<()> {
        let channel = StreamKeys::of(stream).channel;
        tracing::info!(
            stream,
            "cluster: subscription dropped by Redis; subscribing again"
        );
        match &mut self.subscription {
            Commands::Cluster(connection) => connection.ssubscribe(&channel).await?,
            Commands::Single(connection) => connection.subscribe(&channel).await?,
        }
        self.catch_up(stream).await
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
                let next = self.applied[stream] + 1;
                if entry_seq(&entry.id) != Some(next) {
                    continue;
                }
                let message = match entry.map.get("m") {
                    Some(redis::Value::BulkString(message)) => &message[..],
                    _ => &[][..],
                };
                let Some(header) = Header::read(message).filter(|h| h.seq == next) else {
                    // Unreadable: skipped and counted, never read again.
                    self.skip_bad(stream, message, "log entry without a readable change");
                    self.advance(stream, next);
                    continue;
                };
                if !self.same_epoch(stream, header.epoch) {
                    return self.reload(stream, Some("lost")).await;
                }
                self.metrics.cluster_caught_up.increment(1);
                self.apply_next(stream, &header, message).await?;
                if self.applied[stream] != next {
                    // Reloaded: the rest of this batch is behind.
                    return Ok(());
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
        let (seq, epoch, last, fields): (u64, String, String, HashMap<String, Vec<u8>>) = self
            .snapshot
            .key(&keys.seq)
            .key(&keys.epoch)
            .key(&keys.last)
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
        self.last_ids[stream] = (!last.is_empty()).then_some(last);
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

/// What the script puts at the start of an accepted message
/// (`{"s":N,"e":"EPOCH","p":"PREV","i":"ID",…`), read without decoding the rest.
#[derive(Debug, PartialEq, Eq)]
struct Header<'a> {
    seq: u64,
    epoch: &'a str,
    prev: &'a str,
    id: &'a str,
}

impl<'a> Header<'a> {
    fn read(message: &'a [u8]) -> Option<Self> {
        let rest = message.strip_prefix(b"{\"s\":")?;
        let end = rest.iter().position(|b| !b.is_ascii_digit())?;
        let seq = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        let mut rest = &rest[end..];
        let mut field = |name: &[u8]| -> Option<&'a str> {
            let after = rest
                .strip_prefix(b",\"")?
                .strip_prefix(name)?
                .strip_prefix(b"\":\"")?;
            let end = after.iter().position(|b| *b == b'"')?;
            rest = &after[end + 1..];
            std::str::from_utf8(&after[..end]).ok()
        };
        let epoch = field(b"e")?;
        let prev = field(b"p")?;
        let id = field(b"i")?;
        Some(Self {
            seq,
            epoch,
            prev,
            id,
        })
    }
}

/// The sequence number of a log entry (id `SEQ-1`).
fn entry_seq(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_without_decoding() {
        assert_eq!(
            Header::read(br#"{"s":42,"e":"0a1b","p":"","i":"c3","t":1,"op":"set"}"#),
            Some(Header {
                seq: 42,
                epoch: "0a1b",
                prev: "",
                id: "c3"
            })
        );
        assert_eq!(
            Header::read(br#"{"s":42,"e":"0a1b","t":1}"#),
            None,
            "no ids"
        );
        assert_eq!(Header::read(br#"{"t":1}"#), None);
        assert_eq!(Header::read(br#"{"s":}"#), None);
        assert_eq!(entry_seq("17-1"), Some(17));
        assert_eq!(entry_seq("x"), None);
    }
}
