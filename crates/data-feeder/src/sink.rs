//! Where payloads go: the redis-ws-bridge over WebSocket, or Redis PUBLISH.
//!
//! The poller never waits for the sink. It drops each payload into a latest-value slot (a
//! `watch` channel) and a background task delivers it. While the sink is unreachable only the
//! newest payload is kept, and it is delivered as soon as the connection is back: a price feed
//! wants the current price, not a backlog of stale ones. Failed deliveries are retried with
//! back-off; nothing here ever gives up until shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use service_kit::Backoff;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::config::SinkSpec;
use crate::source::MAX_BODY_BYTES;
use crate::state::Shared;

/// How long a connection attempt or one delivery may take before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The poller's side of the sink: hand over a payload, never block.
#[derive(Debug)]
pub(crate) struct SinkHandle {
    latest: watch::Sender<Option<Bytes>>,
}

impl SinkHandle {
    /// Queues `payload` for delivery, replacing any payload not yet delivered.
    pub fn offer(&self, payload: Bytes) {
        self.latest.send_replace(Some(payload));
    }
}

/// A sink ready to run: the handle for the poller and the delivery task's future.
pub(crate) struct Prepared {
    pub handle: SinkHandle,
    pub task: Delivery,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

/// The delivery task, built at bind time (so a bad URL fails early) and run later.
pub(crate) enum Delivery {
    WebSocket {
        url: String,
        latest: watch::Receiver<Option<Bytes>>,
    },
    Redis {
        connection: ConnectionManager,
        channel: String,
        latest: watch::Receiver<Option<Bytes>>,
    },
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The Redis URL was rejected by the client.
    #[error("invalid redis sink: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Prepares the sink for `spec`; Redis sinks PUBLISH to `channel`. Does not connect yet.
pub(crate) fn prepare(spec: &SinkSpec, channel: &str) -> Result<Prepared, SinkError> {
    let (sender, latest) = watch::channel(None);
    let task = match spec {
        SinkSpec::WebSocket(url) => Delivery::WebSocket {
            url: url.clone(),
            latest,
        },
        SinkSpec::Redis(url) => {
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(IO_TIMEOUT))
                .set_response_timeout(Some(IO_TIMEOUT))
                // Reconnection pacing is ours (service_kit::Backoff); fail fast inside.
                .set_number_of_retries(1);
            Delivery::Redis {
                connection: ConnectionManager::new_lazy_with_config(client, config)?,
                channel: channel.to_owned(),
                latest,
            }
        }
    };
    Ok(Prepared {
        handle: SinkHandle { latest: sender },
        task,
    })
}

impl Delivery {
    /// Delivers payloads until shutdown (or until the poller's handle is dropped).
    pub async fn run(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        match self {
            Self::WebSocket { url, latest } => run_ws(url, latest, shared, shutdown).await,
            Self::Redis {
                connection,
                channel,
                latest,
            } => run_redis(connection, channel, latest, shared, shutdown).await,
        }
    }
}

/// Waits for the next offered payload. `None` means the poller is gone.
async fn next_offer(latest: &mut watch::Receiver<Option<Bytes>>) -> Option<Bytes> {
    loop {
        latest.changed().await.ok()?;
        if let Some(payload) = latest.borrow_and_update().clone() {
            return Some(payload);
        }
    }
}

/// Takes a payload offered since we last looked, if any, replacing `pending`.
fn take_newer(latest: &mut watch::Receiver<Option<Bytes>>, pending: &mut Option<Bytes>) {
    if latest.has_changed().unwrap_or(false)
        && let Some(payload) = latest.borrow_and_update().clone()
    {
        *pending = Some(payload);
    }
}

/// Sleeps for the next back-off delay; false if shutdown began meanwhile.
async fn back_off(backoff: &mut Backoff, shutdown: &mut CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(backoff.next_delay()) => true,
        _ = shutdown.cancelled() => false,
    }
}

