//! The feed: the source topics, the views over them, and a steady rate of updates through one
//! topic-server session, as an application publishing into the platform would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use loadgen::payload::{PayloadBuilder, now_ns};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use topic_client::{ConnectOptions, TopicClient, TopicType};

/// Bytes of one update (the benchmark payload: `{"pad":…,"seq":…,"ts":…}`).
const PAYLOAD_BYTES: usize = 100;

/// The views every run installs over the source topics `soak/t/N`: a copy changed on its way
/// (`soak/mirror/N`, a `process` step) and a throttled copy (`soak/slow/N`).
pub const VIEWS: [(&str, &str); 2] = [
    (
        "soak-mirror",
        "map ?soak/t// to soak/mirror/<path(2)> process {set(/via, 1)}",
    ),
    (
        "soak-slow",
        "map ?soak/t// to soak/slow/<path(2)> throttle to 1 update every 2 seconds",
    ),
];

/// The path of source topic `n`.
pub fn source_topic(n: usize) -> String {
    format!("soak/t/{n}")
}

/// What the feed has done so far.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Updates the server accepted.
    pub published: AtomicU64,
    /// Updates refused or lost (the session was down, the server answered an error).
    pub failed: AtomicU64,
}

/// The feed's session, with its topics and views in place.
pub struct Feed {
    client: TopicClient,
    topics: usize,
    seq_base: u64,
}

impl Feed {
    /// Connects to `url`, creates `topics` JSON source topics and the [`VIEWS`], each with a
    /// first value (so a subscriber gets something at once). Sequence numbers start above
    /// `seq_base`.
    pub async fn prepare(url: &str, topics: usize, seq_base: u64) -> anyhow::Result<Self> {
        let client = TopicClient::connect(url, ConnectOptions::default())
            .await
            .with_context(|| format!("connecting the feed to {url}"))?;
        let mut payloads = PayloadBuilder::new(PAYLOAD_BYTES, false);
        for n in 0..topics {
            let first: serde_json::Value =
                serde_json::from_str(&payloads.build(seq_base, now_ns()))?;
            client
                .add_topic_with_value(source_topic(n), TopicType::Json, BTreeMap::new(), first)
                .await
                .with_context(|| format!("adding {}", source_topic(n)))?;
        }
        for (name, specification) in VIEWS {
            client
                .create_view(name, specification)
                .await
                .with_context(|| format!("creating view {name}"))?;
        }
        Ok(Self {
            client,
            topics,
            seq_base,
        })
    }

    /// Publishes `rate` updates per second, to the source topics in turn, until `stop`.
    /// An update that fails is counted and the feed goes on (the client reconnects by itself).
    /// Gives the feed back with its session still open: the descriptors the servers hold are
    /// compared with the feed connected, as before the run.
    pub async fn run(
        self,
        rate: f64,
        counters: Arc<FeedCounters>,
        stop: CancellationToken,
    ) -> Self {
        let mut payloads = PayloadBuilder::new(PAYLOAD_BYTES, false);
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = self.seq_base;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            seq += 1;
            let path = source_topic(usize::try_from(seq % self.topics as u64).unwrap_or(0));
            let text = payloads.build(seq, now_ns());
            let sent = match RawValue::from_string(text) {
                Ok(raw) => self
                    .client
                    .set_raw(&path, &raw)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match sent {
                Ok(()) => counters.published.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    tracing::warn!(%path, %error, "an update failed");
                    counters.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        self
    }

    /// Ends the feed's session.
    pub async fn close(self) {
        self.client.close().await;
    }
}
