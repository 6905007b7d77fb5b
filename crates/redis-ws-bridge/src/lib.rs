//! `redis-ws-bridge`: a WebSocket server that connects browser and command-line clients to a
//! Redis pub/sub channel.
//!
//! It replaces the tutorial's `redis-server.js` with the same contract (clients connect to
//! `ws://host:3000/`, text they send is PUBLISHed to `app:notifications`, and every message on
//! that channel reaches every client) while holding up under load and failure:
//!
//! - **One shared Redis subscription** (`service_kit::redis_subscription::run`, reconnecting with
//!   back-off) feeds every client; each channel message becomes a WebSocket message once and is
//!   shared by reference with all clients. UTF-8 payloads go out as text frames, anything else
//!   as a binary frame with the bytes unchanged.
//! - **One shared publishing connection** (a lazily connecting, self-healing
//!   `ConnectionManager`). If Redis cannot take a client's message, that client is closed with
//!   1013 "redis unavailable: message not published, retry later", so it knows exactly which
//!   message was lost and can reconnect and resend; the bridge itself keeps running.
//! - **Bounded per-client queues.** The fan-out never waits for a client: a client whose queue
//!   (`--client-queue` messages / `--client-queue-bytes`) fills up is closed with 1008
//!   "send queue full: client too slow" and the others carry on.
//! - Client messages larger than `--max-message-bytes` close that client with 1009; binary
//!   frames from clients are refused with 1003 (nothing is published).
//! - **Publishing needs a token.** Only clients presenting the publish token
//!   (`--publish-token-env VAR`; `Authorization: Bearer TOKEN` or the subprotocol
//!   `publish-token.TOKEN`, see [`PROTOCOL`]) may publish; the others read, and are closed with
//!   1008 if they send. A wrong token is refused at the upgrade (HTTP 401). Without a token the
//!   bridge is read-only.
//! - Optional TLS (`--tls-cert`, `--tls-key`: `wss://`), `rediss://` Redis URLs
//!   (`--redis-ca-file` for a private CA), an optional Origin allow-list (HTTP 403 for other
//!   browser origins), `GET /healthz`, and a graceful shutdown that closes every client
//!   with 1001.
//!
//! The library runs in-process for tests: [`bind`] a [`Config`], then [`Bridge::run`].

mod client;
pub mod close;
mod config;
mod http;
mod hub;
mod queue;
mod redis_side;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use service_kit::secret::Secret;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use config::{
    Config, DEFAULT_CHANNEL, DEFAULT_CLIENT_QUEUE, DEFAULT_CLIENT_QUEUE_BYTES, DEFAULT_LISTEN,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_REDIS_URL,
};
pub use http::{PROTOCOL, TOKEN_PROTOCOL_PREFIX};
pub use hub::StatsSnapshot;

use client::{CLOSE_REPLY_TIMEOUT, CLOSE_TIMEOUT, ClientContext, Publish};
use hub::Hub;
use queue::QueueLimits;
use redis_side::Publisher;

/// A bound, not yet running bridge. Binding first lets callers (and tests using port 0) learn
/// the address before serving.
pub struct Bridge {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    hub: Arc<Hub>,
    redis: redis::Client,
    publisher: Publisher,
    publish_token: Option<Secret>,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("local_addr", &self.local_addr)
            .field("channel", &self.config.channel)
            .field("tls", &self.tls.is_some())
            .field("publishing", &self.publish_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Binds the listening socket and prepares the Redis publisher (which connects lazily, so Redis
/// need not be up yet). Fails, saying which setting is wrong, on an unusable address, a
/// malformed Redis URL or CA file, half a TLS configuration or unreadable certificate files,
/// or a publish token variable that is unset or holds an unusable token.
pub async fn bind(config: Config) -> anyhow::Result<Bridge> {
    let publish_token = config
        .resolve_publish_token()
        .context("--publish-token-env")?;
    let tls =
        service_kit::tls::optional_acceptor(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    let redis =
        service_kit::redis_client::client(&config.redis_url, config.redis_ca_file.as_deref())?;
    let publisher = Publisher::new(redis.clone(), &config.channel)
        .with_context(|| format!("preparing the publisher for channel {}", config.channel))?;
    let listener = service_kit::listener::bind_with_backlog(config.listen, config.listen_backlog)
        .with_context(|| format!("binding {}", config.listen))?;
    let local_addr = listener.local_addr().context("reading the bound address")?;
    let hub = Arc::new(Hub::new(QueueLimits {
        messages: config.client_queue,
        bytes: config.client_queue_bytes,
    }));
    Ok(Bridge {
        listener,
        local_addr,
        config,
        hub,
        redis,
        publisher,
        publish_token,
        tls,
    })
}

impl Bridge {
    /// The address the bridge listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for reading the bridge's counters while it runs (the same numbers `/healthz`
    /// serves).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            hub: Arc::clone(&self.hub),
        }
    }

    /// Serves WebSocket clients and `/healthz`, and runs the shared Redis subscription, until
    /// `shutdown` fires. Then it stops accepting, closes every client with 1001 "server shutting
    /// down", and waits (a few seconds at most) for connections and tasks to end.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Bridge {
            listener,
            local_addr,
            config,
            hub,
            redis,
            publisher,
            publish_token,
            tls,
        } = self;
        // Internal tasks follow a child of the caller's token, so a server error below can
        // stop them too without cancelling the caller.
        let local = shutdown.child_token();
        let closer = {
            let hub = Arc::clone(&hub);
            let signal = local.clone();
            tokio::spawn(async move {
                signal.cancelled().await;
                hub.close_all(&close::frame(close::SHUTTING_DOWN));
            })
        };
        let subscription = redis_side::spawn_subscription(
            redis,
            config.channel.clone(),
            Arc::clone(&hub),
            local.clone(),
        );
        let router = http::router(http::AppState {
            client: ClientContext {
                hub: Arc::clone(&hub),
                publisher,
                max_message_bytes: config.max_message_bytes,
                // Decided per connection, from what it presents.
                publish: Publish::ReadOnlyBridge,
            },
            allowed_origins: config.allowed_origins(),
            publish_token: publish_token.clone(),
        });
        if publish_token.is_none() {
            tracing::info!(
                "no --publish-token-env: the bridge is read-only, clients cannot publish"
            );
        }
        tracing::info!(
            %local_addr,
            channel = %config.channel,
            tls = tls.is_some(),
            publishing = publish_token.is_some(),
            "redis-ws-bridge listening"
        );

        let served = service_kit::http_server::serve_counted_tls(
            listener,
            router,
            config.serve_limits(),
            local.clone(),
            service_kit::http_server::ConnectionCount::default(),
            tls,
        )
        .await;

        local.cancel();
        let _ = closer.await;
        if tokio::time::timeout(
            CLOSE_TIMEOUT + CLOSE_REPLY_TIMEOUT + Duration::from_secs(1),
            hub.wait_empty(),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                clients = hub.client_count(),
                "some clients did not close in time"
            );
        }
        if let Err(error) = subscription.await {
            tracing::error!(%error, "fan-out task failed");
        }
        tracing::info!("redis-ws-bridge stopped");
        served.context("serving HTTP")
    }
}

/// Reads a running bridge's counters.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    hub: Arc<Hub>,
}

impl StatsHandle {
    /// The counters now, as `/healthz` would report them.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.hub.snapshot()
    }
}
