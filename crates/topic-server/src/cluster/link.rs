//! The node's connections to the cluster's Redis — one Redis server, or a Redis Cluster — in
//! one shape: [`Commands`] for scripts and reads, and a subscription that turns every change
//! published on a partition's channel into a [`Push`] on a bounded channel.
//!
//! Both kinds speak RESP3 so that messages arrive as pushes on a connection the redis crate
//! re-establishes by itself, resubscribing as it does (plain `SUBSCRIBE` on one server,
//! sharded `SSUBSCRIBE` on a Redis Cluster, where each partition's channel lives on the shard
//! that holds its keys). The channel is bounded in messages and in bytes ([`FeedBudget`]): a
//! push that does not fit is dropped and the overflow noted, and the applier reads what it
//! missed from the partition logs, so a burst costs memory up to the bounds and never more.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisFuture, Value};
use tokio::sync::mpsc;

use super::keys::{STREAMS, StreamKeys};

/// How long a command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the node could not reach the cluster's Redis.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The URL (or its CA file) was refused.
    #[error(transparent)]
    Client(#[from] service_kit::redis_client::RedisClientError),
    /// Redis answered with an error, or not at all.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No URL was given.
    #[error("--cluster needs at least one redis:// URL")]
    NoUrl,
}

/// What the subscription delivers.
#[derive(Debug)]
pub(crate) enum Push {
    /// A change published on stream `stream`'s channel.
    Change { stream: usize, message: Bytes },
    /// The subscription to a stream's channel was (re)confirmed: whatever was published
    /// while it was down is in the log.
    Subscribed { stream: usize },
    /// Redis ended the subscription to a stream's channel (on a Redis Cluster, when the
    /// channel's slot moves to another shard).
    Unsubscribed { stream: usize },
}

impl Push {
    /// The bytes it holds (counted against the feed's budget).
    pub fn len(&self) -> usize {
        match self {
            Self::Change { message, .. } => message.len(),
            Self::Subscribed { .. } | Self::Unsubscribed { .. } => 0,
        }
    }
}

/// Commands to the cluster's Redis.
#[derive(Clone)]
pub(crate) enum Commands {
    /// One Redis server (reconnects by itself).
    Single(ConnectionManager),
    /// A Redis Cluster (routes each command to the shard holding its key).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The open link: commands, plus the subscription's connection (kept so it lives).
pub(crate) struct Link {
    /// For scripts and reads.
    pub commands: Commands,
    /// Whether this is a Redis Cluster (changes are published with `SPUBLISH`).
    pub sharded: bool,
    /// The subscription's connection: subscribed while it lives.
    pub subscription: Commands,
}

/// The bytes of change messages waiting between the subscription and the applier, against a
/// limit, and whether any were dropped for it.
#[derive(Debug)]
pub(crate) struct FeedBudget {
    bytes: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
}

impl FeedBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
        }
    }

    /// Counts `len` more bytes waiting, unless that would pass the limit.
    fn admit(&self, len: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(len).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// `len` bytes are no longer waiting.
    pub fn release(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    fn overflow(&self) {
        self.overflowed.store(true, Ordering::Release);
    }

    /// Whether anything was dropped since the last call.
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }
}

/// Turns pushes into [`Push`]es on `feed`, within `budget`.
fn push_sender(
    feed: mpsc::Sender<Push>,
    budget: Arc<FeedBudget>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |info: PushInfo| {
        let stream_of = |data: &[Value]| match data.first() {
            Some(Value::BulkString(channel)) => StreamKeys::index_of_channel(channel),
            _ => None,
        };
        let push = match info.kind {
            PushKind::Message | PushKind::SMessage => {
                match (stream_of(&info.data), info.data.get(1)) {
                    (Some(stream), Some(Value::BulkString(message))) => Some(Push::Change {
                        stream,
                        message: Bytes::copy_from_slice(message),
                    }),
                    _ => None,
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                stream_of(&info.data).map(|stream| Push::Subscribed { stream })
            }
            PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                stream_of(&info.data).map(|stream| Push::Unsubscribed { stream })
            }
            _ => None,
        };
        let Some(push) = push else {
            return Ok(());
        };
        let len = push.len();
        if !budget.admit(len) {
            budget.overflow();
        } else if feed.try_send(push).is_err() {
            budget.release(len);
            budget.overflow();
        }
        Ok(())
    }
}

