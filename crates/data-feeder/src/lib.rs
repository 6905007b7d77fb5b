//! `data-feeder`: the first tier of the platform. It polls a JSON API — or a built-in synthetic
//! source shaped like the CoinDesk Bitcoin Price Index the tutorial used — and publishes every
//! body, unchanged, to the redis-ws-bridge (WebSocket) or straight to a Redis channel.
//!
//! A failed poll or publish is logged and retried with back-off; polling never stops for good.
//! A small HTTP control API (`/status`, `/start`, `/stop`, `/interval`, `/healthz`) lets the
//! dashboard watch and steer it; it listens on loopback by default, answers only the browser
//! origins of `--allowed-origins`, and needs a bearer token when `--control-token-env` is set.
//! Publishing through the bridge needs its publish token (`--publish-token-env`), which the
//! feeder presents as `Authorization: Bearer TOKEN`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let server = data_feeder::bind(data_feeder::Config::default()).await?;
//! println!("control API on {}", server.control_addr());
//! server.run(shutdown.clone()).await
//! # }
//! ```

pub mod config;
mod control;
mod poller;
mod sink;
pub mod source;
mod state;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use service_kit::origins::AllowedOrigins;
use service_kit::secret::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, SinkSpec, SourceSpec};
pub use sink::SinkError;
pub use source::SourceError;

/// Installs rustls' `ring` crypto provider as the process default, which reqwest needs for
/// https:// sources (the workspace avoids the C-based default provider). Idempotent: a provider
/// installed earlier, by us or anyone else, is kept.
pub fn install_crypto_provider() {
    service_kit::tls::install_default_provider();
}

/// A bound feeder: the control API's socket is open, the source and sink are prepared; nothing
/// polls or connects until [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    control_addr: SocketAddr,
    source: source::Source,
    sink: sink::Prepared,
    shared: Arc<state::Shared>,
    access: control::Access,
}

/// Validates `config`, prepares source and sink, and binds the control API's listener.
pub async fn bind(config: Config) -> anyhow::Result<Server> {
    install_crypto_provider();
    let source = source::Source::new(
        &config.source,
        config.http_timeout,
        config.seed,
        config.synthetic_change_probability,
    )
    .context("preparing the source")?;
    let publish_token = Secret::resolve(
        config.publish_token.as_ref(),
        config.publish_token_env.as_deref(),
    )
    .context("--publish-token-env")?;
    let control_token = Secret::resolve(
        config.control_token.as_ref(),
        config.control_token_env.as_deref(),
    )
    .context("--control-token-env")?;
    if matches!(config.sink, SinkSpec::WebSocket(_)) && publish_token.is_none() {
        tracing::warn!(
            "no --publish-token-env: the redis-ws-bridge will refuse to publish this feeder's payloads"
        );
    }
    let sink = sink::prepare(
        &config.sink,
        &config.channel,
        sink::SinkAccess {
            token: publish_token,
            ca_file: config.ca_file.as_deref(),
        },
    )
    .context("preparing the sink")?;
    let listener = TcpListener::bind(config.control_listen)
        .await
        .with_context(|| format!("binding the control API on {}", config.control_listen))?;
    let control_addr = listener.local_addr()?;
    if !control_addr.ip().is_loopback() && control_token.is_none() {
        tracing::warn!(
            %control_addr,
            "the control API is reachable beyond this machine without a bearer token \
             (--control-token-env): anyone who reaches it can pause the feed"
        );
    }
    let access = control::Access {
        origins: AllowedOrigins::only(&config.allowed_origins),
        token: control_token,
    };
    let shared = Arc::new(state::Shared::new(
        config.source.to_string(),
        config.sink.to_string(),
        !config.start_paused,
        config.interval,
    ));
    Ok(Server {
        listener,
        control_addr,
        source,
        sink,
        shared,
        access,
    })
}

impl Server {
    /// The control API's address (with the real port when bound to port 0).
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The same as [`Server::control_addr`]: the one socket this tier listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Polls, publishes and serves the control API until `shutdown` fires, then waits for
    /// every task. Returns an error only if the control API's server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            control_addr,
            source,
            sink,
            shared,
            access,
        } = self;
        // A child of the caller's token, so a failing control server can stop the other tasks
        // too without cancelling the caller.
        let internal = shutdown.child_token();

        tracing::info!(
            source = %shared.source_label,
            sink = %shared.sink_label,
            control = %control_addr,
            "data feeder running"
        );
        let delivery = tokio::spawn(sink.task.run(shared.clone(), internal.clone()));
        let polling = tokio::spawn(poller::run(
            source,
            sink.handle,
            shared.clone(),
            internal.clone(),
        ));
        let served = service_kit::http_server::serve(
            listener,
            control::router(shared, access),
            control::SERVE_LIMITS,
            internal.clone(),
        )
        .await;

        internal.cancel();
        let (polled, delivered) = tokio::join!(polling, delivery);
        polled.context("poller task")?;
        delivered.context("sink task")?;
        served.context("control API server")?;
        tracing::info!("data feeder stopped");
        Ok(())
    }
}
