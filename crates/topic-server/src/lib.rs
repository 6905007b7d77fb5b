//! `topic-server`: the platform's real-time topic server.
//!
//! One port serves WebSocket sessions speaking the versioned JSON protocol of
//! `diffusion_core::protocol` (written down in docs/protocol.md), the dashboard's static files,
//! `/healthz` and Prometheus `/metrics`. Topics are stateful: each keeps its current value, and
//! sessions subscribe with retained topic selectors.
//!
//! The speed-critical path is fan-out: an update is encoded once — its `value` message and, for
//! JSON, STRING and BINARY topics, a fossil `delta` message from the previous value — and the
//! same bytes are queued for every subscriber; each session's queue sends the delta when the
//! session holds the previous value and the full value otherwise. A writer task per connection
//! drains its queue in batches, packing many messages into few frames and flushing once. Queues
//! are bounded in bytes: a client that falls behind has its queued updates conflated per topic
//! (by the topic's `CONFLATION` property), and is closed ("message queue limit reached") only
//! when conflation cannot bring its queue under the limit.
//!
//! This project is independent of, and not affiliated with, the commercial Diffusion product
//! whose documented behaviour it reproduces.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tokio_util::sync::CancellationToken;
//! let config = topic_server::Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     ..topic_server::Config::default()
//! };
//! let server = topic_server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! let shutdown = CancellationToken::new();
//! server.run(shutdown.clone()).await
//! # }
//! ```

/// Drives the engine without sockets for the benchmarks: only with the `bench` feature.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench_support;
mod cluster;
mod config;
mod direct;
mod engine;
mod http;
mod liveness;
mod metrics;
mod outbound;
mod resumable;
mod security;
mod session;
mod stats;
mod subscriptions;
mod topics;
mod upgrade;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use service_kit::http_server::{self, ConnectionCount};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

pub use config::{
    Config, DEFAULT_LISTEN, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_QUEUE_LIMIT_BYTES,
};

pub use stats::{QueueStats, ServerStats};

use engine::{Engine, EngineLimits};
use metrics::Metrics;

/// How long `run` waits for sessions to finish closing after shutdown begins.
const SESSION_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// State shared by every connection of one server.
pub(crate) struct ServerContext {
    config: Config,
    engine: Arc<Engine>,
    metrics: Metrics,
    next_session: AtomicU64,
    /// Heartbeats and silence checks for every connection.
    liveness: Arc<liveness::Liveness>,
    /// Version-2 sessions, by token, for resuming.
    sessions: resumable::SessionRegistry,
    /// Distinguishes this server's session names from an earlier run's, in logs.
    instance: u32,
    /// The security store and authentication.
    security: Arc<security::Security>,
    /// Browser origins allowed to open sessions besides the server's own pages (`None`: any).
    allowed_origins: Option<service_kit::origins::AllowedOrigins>,
    /// This node's cluster, in cluster mode: changes to the tree go through it.
    cluster: Option<Arc<cluster::Cluster>>,
}

impl ServerContext {
    fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn session_name(&self, id: u64) -> String {
        format!("{:08x}-{id:x}", self.instance)
    }
}

/// A bound, not yet running topic server. Binding first lets callers (and tests using port 0)
/// learn the address before serving.
pub struct TopicServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<ServerContext>,
    connections: ConnectionCount,
}

/// Binds the listening socket and prepares the topic tree: empty, or in cluster mode the
/// shared tree loaded from Redis (waiting for Redis as long as it takes).
pub async fn bind(config: Config) -> anyhow::Result<TopicServer> {
    bind_until(config, &CancellationToken::new()).await
}

