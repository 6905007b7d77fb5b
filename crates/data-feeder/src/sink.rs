//! Where payloads go: the redis-ws-bridge over WebSocket, or Redis PUBLISH.
//!
//! The poller never waits for the sink. It drops each payload into a latest-value slot (a
//! `watch` channel) and a background task delivers it. While the sink is unreachable only the
//! newest payload is kept, and it is delivered as soon as the connection is back: a price feed
//! wants the current price, not a backlog of stale ones. Both sinks are [`Connector`]s of the
//! shared reconnect loop ([`service_kit::reconnect`]): a failed connection or delivery is
//! retried with back-off, and nothing here ever gives up until shutdown.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use service_kit::redis_client::{self, RedisClientError};
use service_kit::secret::Secret;
use service_kit::tls::{self, TlsError};
use service_kit::{Connector, Reconnect, SessionEnd};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
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
pub(crate) struct Delivery {
    /// The sink, password-free, for the logs.
    label: String,
    target: Target,
    latest: watch::Receiver<Option<Bytes>>,
}

/// Where a [`Delivery`] connects to.
enum Target {
    WebSocket {
        url: String,
        /// Presented as `Authorization: Bearer` so the bridge publishes our frames.
        token: Option<Secret>,
        /// For wss:// URLs.
        tls: Option<TlsConnector>,
    },
    Redis {
        /// Boxed: a client is far larger than the WebSocket target.
        client: Box<redis::Client>,
        channel: String,
    },
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The Redis URL or its CA file was rejected.
    #[error("invalid redis sink: {0}")]
    Redis(#[from] RedisClientError),
    /// The CA file of a wss:// sink could not be used.
    #[error("wss:// sink: {0}")]
    Tls(#[from] TlsError),
    /// A CA file was given for a sink that does not use TLS.
    #[error("--ca-file only applies to wss:// and rediss:// sinks")]
    CaWithoutTls,
    /// A publish token was given for a Redis sink, which does not take one.
    #[error("--publish-token-env only applies to ws:// and wss:// sinks (the redis-ws-bridge)")]
    TokenWithoutBridge,
}

/// Why one connection attempt failed (logged by the reconnect loop, then retried).
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the sink URL has no usable host name for TLS: {0}")]
    ServerName(String),
    #[error("connect timed out after {IO_TIMEOUT:?}")]
    Timeout,
}

/// How a sink reaches its target: the publish token for the bridge and a CA file for TLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkAccess<'a> {
    /// The bridge's publish token (ws:// and wss:// sinks only).
    pub token: Option<Secret>,
    /// PEM CA file for wss:// and rediss:// sinks.
    pub ca_file: Option<&'a Path>,
}

/// Prepares the sink for `spec`; Redis sinks PUBLISH to `channel`. Does not connect yet.
pub(crate) fn prepare(
    spec: &SinkSpec,
    channel: &str,
    access: SinkAccess<'_>,
) -> Result<Prepared, SinkError> {
    let (sender, latest) = watch::channel(None);
    if access.ca_file.is_some() && !spec.is_tls() {
        return Err(SinkError::CaWithoutTls);
    }
    let target = match spec {
        SinkSpec::WebSocket(url) => Target::WebSocket {
            url: url.clone(),
            token: access.token,
            tls: if spec.is_tls() {
                Some(TlsConnector::from(tls::client_config(access.ca_file)?))
            } else {
                None
            },
        },
        SinkSpec::Redis(_) if access.token.is_some() => return Err(SinkError::TokenWithoutBridge),
        SinkSpec::Redis(url) => Target::Redis {
            client: Box::new(redis_client::client(url, access.ca_file)?),
            channel: channel.to_owned(),
        },
    };
    Ok(Prepared {
        handle: SinkHandle { latest: sender },
        task: Delivery {
            label: spec.to_string(),
            target,
            latest,
        },
    })
}

impl Delivery {
    /// Delivers payloads until shutdown (or until the poller's handle is dropped).
    pub async fn run(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        let outbox = Outbox {
            latest: self.latest,
            pending: None,
            shared,
        };
        let reconnect = Reconnect::new(self.label);
        match self.target {
            Target::WebSocket { url, token, tls } => {
                let mut sink = WsSink {
                    url,
                    token,
                    tls,
                    outbox,
                };
                reconnect.run(&mut sink, &shutdown).await;
            }
            Target::Redis { client, channel } => {
                let mut sink = RedisSink {
                    client: *client,
                    channel,
                    outbox,
                };
                reconnect.run(&mut sink, &shutdown).await;
            }
        }
    }
}

/// The delivery side of the latest-value slot, with the payload not yet delivered.
struct Outbox {
    latest: watch::Receiver<Option<Bytes>>,
    /// Taken from the slot but not delivered yet (kept across reconnects).
    pending: Option<Bytes>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// The payload to deliver next: the pending one, else the next one offered. `None` means
    /// the poller is gone. Cancel-safe: the payload leaves `pending` only when returned.
    async fn next(&mut self) -> Option<Bytes> {
        self.take_newer();
        if let Some(payload) = self.pending.take() {
            return Some(payload);
        }
        loop {
            self.latest.changed().await.ok()?;
            if let Some(payload) = self.latest.borrow_and_update().clone() {
                return Some(payload);
            }
        }
    }

    /// Replaces the pending payload with one offered since we last looked, if any.
    fn take_newer(&mut self) {
        if self.latest.has_changed().unwrap_or(false)
            && let Some(payload) = self.latest.borrow_and_update().clone()
        {
            self.pending = Some(payload);
        }
    }

    /// `payload` reached the sink.
    fn delivered(&self, payload: &Bytes) {
        self.shared.record_published(payload);
    }

