//! Starts the platform's tiers in-process, on loopback ports chosen by the OS, around a private
//! redis-server, so end-to-end tests exercise the real components together. Each tier has its
//! own `CancellationToken` so a test can stop one tier without the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use service_kit::testing::RedisServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running tier: its shutdown trigger and its task.
#[derive(Debug)]
pub struct Tier {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Tier {
    fn spawn<F>(run: impl FnOnce(tokio_util::sync::CancellationToken) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self { shutdown, task }
    }

    /// Stops the tier and waits for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("tier did not stop within 10 s")?
            .context("tier task panicked")?
    }
}

/// How the backend app reads the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSource {
    /// Through the bridge's WebSocket, as in the tutorial.
    Bridge,
    /// Straight from Redis.
    Redis,
}

/// The whole stack. The feeder is optional so tests can publish by hand.
#[derive(Debug)]
pub struct Pipeline {
    /// The private redis-server.
    pub redis: RedisServer,
    /// Address of the redis-ws-bridge.
    pub bridge_addr: SocketAddr,
    /// Address of the topic server.
    pub topic_server_addr: SocketAddr,
    /// The backend app's counters.
    pub relay_stats: Arc<backend_app::RelayStats>,
    /// Address of the feeder's control API, when a feeder runs.
    pub feeder_addr: Option<SocketAddr>,
    tiers: Vec<(&'static str, Tier)>,
}

/// Options for [`Pipeline::start`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Run a synthetic feeder publishing through the bridge at this interval.
    pub feeder_interval: Option<Duration>,
    /// Where backend-app reads from.
    pub backend_source: BackendSource,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            feeder_interval: Some(Duration::from_millis(50)),
            backend_source: BackendSource::Bridge,
        }
    }
}

/// The backend app's message size limit in the pipeline (small, so tests can pass it).
const MAX_RELAYED_BYTES: usize = 64 * 1024;
const TOPIC: &str = "redis/bitcoin";
const CHANNEL: &str = "app:notifications";

impl Pipeline {
    /// Starts redis-server and every tier.
    pub async fn start(options: PipelineOptions) -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let mut tiers = Vec::new();

        let server = topic_server::bind(topic_server::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..topic_server::Config::default()
        })
        .await?;
        let topic_server_addr = server.local_addr();
        tiers.push(("topic-server", Tier::spawn(|s| server.run(s))));

        let mut bridge_config = redis_ws_bridge::Config::new(redis.url());
        bridge_config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // The bridge publishes only for clients holding its publish token: the feeder.
        let publish_token =
            service_kit::secret::Secret::new("pipeline-publish-token-0123", "pipeline test")?;
        bridge_config.publish_token = Some(publish_token.clone());
        let bridge = redis_ws_bridge::bind(bridge_config).await?;
        let bridge_addr = bridge.local_addr();
        tiers.push(("redis-ws-bridge", Tier::spawn(|s| bridge.run(s))));

        let from = match options.backend_source {
            BackendSource::Bridge => backend_app::SourceUrl::Bridge(format!("ws://{bridge_addr}/")),
            BackendSource::Redis => backend_app::SourceUrl::Redis(redis.url()),
        };
        let relay = backend_app::Relay::new(backend_app::Config {
            from,
            channel: CHANNEL.to_owned(),
            topic_server: format!("ws://{topic_server_addr}"),
            topic: TOPIC.to_owned(),
            identity: Default::default(),
            redis_ca_file: None,
            max_message_bytes: MAX_RELAYED_BYTES,
        });
        let relay_stats = relay.stats();
        tiers.push(("backend-app", Tier::spawn(|s| relay.run(s))));

        let mut feeder_addr = None;
        if let Some(interval) = options.feeder_interval {
            let feeder = data_feeder::bind(data_feeder::Config {
                interval,
                sink: data_feeder::SinkSpec::WebSocket(format!("ws://{bridge_addr}/")),
                control_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                seed: Some(7),
                synthetic_change_probability: 1.0,
                publish_token: Some(publish_token),
                ..data_feeder::Config::default()
            })
            .await?;
            feeder_addr = Some(feeder.control_addr());
            tiers.push(("data-feeder", Tier::spawn(|s| feeder.run(s))));
        }

        Ok(Self {
            redis,
            bridge_addr,
            topic_server_addr,
            relay_stats,
            feeder_addr,
            tiers,
        })
    }

    /// The largest channel message the backend app relays in these tests.
    pub fn max_relayed_bytes(&self) -> usize {
        MAX_RELAYED_BYTES
    }

    /// The topic the backend app sets.
    pub fn topic(&self) -> &'static str {
        TOPIC
    }

    /// The Redis channel in use.
    pub fn channel(&self) -> &'static str {
        CHANNEL
    }

    /// The topic server's WebSocket URL.
    pub fn topic_server_url(&self) -> String {
        format!("ws://{}", self.topic_server_addr)
    }

    /// The bridge's WebSocket URL.
    pub fn bridge_url(&self) -> String {
        format!("ws://{}/", self.bridge_addr)
    }

    /// Stops one tier by name (e.g. `"data-feeder"`).
    pub async fn stop_tier(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self
            .tiers
            .iter()
            .position(|(n, _)| *n == name)
            .with_context(|| format!("no tier named {name}"))?;
        let (_, tier) = self.tiers.remove(index);
        tier.stop().await
    }

    /// Stops every tier (in reverse start order) and redis-server; reports the first failure.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some((name, tier)) = self.tiers.pop() {
            if let Err(e) = tier.stop().await {
                first_error.get_or_insert(e.context(name));
            }
        }
        self.redis.kill().await?;
        first_error.map_or(Ok(()), Err)
    }
}