/// [`bind`], giving up on waiting for a cluster's Redis when `shutdown` fires.
async fn bind_until(config: Config, shutdown: &CancellationToken) -> anyhow::Result<TopicServer> {
    let listener = service_kit::listener::bind_with_backlog(config.listen, config.listen_backlog)
        .with_context(|| format!("binding {}", config.listen))?;
    if let Some(cap) = service_kit::listener::kernel_backlog_cap()
        && cap < config.listen_backlog
    {
        tracing::warn!(
            requested = config.listen_backlog,
            cap,
            "the kernel caps the listen backlog (net.core.somaxconn) below --listen-backlog"
        );
    }
    let local_addr = listener.local_addr().context("reading the bound address")?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics address {}", config.metrics_listen))?;
    let metrics_addr = metrics_listener
        .local_addr()
        .context("reading the bound metrics address")?;
    let tls =
        service_kit::tls::optional_acceptor(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    let security = Arc::new(security::Security::load(config.security.as_deref())?);
    match (security.file(), config.insecure_open) {
        (Some(file), _) => {
            tracing::info!(file = %file.display(), "security store loaded");
        }
        (None, false) => tracing::warn!(
            "no security file (--security): every session may do everything, so only clients on loopback are accepted; --insecure-open accepts everyone"
        ),
        (None, true) => tracing::warn!(
            "no security file and --insecure-open: anyone who can reach this port may do everything"
        ),
    }
    let allowed_origins = match config.allowed_origins.iter().any(|o| o.trim() == "*") {
        true => None,
        false => Some(service_kit::origins::AllowedOrigins::only(
            &config.allowed_origins,
        )),
    };
    if !config.web_dir.is_dir() {
        tracing::warn!(
            web_dir = %config.web_dir.display(),
            "dashboard directory not found; static files will answer 404"
        );
    }
    let metrics = Metrics::new();
    let instance = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    let authority = Arc::clone(&security);
    let engine = Engine::with_grants(
        metrics.clone(),
        EngineLimits::from_config(&config),
        Box::new(move |identity| authority.grant(identity)),
    );
    let cluster = match config.cluster_config() {
        Some(cluster_config) => Some(
            cluster::Cluster::join(
                &cluster_config,
                Arc::clone(&engine),
                metrics.clone(),
                shutdown,
            )
            .await?,
        ),
        None => None,
    };
    if let Some(file) = &config.views {
        load_views(&engine, cluster.as_ref(), file).await?;
    }
    let ctx = Arc::new(ServerContext {
        cluster,
        engine,
        metrics,
        next_session: AtomicU64::new(0),
        sessions: resumable::SessionRegistry::default(),
        liveness: Arc::new(liveness::Liveness::new(
            config.heartbeat_interval,
            config.heartbeat_timeout,
        )),
        instance,
        security,
        allowed_origins,
        config,
    });
    Ok(TopicServer {
        listener,
        local_addr,
        metrics_listener,
        metrics_addr,
        tls,
        ctx,
        connections: ConnectionCount::default(),
    })
}

/// Creates the views of a `--views` file, in file order; any error stops the start-up. In
/// a cluster they go into the shared store (a view already there with the same specification
/// stays as it is).
async fn load_views(
    engine: &Engine,
    cluster: Option<&Arc<cluster::Cluster>>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let name = file.display().to_string();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading views file {name}"))?;
    let views = diffusion_core::view::parse_views_file(&name, &text)?;
    let count = views.len();
    for (view, spec) in views {
        let created = match cluster {
            Some(cluster) => {
                let proposal = engine::Proposal::CreateView {
                    name: view.clone(),
                    spec: spec.as_str().to_owned(),
                    creator: None,
                };
                cluster.submit(&proposal).await
            }
            None => engine.install_view(engine::Caller::Server, &view, Arc::new(spec)),
        };
        created.map_err(|e| anyhow::anyhow!("{name}: view '{view}': {}", e.message))?;
    }
    tracing::info!(file = %name, count, "views loaded");
    Ok(())
}

/// Binds and runs a server until `shutdown` fires: what `main` calls.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let server = bind_until(config, &shutdown).await?;
    tracing::info!(
        addr = %server.local_addr(),
        metrics = %server.metrics_addr(),
        node = server.ctx.cluster.as_ref().map(|c| c.node_id()),
        "topic server listening"
    );
    server.run(shutdown).await
}

impl TopicServer {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the `/metrics` listener.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// A handle onto the server's queue statistics, usable while it runs and after.
    pub fn stats(&self) -> ServerStats {
        ServerStats::new(Arc::clone(&self.ctx), self.connections.clone())
    }

    /// Serves until `shutdown` fires: then stops accepting, closes every session (close code
    /// 1001) and waits for them to finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (sessions_done, mut all_sessions_done) = mpsc::channel::<()>(1);
        let state = http::AppState {
            static_files: ServeDir::new(&self.ctx.config.web_dir),
            ctx: Arc::clone(&self.ctx),
            shutdown: shutdown.clone(),
            sessions_done,
        };
        let app = http::router(state);
        tokio::spawn(Arc::clone(&self.ctx.liveness).run(shutdown.clone()));
        tokio::spawn(metrics::run_upkeep(shutdown.clone()));
        tokio::spawn(reload_on_hangup(Arc::clone(&self.ctx), shutdown.clone()));
        let metrics = tokio::spawn(http_server::serve(
            self.metrics_listener,
            http::metrics_router(Arc::clone(&self.ctx)),
            http_server::ServeLimits::default(),
            shutdown.clone(),
        ));
        http_server::serve_counted_tls(
            self.listener,
            app,
            self.ctx.config.serve_limits(),
            shutdown,
            self.connections.clone(),
            self.tls,
        )
        .await
        .context("serving HTTP")?;
        if let Ok(Err(error)) = metrics.await {
            tracing::warn!(%error, "the metrics listener failed");
        }
        // Every session holds a sender; `recv` returns `None` once the last one is gone.
        if tokio::time::timeout(SESSION_DRAIN_TIMEOUT, all_sessions_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("sessions still open after the shutdown timeout");
        }
        tracing::info!("topic server stopped");
        Ok(())
    }
}

/// Reloads the security file on every SIGHUP until shutdown: a bad file is refused (logged)
/// and the store in force stays; after a good one every session and view is re-checked.
async fn reload_on_hangup(ctx: Arc<ServerContext>, shutdown: CancellationToken) {
    let Some(file) = ctx.security.file().map(|f| f.display().to_string()) else {
        return;
    };
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: the security file will not be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        reload_security(&ctx, &file).await;
    }
}

