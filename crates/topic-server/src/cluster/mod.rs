//! Cluster mode (`--cluster`): many topic-server nodes, one topic tree, kept in Redis.
//!
//! Redis is the cluster's only shared part. A change a session asks for is checked by its
//! node ([`Engine::propose`](crate::engine::Engine::propose)) and then *accepted* by Redis
//! through one Lua script ([`update.lua`](../update.lua)) that, atomically, checks it against
//! the stored state, stores it, numbers it in its partition, appends it to the partition's
//! bounded log (a stream) and publishes it on the partition's channel. Every node applies
//! the accepted changes of each partition in their numbered order
//! ([`applier`]), so every node's subscribers see every topic's updates in the order Redis
//! accepted them. The node that proposed a change answers its session once it has applied
//! the change itself, so a session reads its own writes. Keys: [`keys`]; messages:
//! [`message`]; connections: [`link`]; the design in full: docs/cluster.md.

mod applier;
pub(crate) mod keys;
mod link;
pub(crate) mod message;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diffusion_core::protocol::ErrorCode;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, OpError, Proposal};
use crate::metrics::Metrics;
use keys::StreamKeys;
use link::Commands;
use message::ScriptCall;

/// The update script (see the module documentation).
const UPDATE_SCRIPT: &str = include_str!("update.lua");
/// Pushes buffered between the subscription and the applier, and their bytes; past either,
/// the applier reads the logs instead.
const FEED_CAPACITY: usize = 65_536;
const FEED_BYTES: usize = 64 * 1024 * 1024;
/// How long a session's change may wait for Redis, and then for this node to apply it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait between attempts to reach Redis at start-up.
const START_RETRY: Duration = Duration::from_secs(1);

/// How a node joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://` URLs: one Redis server, or seed nodes of a Redis Cluster.
    pub urls: Vec<String>,
    /// This node's name in logs and messages.
    pub node_id: String,
    /// A CA file for a `rediss://` single server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Entries each partition's log keeps (approximately: Redis trims in whole blocks).
    pub log_length: usize,
}