/// `url` asking for RESP3 (pushes on an ordinary connection).
fn with_resp3(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}protocol=resp3")
}

/// Connects to the cluster's Redis and subscribes to every stream's channel. More than one
/// URL, or a single server that says it runs in cluster mode, means a Redis Cluster.
pub(crate) async fn connect(
    urls: &[String],
    ca_file: Option<&Path>,
    feed: mpsc::Sender<Push>,
    budget: Arc<FeedBudget>,
) -> Result<Link, LinkError> {
    let first = urls.first().ok_or(LinkError::NoUrl)?;
    let sharded = urls.len() > 1 || cluster_enabled(first, ca_file).await?;
    let channels: Vec<String> = (0..STREAMS).map(|i| StreamKeys::of(i).channel).collect();
    if sharded {
        let builder = |nodes: &[String]| {
            ClusterClientBuilder::new(nodes.iter().map(|u| with_resp3(u)))
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(CONNECTION_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
        };
        // A change must run at most once: no resending a script whose answer was lost.
        let commands = builder(urls)
            .retries(0)
            .build()?
            .get_async_connection()
            .await?;
        let mut subscription = builder(urls)
            .push_sender(push_sender(feed, budget))
            .build()?
            .get_async_connection()
            .await?;
        // One channel at a time: each lives on its own shard.
        for channel in &channels {
            subscription.ssubscribe(channel).await?;
        }
        return Ok(Link {
            commands: Commands::Cluster(commands),
            sharded,
            subscription: Commands::Cluster(subscription),
        });
    }
    let client = service_kit::redis_client::client(&with_resp3(first), ca_file)?;
    let config = || {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    };
    let commands = client.get_connection_manager_with_config(config()).await?;
    let mut subscription = client
        .get_connection_manager_with_config(
            config()
                .set_push_sender(push_sender(feed, budget))
                .set_automatic_resubscription(),
        )
        .await?;
    subscription.subscribe(&channels).await?;
    Ok(Link {
        commands: Commands::Single(commands),
        sharded,
        subscription: Commands::Single(subscription),
    })
}

/// Whether the Redis server at `url` runs in cluster mode.
async fn cluster_enabled(url: &str, ca_file: Option<&Path>) -> Result<bool, LinkError> {
    let client = service_kit::redis_client::client(url, ca_file)?;
    let mut connection = tokio::time::timeout(
        CONNECTION_TIMEOUT,
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connecting timed out")))??;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut connection)
        .await?;
    Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(len: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(StreamKeys::of(3).channel.into_bytes()),
                Value::BulkString(vec![b'x'; len]),
            ],
        }
    }

    /// What waits for the applier is bounded in bytes as well as in messages; what does not
    /// fit is dropped and noted (the applier then reads the logs).
    #[test]
    fn the_feed_is_bounded_in_bytes() {
        let (feed, mut received) = mpsc::channel(16);
        let budget = Arc::new(FeedBudget::new(1_000));
        let send = push_sender(feed, Arc::clone(&budget));
        send(change(600)).unwrap();
        assert!(!budget.take_overflow());
        send(change(600)).unwrap();
        assert!(budget.take_overflow(), "past the byte limit");
        let Some(Push::Change { stream, message }) = received.try_recv().ok() else {
            panic!("the first change waits")
        };
        assert_eq!((stream, message.len()), (3, 600));
        assert!(received.try_recv().is_err(), "the second was dropped");
        budget.release(600);
        send(change(600)).unwrap();
        assert!(
            !budget.take_overflow(),
            "room again once the applier took the first"
        );
    }
}