async fn run_redis(
    mut connection: ConnectionManager,
    channel: String,
    mut latest: watch::Receiver<Option<Bytes>>,
    shared: Arc<Shared>,
    mut shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    let mut pending: Option<Bytes> = None;
    loop {
        take_newer(&mut latest, &mut pending);
        let payload = match pending.take() {
            Some(payload) => payload,
            None => tokio::select! {
                offer = next_offer(&mut latest) => match offer {
                    Some(payload) => payload,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            },
        };
        let mut command = redis::cmd("PUBLISH");
        command.arg(&channel).arg(payload.as_ref());
        let publish = command.query_async::<i64>(&mut connection);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(IO_TIMEOUT, publish) => outcome,
            _ = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(Ok(_receivers)) => {
                shared.record_published(&payload);
                backoff.reset();
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("timed out after {IO_TIMEOUT:?}"),
                };
                shared.record_failure();
                tracing::warn!(%error, channel, "PUBLISH failed; retrying with back-off");
                pending = Some(payload);
                if !back_off(&mut backoff, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// How one WebSocket session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

fn ws_config() -> WebSocketConfig {
    // The bridge sends every channel message to every client, our own payloads included, so
    // incoming messages can be as large as outgoing ones.
    WebSocketConfig::default()
        .max_message_size(Some(MAX_BODY_BYTES + 1024))
        .max_frame_size(Some(MAX_BODY_BYTES + 1024))
        .max_write_buffer_size(4 * MAX_BODY_BYTES)
}

async fn run_ws(
    url: String,
    mut latest: watch::Receiver<Option<Bytes>>,
    shared: Arc<Shared>,
    mut shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    let mut pending: Option<Bytes> = None;
    let mut logged_down = false;
    loop {
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true);
        let connected = tokio::select! {
            connected = tokio::time::timeout(IO_TIMEOUT, connect) => connected,
            _ = shutdown.cancelled() => return,
        };
        let error = match connected {
            Ok(Ok((mut ws, _response))) => {
                tracing::info!(url, "connected to the WebSocket bridge");
                backoff.reset();
                logged_down = false;
                let end = ws_session(&mut ws, &mut latest, &mut pending, &shared, &mut shutdown);
                match end.await {
                    SessionEnd::Shutdown => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                        return;
                    }
                    SessionEnd::Lost(error) => error,
                }
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("connect timed out after {IO_TIMEOUT:?}"),
        };
        // Keep only the newest payload while disconnected; count the outage as a failure only
        // when something is waiting to be delivered.
        take_newer(&mut latest, &mut pending);
        if pending.is_some() {
            shared.record_failure();
        }
        if logged_down {
            tracing::debug!(url, %error, "WebSocket bridge still unreachable");
        } else {
            tracing::warn!(url, %error, "WebSocket bridge unreachable; reconnecting with back-off");
            logged_down = true;
        }
        if !back_off(&mut backoff, &mut shutdown).await {
            return;
        }
    }
}

async fn ws_session<S>(
    ws: &mut S,
    latest: &mut watch::Receiver<Option<Bytes>>,
    pending: &mut Option<Bytes>,
    shared: &Shared,
    shutdown: &mut CancellationToken,
) -> SessionEnd
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        take_newer(latest, pending);
        if let Some(payload) = pending.clone() {
            match Utf8Bytes::try_from(payload.clone()) {
                Ok(text) => {
                    match tokio::time::timeout(IO_TIMEOUT, ws.send(Message::Text(text))).await {
                        Ok(Ok(())) => {
                            *pending = None;
                            shared.record_published(&payload);
                        }
                        Ok(Err(error)) => return SessionEnd::Lost(error.to_string()),
                        Err(_) => return SessionEnd::Lost("send timed out".to_owned()),
                    }
                }
                Err(error) => {
                    // JSON from a slice is valid UTF-8, so this is not expected; drop it loudly.
                    *pending = None;
                    shared.record_failure();
                    tracing::error!(%error, "payload is not UTF-8; not sent as a text frame");
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            offer = next_offer(latest) => match offer {
                Some(payload) => *pending = Some(payload),
                None => return SessionEnd::Shutdown,
            },
            incoming = ws.next() => match incoming {
                // The bridge echoes every channel message, ours included: read and discard.
                // Reading also answers pings.
                Some(Ok(Message::Close(_))) => return SessionEnd::Lost("closed by the bridge".to_owned()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return SessionEnd::Lost(error.to_string()),
                None => return SessionEnd::Lost("connection closed".to_owned()),
            },
        }
    }
}