    /// `payload` did not reach the sink: deliver it on the next connection, unless a newer one
    /// is offered meanwhile.
    fn undelivered(&mut self, payload: Bytes) {
        self.pending = Some(payload);
    }

    /// The connection is down (or could not be made). Keeps only the newest payload, and counts
    /// the outage as a failure only when something is waiting to be delivered.
    fn interrupted(&mut self) -> ControlFlow<()> {
        self.take_newer();
        if self.pending.is_some() {
            self.shared.record_failure();
        }
        ControlFlow::Continue(())
    }
}

/// Publishes on a Redis connection of its own, made by the reconnect loop.
struct RedisSink {
    client: redis::Client,
    channel: String,
    outbox: Outbox,
}

impl Connector for RedisSink {
    type Connection = MultiplexedConnection;
    type Error = ConnectError;

    async fn connect(&mut self) -> Result<MultiplexedConnection, ConnectError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Ok(connected) => Ok(connected?),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn serve(
        &mut self,
        mut connection: MultiplexedConnection,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        loop {
            let payload = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return SessionEnd::Finished,
                offer = self.outbox.next() => match offer {
                    Some(payload) => payload,
                    None => return SessionEnd::Finished,
                },
            };
            let mut command = redis::cmd("PUBLISH");
            command.arg(&self.channel).arg(payload.as_ref());
            let publish = command.query_async::<i64>(&mut connection);
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(IO_TIMEOUT, publish) => outcome,
                _ = shutdown.cancelled() => return SessionEnd::Finished,
            };
            let error = match outcome {
                Ok(Ok(_receivers)) => {
                    self.outbox.delivered(&payload);
                    continue;
                }
                Ok(Err(error)) => format!("PUBLISH failed: {error}"),
                Err(_) => format!("PUBLISH timed out after {IO_TIMEOUT:?}"),
            };
            self.outbox.undelivered(payload);
            return SessionEnd::Lost(error);
        }
    }

    async fn interrupted(&mut self) -> ControlFlow<()> {
        self.outbox.interrupted()
    }
}

fn ws_config() -> WebSocketConfig {
    // The bridge sends every channel message to every client, our own payloads included, so
    // incoming messages can be as large as outgoing ones.
    WebSocketConfig::default()
        .max_message_size(Some(MAX_BODY_BYTES + 1024))
        .max_frame_size(Some(MAX_BODY_BYTES + 1024))
        .max_write_buffer_size(4 * MAX_BODY_BYTES)
}

/// A connection's byte stream, plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type WsStream = WebSocketStream<Box<dyn Io>>;

/// Sends each payload as one text frame to the redis-ws-bridge.
struct WsSink {
    url: String,
    /// The bridge's publish token, presented as `Authorization: Bearer`.
    token: Option<Secret>,
    /// Set for wss:// URLs.
    tls: Option<TlsConnector>,
    outbox: Outbox,
}

impl WsSink {
    /// Opens the TCP (and for wss:// the TLS) connection and the WebSocket on it, presenting
    /// the publish token.
    async fn open(&self) -> Result<WsStream, ConnectError> {
        let mut request = self.url.as_str().into_client_request()?;
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(tokio_tungstenite::tungstenite::Error::from)?;
            request.headers_mut().insert("Authorization", value);
        }
        let uri = request.uri();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| ConnectError::ServerName(host.clone()))?;
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
        Ok(ws)
    }
}

impl WsSink {
    /// Sends `payload` as a text frame; `Err` says why the connection is no longer usable.
    async fn send(&mut self, ws: &mut WsStream, payload: Bytes) -> Result<(), String> {
        let text = match Utf8Bytes::try_from(payload.clone()) {
            Ok(text) => text,
            Err(error) => {
                // JSON from a slice is valid UTF-8, so this is not expected; drop it loudly.
                self.outbox.shared.record_failure();
                tracing::error!(%error, "payload is not UTF-8; not sent as a text frame");
                return Ok(());
            }
        };
        let failure = match tokio::time::timeout(IO_TIMEOUT, ws.send(Message::Text(text))).await {
            Ok(Ok(())) => {
                self.outbox.delivered(&payload);
                return Ok(());
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "send timed out".to_owned(),
        };
        self.outbox.undelivered(payload);
        Err(failure)
    }
}

impl Connector for WsSink {
    type Connection = WsStream;
    type Error = ConnectError;

    async fn connect(&mut self) -> Result<WsStream, ConnectError> {
        match tokio::time::timeout(IO_TIMEOUT, self.open()).await {
            Ok(connected) => connected,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn serve(&mut self, mut ws: WsStream, shutdown: &CancellationToken) -> SessionEnd {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                offer = self.outbox.next() => match offer {
                    Some(payload) => {
                        if let Err(error) = self.send(&mut ws, payload).await {
                            return SessionEnd::Lost(error);
                        }
                    }
                    None => break,
                },
                incoming = ws.next() => match incoming {
                    // The bridge echoes every channel message, ours included: read and discard.
                    // Reading also answers pings.
                    Some(Ok(Message::Close(frame))) => {
                        // Say why: a 1008 here usually means a missing or wrong publish token.
                        let why = frame.map_or_else(String::new, |frame| {
                            format!(": {} {}", u16::from(frame.code), frame.reason)
                        });
                        return SessionEnd::Lost(format!("closed by the bridge{why}"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return SessionEnd::Lost(error.to_string()),
                    None => return SessionEnd::Lost("connection closed".to_owned()),
                },
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        SessionEnd::Finished
    }

    async fn interrupted(&mut self) -> ControlFlow<()> {
        self.outbox.interrupted()
    }
}
