//! The topic-server side of the relay, as a [`Connector`] of the shared reconnect loop:
//! connect and make sure the topic exists, then set every message as its value until the
//! connection ends; meanwhile, and during back-offs, the [`Inbox`] keeps taking messages in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use diffusion_core::TopicType;
use diffusion_core::protocol::ErrorCode;
use serde_json::Value;
use serde_json::value::RawValue;
use service_kit::{Connector, SessionEnd};
use tokio_util::sync::CancellationToken;
use topic_client::{ConnectOptions, TopicClient, TopicEvent};

use crate::config::Config;
use crate::inbox::Inbox;
use crate::relay::RelayStats;

/// The relay's connection to the topic server and what it needs to use one.
#[derive(Debug)]
pub(crate) struct TopicSide {
    config: Config,
    stats: Arc<RelayStats>,
    inbox: Inbox,
}

impl TopicSide {
    /// Sets messages from `inbox` on the topic of `config`, counting in `stats`.
    pub fn new(config: Config, stats: Arc<RelayStats>, inbox: Inbox) -> Self {
        Self {
            config,
            stats,
            inbox,
        }
    }

    /// Sets every message as the topic value until the connection or the source ends, putting
    /// the topic back whenever someone removes it.
    async fn relay(&mut self, client: &TopicClient, shutdown: &CancellationToken) -> SessionEnd {
        let mut last: Option<Box<RawValue>> = None;
        loop {
            if let Some(value) = self.inbox.take() {
                let mut result = client.set_raw(&self.config.topic, &value).await;
                if let Err(error) = &result
                    && error.code() == Some(ErrorCode::NoSuchTopic)
                {
                    // Removed between our sets: put it back with this value.
                    result = ensure_topic(&self.config, client, Some(&value)).await;
                    if result.is_ok() {
                        self.stats.restored.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match result {
                    Ok(()) => {
                        self.stats.relayed.fetch_add(1, Ordering::Relaxed);
                        last = Some(value);
                    }
                    Err(error) if client.is_closed() => {
                        self.inbox.put_back(value);
                        return SessionEnd::Lost(format!(
                            "{error}; will send the latest message again"
                        ));
                    }
                    Err(error) => {
                        // The server refused this value (it answered): log it and move on.
                        tracing::warn!(%error, "topic server refused the value");
                    }
                }
                continue;
            }
            tokio::select! {
                received = self.inbox.receive() => if !received {
                    return SessionEnd::Finished;
                },
                watched = client.next_event() => match watched {
                    Some(TopicEvent::Unsubscribed { path, reason })
                        if path == self.config.topic && reason == "removed" =>
                    {
                        self.restore(client, last.as_deref()).await;
                    }
                    Some(_) => {}
                    None => return SessionEnd::Lost("the topic server's events ended".to_owned()),
                },
                _ = client.closed() => {
                    return SessionEnd::Lost("topic server connection closed".to_owned());
                }
                _ = shutdown.cancelled() => return SessionEnd::Finished,
            }
        }
    }

    /// Puts the topic back (with the last value relayed) after someone removed it.
    async fn restore(&self, client: &TopicClient, last: Option<&RawValue>) {
        match ensure_topic(&self.config, client, last).await {
            Ok(()) => {
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.config.topic, "the topic was removed; created it again");
            }
            Err(error) => {
                tracing::warn!(topic = %self.config.topic, %error, "could not create the removed topic again");
            }
        }
    }
}

/// Creates the topic (with `value` when there is one): the relay owns it, so it puts it back
/// whenever someone removes it.
async fn ensure_topic(
    config: &Config,
    client: &TopicClient,
    value: Option<&RawValue>,
) -> Result<(), topic_client::ClientError> {
    let topic = &config.topic;
    // Creating the topic with its value in one request means subscribers never see it empty.
    // That request takes a tree: this rare path (the topic was removed) parses the value, which
    // keeps every number exact (serde_json's arbitrary_precision). It was validated on arrival.
    match value.and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok()) {
        Some(value) => {
            client
                .add_topic_with_value(topic, TopicType::Json, BTreeMap::new(), value)
                .await
        }
        None => {
            client
                .add_topic(topic, TopicType::Json, BTreeMap::new())
                .await
        }
    }
}

impl Connector for TopicSide {
    type Connection = TopicClient;
    type Error = anyhow::Error;

    /// Connects, makes sure the topic exists and watches it (to notice its removal), taking
    /// source messages in meanwhile.
    async fn connect(&mut self) -> anyhow::Result<TopicClient> {
        let config = &self.config;
        let options = ConnectOptions {
            principal: config.principal.clone(),
            credentials: config.credentials.clone(),
        };
        let connecting = async move {
            let client = TopicClient::connect(&config.topic_server, options).await?;
            ensure_topic(config, &client, None).await?;
            client.subscribe(format!(">{}", config.topic)).await?;
            // Operators and the hostile-input suite wait for this line.
            tracing::info!(topic = %config.topic, url = %config.topic_server, "topic server ready");
            anyhow::Ok(client)
        };
        self.inbox.receive_during(connecting).await
    }

    async fn serve(&mut self, client: TopicClient, shutdown: &CancellationToken) -> SessionEnd {
        self.stats
            .topic_server_connected
            .store(true, Ordering::Relaxed);
        let end = self.relay(&client, shutdown).await;
        self.stats
            .topic_server_connected
            .store(false, Ordering::Relaxed);
        client.close().await;
        end
    }

    async fn pause(&mut self, delay: Duration) {
        self.inbox.receive_during(tokio::time::sleep(delay)).await;
    }
}