/// A node's membership of a cluster: proposes changes and waits for them to be applied.
pub(crate) struct Cluster {
    node_id: String,
    commands: Commands,
    sharded: bool,
    log_length: usize,
    update: redis::Script,
    /// Per stream, the sequence number this node has applied up to.
    applied: Vec<watch::Receiver<u64>>,
    /// Stops the applier when the node goes away.
    stop: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    /// Connects to the cluster's Redis (retrying until it answers or `shutdown` fires), loads
    /// the shared tree into `engine` and starts applying what other nodes change.
    pub async fn join(
        config: &ClusterConfig,
        engine: Arc<Engine>,
        metrics: Metrics,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        loop {
            match Self::try_join(config, Arc::clone(&engine), metrics.clone()).await {
                Ok(cluster) => return Ok(cluster),
                Err(error @ link::LinkError::Client(_)) | Err(error @ link::LinkError::NoUrl) => {
                    return Err(error.into());
                }
                Err(error) => {
                    tracing::warn!(%error, urls = ?config.urls, "cluster: cannot reach Redis yet; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => anyhow::bail!("shut down before the cluster's Redis answered"),
                () = tokio::time::sleep(START_RETRY) => {}
            }
        }
    }

    async fn try_join(
        config: &ClusterConfig,
        engine: Arc<Engine>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, link::LinkError> {
        let (feed, feed_rx) = mpsc::channel(FEED_CAPACITY);
        let budget = Arc::new(link::FeedBudget::new(FEED_BYTES));
        let link = link::connect(
            &config.urls,
            config.ca_file.as_deref(),
            feed,
            Arc::clone(&budget),
        )
        .await?;
        let (mut applier, applied) =
            applier::Applier::new(engine, link.commands.clone(), link.subscription, metrics);
        // Subscribed first, loaded second: whatever is published meanwhile waits in the feed
        // and is skipped if the load already holds it.
        applier.load().await?;
        let stop = CancellationToken::new();
        tokio::spawn(applier.run(feed_rx, budget, stop.clone()));
        let sharded = link.sharded;
        tracing::info!(node = %config.node_id, sharded, "joined the cluster; shared tree loaded");
        Ok(Arc::new(Self {
            node_id: config.node_id.clone(),
            commands: link.commands,
            sharded,
            log_length: config.log_length,
            update: redis::Script::new(UPDATE_SCRIPT),
            applied,
            stop,
        }))
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Has Redis accept `proposal`, then waits until this node has applied everything the
    /// partition held when Redis answered (the change, or what made it unchanged or
    /// refused), so the session that asked reads its own write.
    pub async fn submit(&self, proposal: &Proposal) -> Result<(), OpError> {
        let calls = message::script_calls(proposal, &self.node_id)
            .map_err(|error| internal(&error.to_string()))?;
        for call in calls {
            let (seq, outcome) = tokio::time::timeout(WRITE_TIMEOUT, self.accept(&call))
                .await
                .map_err(|_| unavailable("it did not answer in time"))??;
            self.wait_applied(call.stream, seq).await;
            outcome?;
        }
        Ok(())
    }

    /// Runs the update script for one call: the partition's number after it, and whether the
    /// change was made (or unchanged) or refused.
    async fn accept(&self, call: &ScriptCall) -> Result<(u64, Result<(), OpError>), OpError> {
        let keys = StreamKeys::of(call.stream);
        let mut commands = self.commands.clone();
        let reply: Vec<redis::Value> = self
            .update
            .key(&keys.state)
            .key(&keys.seq)
            .key(&keys.log)
            .key(&keys.epoch)
            .key(&keys.last)
            .arg(call.op)
            .arg(&keys.channel)
            .arg(self.log_length)
            .arg(if self.sharded { "SPUBLISH" } else { "PUBLISH" })
            .arg(&call.name)
            .arg(&call.spec)
            .arg(&call.value[..])
            .arg(call.mode)
            .arg(if call.retained { "1" } else { "0" })
            .arg(&call.owner)
            .arg(&call.body)
            .arg(format!("{:016x}", rand::random::<u64>()))
            .arg(format!("{:016x}", rand::random::<u64>()))
            .invoke_async(&mut commands)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cluster: Redis refused or failed a change");
                unavailable(&error.to_string())
            })?;
        let text = |i: usize| match reply.get(i) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b[..]).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            Some(redis::Value::Int(n)) => n.to_string(),
            _ => String::new(),
        };
        let seq = text(1).parse().unwrap_or(0);
        let outcome = match text(0).as_str() {
            "ok" | "unchanged" => Ok(()),
            "missing" if call.op == "unview" => Err(OpError::new(
                ErrorCode::NoSuchView,
                format!("no view named '{}'", call.name),
            )),
            "missing" => Err(OpError::new(
                ErrorCode::NoSuchTopic,
                format!("no topic at path '{}'", call.name),
            )),
            "exists" => Err(OpError::new(
                ErrorCode::TopicExists,
                format!(
                    "topic '{}' already exists with different type or properties",
                    call.name
                ),
            )),
            "replaced" => Err(OpError::new(
                ErrorCode::NoSuchTopic,
                format!(
                    "the topic at '{}' was replaced by one of another type or properties meanwhile: the value was not set",
                    call.name
                ),
            )),
            other => Err(internal(&format!(
                "unexpected reply from the update script: {other}"
            ))),
        };
        Ok((seq, outcome))
    }

    /// Waits (bounded) until this node has applied change `seq` of `stream`.
    async fn wait_applied(&self, stream: usize, seq: u64) {
        let mut applied = self.applied[stream].clone();
        let waited =
            tokio::time::timeout(WRITE_TIMEOUT, applied.wait_for(|done| *done >= seq)).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!(
                stream,
                seq,
                "cluster: a change Redis accepted was not applied here in time; answering anyway"
            );
        }
    }
}

/// An `INTERNAL` error; the details go to the log only.
fn internal(detail: &str) -> OpError {
    tracing::error!(detail, "cluster: a change failed inside the server");
    OpError::new(ErrorCode::Internal, "internal error")
}

/// Redis failed or did not answer: the script may or may not have run.
fn unavailable(reason: &str) -> OpError {
    OpError::new(
        ErrorCode::Unavailable,
        format!(
            "the cluster's Redis failed ({reason}): the change may or may not have been made; fetch to see"
        ),
    )
}
