//! The topic-server side of the relay, as a [`Connector`] of the shared reconnect loop:
//! connect and make sure the topic exists, then set every message as its value until the
//! connection ends; meanwhile, and during back-offs, the [`Inbox`] keeps taking messages in.
//!
//! Lost connections and refused values are retried or skipped, but a refusal of backend-app
//! itself is final: its authentication refused (close code 4003), its token expired (4004), or
//! no permission to create its topic. Retrying cannot fix those — the operator must — so the
//! loop stops and [`crate::Relay::run`] returns the error (backend-app exits non-zero).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use diffusion_core::TopicType;
use diffusion_core::protocol::ErrorCode;
use serde_json::Value;
use serde_json::value::RawValue;
use service_kit::{Connector, SessionEnd};
use tokio_util::sync::CancellationToken;
use topic_client::{ClientError, ConnectOptions, TopicClient, TopicEvent};

use crate::config::Config;
use crate::inbox::Inbox;
use crate::relay::RelayStats;

/// The relay's connection to the topic server and what it needs to use one.
#[derive(Debug)]
pub(crate) struct TopicSide {
    config: Config,
    /// Who to be, and whom to trust, on the topic server.
    options: ConnectOptions,
    stats: Arc<RelayStats>,
    inbox: Inbox,
    /// Why the topic server will not have backend-app, once it has said so: the loop stops.
    refused: Option<String>,
}

impl TopicSide {
    /// Sets messages from `inbox` on the topic of `config`, connecting with `options`,
    /// counting in `stats`.
    pub fn new(
        config: Config,
        options: ConnectOptions,
        stats: Arc<RelayStats>,
        inbox: Inbox,
    ) -> Self {
        Self {
            config,
            options,
            stats,
            inbox,
            refused: None,
        }
    }

    /// Why the topic server refused backend-app for good, if it did.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Records a final refusal and logs it once, clearly.
    fn refuse(&mut self, reason: String) {
        tracing::error!(url = %self.config.topic_server, %reason, "the topic server refused backend-app; stopping (retrying cannot help: fix its credentials or permissions)");
        self.refused = Some(reason);
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

/// Whether a failure to connect is one that retrying cannot fix: the server refused
/// backend-app's identity, denied it its topic, or the CA file is unusable.
fn is_final(error: &ClientError) -> bool {
    matches!(error, ClientError::Refused(_) | ClientError::Tls(_))
        || error.code() == Some(ErrorCode::PermissionDenied)
}

/// Subscribes to the topic, to notice when someone removes it. Without the permission to
/// (`PERMISSION_DENIED`) the relay still works — it then restores the topic only when a set
/// finds it missing — so that is a warning, not a failure.
async fn watch(config: &Config, client: &TopicClient) -> Result<(), ClientError> {
    match client.subscribe(format!(">{}", config.topic)).await {
        Err(error) if error.code() == Some(ErrorCode::PermissionDenied) => {
            tracing::warn!(topic = %config.topic, %error, "cannot watch the topic for removal; it is restored only when a set finds it missing");
            Ok(())
        }
        other => other,
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
    type Error = ClientError;

    /// Connects, makes sure the topic exists and watches it (to notice its removal), taking
    /// source messages in meanwhile.
    async fn connect(&mut self) -> Result<TopicClient, ClientError> {
        let config = &self.config;
        let options = self.options.clone();
        let connecting = async move {
            let client = TopicClient::connect(&config.topic_server, options).await?;
            ensure_topic(config, &client, None).await?;
            watch(config, &client).await?;
            // Operators and the hostile-input suite wait for this line.
            tracing::info!(topic = %config.topic, url = %config.topic_server, "topic server ready");
            Ok(client)
        };
        let connected = self.inbox.receive_during(connecting).await;
        if let Err(error) = &connected
            && is_final(error)
        {
            self.refuse(error.to_string());
        }
        connected
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
        match client.refusal() {
            Some(refusal) => {
                self.refuse(refusal.to_string());
                SessionEnd::Finished
            }
            None => end,
        }
    }

    async fn interrupted(&mut self) -> ControlFlow<()> {
        if self.refused.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    async fn pause(&mut self, delay: Duration) {
        self.inbox.receive_during(tokio::time::sleep(delay)).await;
    }
}
