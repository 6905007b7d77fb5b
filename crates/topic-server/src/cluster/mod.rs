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
mod submitter;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diffusion_core::protocol::ErrorCode;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, OpError, Proposal};
use crate::metrics::Metrics;

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
    /// Hands changes to Redis in order, several per round trip.
    submitter: submitter::Submitter,
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
        let submitter = submitter::Submitter::start(
            link.commands,
            sharded,
            config.log_length,
            WRITE_TIMEOUT,
            stop.clone(),
        );
        tracing::info!(node = %config.node_id, sharded, "joined the cluster; shared tree loaded");
        Ok(Arc::new(Self {
            node_id: config.node_id.clone(),
            submitter,
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
    pub async fn submit(self: &Arc<Self>, proposal: &Proposal) -> Result<(), OpError> {
        self.begin(proposal).await?.await
    }

    /// Queues `proposal` for Redis now — changes begun one after another reach Redis in that
    /// order — and returns what finishes it: waiting for Redis's answers and for this node to
    /// apply them (as [`Cluster::submit`]). A session pipelines its `set`s this way.
    pub async fn begin(
        self: &Arc<Self>,
        proposal: &Proposal,
    ) -> Result<futures_util::future::BoxFuture<'static, Result<(), OpError>>, OpError> {
        let calls = message::script_calls(proposal, &self.node_id)
            .map_err(|error| internal(&error.to_string()))?;
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            let stream = call.stream;
            answers.push((stream, self.submitter.queue(call).await?));
        }
        let cluster = Arc::clone(self);
        Ok(Box::pin(async move {
            let mut result = Ok(());
            for (stream, answer) in answers {
                let accepted = tokio::time::timeout(WRITE_TIMEOUT, answer)
                    .await
                    .map_err(|_| unavailable("it did not answer in time"))?
                    .map_err(|_| unavailable("the node is shutting down"))??;
                cluster.wait_applied(stream, accepted.seq).await;
                if result.is_ok() {
                    result = accepted.outcome;
                }
            }
            result
        }))
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
