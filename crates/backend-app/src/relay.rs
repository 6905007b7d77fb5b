//! The relay loop: channel messages in, topic values out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use diffusion_core::TopicType;
use diffusion_core::protocol::ErrorCode;
use serde_json::Value;
use service_kit::Backoff;
use service_kit::redis_subscription::SubscriptionEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use topic_client::{ConnectOptions, TopicClient, TopicEvent};

use crate::config::Config;
use crate::source;

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

enum Step {
    Shutdown,
    Reconnect,
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

    /// Relays until shutdown. Connection failures on either side are retried, never fatal.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (mut events, source_task) = source::spawn(
            self.config.from.clone(),
            self.config.channel.clone(),
            shutdown.clone(),
        );
        let mut pending: Option<Value> = None;
        let mut backoff = Backoff::reconnect();
        let shutdown_wait = shutdown.clone();
        loop {
            let client = tokio::select! {
                client = self.connect(&mut events, &mut pending) => client,
                _ = shutdown_wait.cancelled() => break,
            };
            let client = match client {
                Ok(client) => client,
                Err(error) => {
                    tracing::warn!(url = %self.config.topic_server, %error, "topic server unavailable; retrying");
                    tokio::select! {
                        _ = self.sleep_collecting(&mut events, &mut pending, backoff.next_delay()) => {},
                        _ = shutdown_wait.cancelled() => break,
                    }
                    continue;
                }
            };
            backoff.reset();
            self.stats
                .topic_server_connected
                .store(true, Ordering::Relaxed);
            let step = self
                .relay(&client, &mut events, &mut pending, shutdown.clone())
                .await;
            self.stats
                .topic_server_connected
                .store(false, Ordering::Relaxed);
            client.close().await;
            if matches!(step, Step::Shutdown) {
                break;
            }
        }
        drop(events);
        let _ = source_task.await;
        Ok(())
    }

    /// Creates the topic (with `value` when there is one): the relay owns it, so it puts it
    /// back whenever someone removes it.
    async fn ensure_topic(
        &self,
        client: &TopicClient,
        value: Option<&Value>,
    ) -> Result<(), topic_client::ClientError> {
        let topic = &self.config.topic;
        match value {
            Some(value) => {
                client
                    .add_topic_with_value(topic, TopicType::Json, BTreeMap::new(), value.clone())
                    .await
            }
            None => {
                client
                    .add_topic(topic, TopicType::Json, BTreeMap::new())
                    .await
            }
        }
    }

    /// Connects to the topic server, makes sure the topic exists and watches it (to notice
    /// its removal).
    async fn connect(
        &self,
        events: &mut mpsc::Receiver<SubscriptionEvent>,
        pending: &mut Option<Value>,
    ) -> anyhow::Result<TopicClient> {
        let options = ConnectOptions {
            principal: self.config.principal.clone(),
            credentials: self.config.credentials.clone(),
        };
        let connecting = async {
            let client = TopicClient::connect(&self.config.topic_server, options).await?;
            self.ensure_topic(&client, None).await?;
            client.subscribe(format!(">{}", self.config.topic)).await?;
            tracing::info!(topic = %self.config.topic, url = %self.config.topic_server, "topic server ready");
            anyhow::Ok(client)
        };
        // Keep draining the source while connecting, so the Redis reader never stalls.
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                result = &mut connecting => return result,
                Some(event) = events.recv() => self.collect(event, pending),
            }
        }
    }

    /// Waits `delay` while keeping the latest source message.
    async fn sleep_collecting(
        &self,
        events: &mut mpsc::Receiver<SubscriptionEvent>,
        pending: &mut Option<Value>,
        delay: std::time::Duration,
    ) {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                Some(event) = events.recv() => self.collect(event, pending),
            }
        }
    }

    /// Parses a source event into the pending value (latest wins).
    fn collect(&self, event: SubscriptionEvent, pending: &mut Option<Value>) {
        let SubscriptionEvent::Message(payload) = event else {
            return;
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if payload.len() > self.config.max_message_bytes {
            self.stats.skipped_oversize.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                bytes = payload.len(),
                limit = self.config.max_message_bytes,
                "skipping channel message larger than the limit"
            );
            return;
        }
        match serde_json::from_slice::<Value>(&payload) {
            Ok(value) => {
                if pending.replace(value).is_some() {
                    self.stats.superseded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                self.stats.skipped_invalid.fetch_add(1, Ordering::Relaxed);
                let preview: String = String::from_utf8_lossy(&payload).chars().take(80).collect();
                tracing::warn!(%error, %preview, "skipping channel message that is not JSON");
            }
        }
    }

    /// Puts the topic back (with the last value relayed) after someone removed it.
    async fn restore(&self, client: &TopicClient, last: Option<&Value>) {
        match self.ensure_topic(client, last).await {
            Ok(()) => {
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.config.topic, "the topic was removed; created it again");
            }
            Err(error) => {
                tracing::warn!(topic = %self.config.topic, %error, "could not create the removed topic again");
            }
        }
    }

    /// Sets every message as the topic value until the connection or the process ends.
    async fn relay(
        &self,
        client: &TopicClient,
        events: &mut mpsc::Receiver<SubscriptionEvent>,
        pending: &mut Option<Value>,
        shutdown: CancellationToken,
    ) -> Step {
        let mut last: Option<Value> = None;
        loop {
            if let Some(value) = pending.take() {
                let mut result = client.set(&self.config.topic, value.clone()).await;
                if let Err(error) = &result
                    && error.code() == Some(ErrorCode::NoSuchTopic)
                {
                    // Removed between our sets: put it back with this value.
                    result = self.ensure_topic(client, Some(&value)).await;
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
                        tracing::warn!(%error, "topic server connection lost; will resend latest value");
                        *pending = Some(value);
                        return Step::Reconnect;
                    }
                    Err(error) => {
                        // The server refused this value (it answered): log it and move on.
                        tracing::warn!(%error, "topic server refused the value");
                    }
                }
                continue;
            }
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.collect(event, pending),
                    None => return Step::Shutdown,
                },
                watched = client.next_event() => match watched {
                    Some(TopicEvent::Unsubscribed { path, reason })
                        if path == self.config.topic && reason == "removed" =>
                    {
                        self.restore(client, last.as_ref()).await;
                    }
                    Some(_) => {}
                    None => return Step::Reconnect,
                },
                _ = client.closed() => {
                    tracing::warn!("topic server connection closed; reconnecting");
                    return Step::Reconnect;
                }
                _ = shutdown.cancelled() => return Step::Shutdown,
            }
        }
    }
}
