//! The relay: channel messages in, topic values out.
//!
//! The source (see [`crate::source`]) reconnects by itself; the topic-server side
//! ([`TopicSide`]) runs in the shared reconnect loop; the [`Inbox`] between them keeps the latest
//! message, as bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use service_kit::Reconnect;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::inbox::Inbox;
use crate::source::{self, Source};
use crate::topic_side::TopicSide;

/// Counters describing what the relay has done; shared so tests and logs can read them.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Messages received from the channel.
    pub received: AtomicU64,
    /// Messages set as the topic's value.
    pub relayed: AtomicU64,
    /// Messages skipped because they were not JSON.
    pub skipped_invalid: AtomicU64,
    /// Messages skipped because they were larger than the configured limit.
    pub skipped_oversize: AtomicU64,
    /// Times the topic was found removed (by someone else) and created again.
    pub restored: AtomicU64,
    /// Messages superseded by a newer one while the topic server was unreachable.
    pub superseded: AtomicU64,
    /// Whether the topic server connection is up (and the topic exists).
    pub topic_server_connected: AtomicBool,
}

/// The relay: configure with [`Relay::new`], observe with [`Relay::stats`], start with
/// [`Relay::run`].
#[derive(Debug)]
pub struct Relay {
    config: Config,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// A relay for `config`; nothing happens until [`Relay::run`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            stats: Arc::default(),
        }
    }

    /// The relay's live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Relays until shutdown. Connection failures on either side are retried. Errors: flags
    /// that name no single identity, an unusable CA file (both before anything starts), and
    /// the topic server refusing backend-app for good — its authentication refused, its token
    /// expired, or no permission to create its topic.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let options = self.config.identity.connect_options()?;
        // For the bridge; it also checks the CA file (which the topic-server side reads at every
        // connection) once, so a bad one stops backend-app at start.
        let tls = service_kit::tls::client_config(options.ca_file.as_deref())?;
        let source = Source::prepare(
            self.config.from.clone(),
            self.config.redis_ca_file.as_deref(),
            tls,
        )?;
        let (events, source_task) =
            source::spawn(source, self.config.channel.clone(), shutdown.clone());
        let inbox = Inbox::new(
            events,
            Arc::clone(&self.stats),
            self.config.max_message_bytes,
        );
        let peer = format!("topic server {}", self.config.topic_server);
        let mut topic_side = TopicSide::new(self.config, options, self.stats, inbox);
        Reconnect::new(peer).run(&mut topic_side, &shutdown).await;
        let refused = topic_side.refused().map(str::to_owned);
        // Dropping the inbox lets the source's task end even if shutdown has not begun.
        drop(topic_side);
        let _ = source_task.await;
        match refused {
            Some(reason) => Err(anyhow::anyhow!(
                "the topic server refused backend-app: {reason}"
            )),
            None => Ok(()),
        }
    }
}