/// One reload: the file is read and checked on the blocking pool, sessions re-checked after.
async fn reload_security(ctx: &Arc<ServerContext>, file: &str) {
    let reloading = Arc::clone(ctx);
    let outcome = tokio::task::spawn_blocking(move || {
        reloading.security.reload()?;
        Ok::<_, anyhow::Error>(reloading.engine.reauthorise())
    })
    .await;
    match outcome {
        Ok(Ok((ended, added))) => {
            ctx.metrics.security_reloaded("ok");
            tracing::info!(
                file,
                ended,
                added,
                "security store reloaded; sessions re-checked"
            );
        }
        Ok(Err(error)) => {
            ctx.metrics.security_reloaded("refused");
            tracing::error!(
                file,
                error = format!("{error:#}"),
                "security file refused on reload; the previous store stays in force"
            );
        }
        Err(error) => {
            ctx.metrics.security_reloaded("refused");
            tracing::error!(file, %error, "security reload failed; the previous store stays in force");
        }
    }
}

#[cfg(test)]
mod demo_views {
    /// The demo's views file must always load.
    #[test]
    fn deploy_views_file_parses() {
        let text = include_str!("../../../deploy/views.txt");
        let views = diffusion_core::view::parse_views_file("deploy/views.txt", text).unwrap();
        let names: Vec<&str> = views.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["currencies", "usd"]);
    }

    /// The demo's security file must always load.
    #[test]
    fn deploy_security_file_parses() {
        let text = include_str!("../../../deploy/security.toml");
        let store =
            diffusion_core::security::SecurityStore::parse("deploy/security.toml", text).unwrap();
        assert!(
            store.anonymous_roles().is_some(),
            "the dashboard is anonymous"
        );
        assert!(store.principal("backend").is_some());
    }
}

#[cfg(test)]
mod panic_containment {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_util::sync::CancellationToken;

    type Stream = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// A raw client; frames may pack several messages.
    struct Socket {
        ws: Stream,
        pending: std::collections::VecDeque<Value>,
    }

    async fn connect(url: &str) -> Socket {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut socket = Socket {
            ws,
            pending: Default::default(),
        };
        send(&mut socket, json!({"type":"connect","version":1})).await;
        assert_eq!(next(&mut socket).await.unwrap()["type"], "connected");
        socket
    }

    async fn send(socket: &mut Socket, value: Value) {
        socket
            .ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    /// The next message, or `Err` when the server closed (with its close code).
    async fn next(socket: &mut Socket) -> Result<Value, Option<u16>> {
        loop {
            if let Some(message) = socket.pending.pop_front() {
                return Ok(message);
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), socket.ws.next())
                .await
                .expect("server answered in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    for line in text.as_str().split('\n').filter(|l| !l.is_empty()) {
                        socket
                            .pending
                            .push_back(serde_json::from_str(line).unwrap());
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code.into())),
                Some(Ok(_)) => {}
                _ => return Err(None),
            }
        }
    }

    /// A request that panics inside the engine (under its lock) closes only its own session,
    /// with INTERNAL (no details) and 1011; the socket is released and the engine keeps
    /// serving everyone else.
    #[tokio::test]
    async fn a_panicking_request_closes_only_its_session() {
        let server = crate::bind(crate::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..crate::Config::default()
        })
        .await
        .unwrap();
        let url = format!("ws://{}/ws", server.local_addr());
        let stats = server.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));

        let mut watcher = connect(&url).await;
        send(
            &mut watcher,
            json!({"type":"add","cid":1,"path":"x","topicType":"INT64","value":1}),
        )
        .await;
        assert_eq!(next(&mut watcher).await.unwrap()["type"], "ok");
        send(
            &mut watcher,
            json!({"type":"subscribe","cid":2,"selector":"x"}),
        )
        .await;
        for _ in 0..3 {
            next(&mut watcher).await.unwrap();
        }

        let mut culprit = connect(&url).await;
        send(
            &mut culprit,
            json!({"type":"add","cid":1,"path":super::engine::PANIC_PATH,"topicType":"INT64"}),
        )
        .await;
        assert_eq!(next(&mut culprit).await.unwrap()["type"], "ok");
        let before = stats.open_connections();
        send(
            &mut culprit,
            json!({"type":"set","cid":2,"path":super::engine::PANIC_PATH,"value":2}),
        )
        .await;
        let error = next(&mut culprit).await.unwrap();
        assert_eq!(error["code"], "INTERNAL");
        assert_eq!(error["message"], "internal error", "no details leak");
        assert_eq!(next(&mut culprit).await, Err(Some(1011)));
        drop(culprit);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stats.open_connections() >= before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the culprit's socket stayed open"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The engine survived its poisoned lock: the watcher still gets updates.
        send(
            &mut watcher,
            json!({"type":"set","cid":3,"path":"x","value":7}),
        )
        .await;
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(next(&mut watcher).await.unwrap());
        }
        assert!(got.iter().any(|m| m["v"] == 7), "{got:?}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
