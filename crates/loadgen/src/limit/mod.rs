//! The `limit` server: the ceiling for WebSocket fan-out on this machine.
//!
//! It does what every fan-out server must do and nothing else, as cheaply as the machine
//! allows. A publisher's message (`/publish`, `TOPIC\nPAYLOAD` or a bare payload) is framed
//! once and handed to the fan-out thread, which writes it to each subscriber's socket itself:
//! one non-blocking (vectored) write per subscriber, no task woken, no copy. Only a socket
//! that does not take it all gets an outbox, flushed by its own task when the socket is
//! writable again, with later messages packed into `\n`-separated frames behind it. Messages
//! that arrive during a fan-out go out together, packed, one write per subscriber. Large
//! fan-outs are split between threads (`--fanout-threads`). An idle subscriber holds its
//! socket, a small task and no buffer.
//!
//! Where the time goes (perf, 10k subscribers, one message per frame): over 90% of the
//! server's CPU is the kernel's `writev` — TCP transmit, the loopback receive path run in the
//! writer's context and waking the reader (`sock_def_readable`) — and under 8% is this code.
//! io_uring would batch the system calls but not that work (syscall entry and file lookup are
//! under a tenth of it); the kernel allows `io_uring_setup` here, but submitting to a ring is
//! `unsafe` (the `io-uring` crate) and the workspace forbids unsafe code, so it is not used.
//!
//! Modules: [`frame`] (WebSocket framing), [`route`] (who gets what), [`outbox`] (direct
//! writes and what is kept when a socket is full), [`subscriber`], [`publisher`] (the two kinds
//! of connection) and [`fanout`] (the thread that writes).

pub mod fanout;
pub mod frame;
pub mod outbox;
pub mod publisher;
pub mod route;
pub mod subscriber;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use fanout::{Command, FanOut};
use outbox::Limits;
use subscriber::Subscriber;

/// Settings of the limit server.
#[derive(Debug, Clone, Args)]
pub struct LimitConfig {
    /// Address to listen on (WebSocket: `/` subscribes to everything, `/?topics=A,B` to some
    /// topics, `/publish` publishes).
    #[arg(long, env = "LIMIT_LISTEN", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,

    /// Largest frame built when packing messages for a subscriber that is behind, or several
    /// messages published during one fan-out (a larger message goes alone).
    #[arg(long, env = "LIMIT_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Messages queued at most for a subscriber whose socket is full; it skips the oldest
    /// beyond (counted, never silently lost).
    #[arg(long, env = "LIMIT_LOG_MESSAGES", default_value_t = 4096)]
    pub log_messages: usize,

    /// Bytes kept at most for a subscriber whose socket is full: beyond, it is closed
    /// (counted).
    #[arg(long, env = "LIMIT_PENDING_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub pending_bytes: usize,

    /// WebSocket read buffer of publisher connections, in bytes (subscribers have none: what
    /// they send is read a chunk at a time on the stack).
    #[arg(long, env = "LIMIT_READ_BUFFER_BYTES", default_value_t = 4 * 1024)]
    pub read_buffer_bytes: usize,

    /// Threads that write a fan-out to many subscribers, each a share (1: the fan-out thread
    /// alone).
    #[arg(long, env = "LIMIT_FANOUT_THREADS", default_value_t = 1)]
    pub fanout_threads: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            max_frame_bytes: 64 * 1024,
            log_messages: 4096,
            pending_bytes: 16 * 1024 * 1024,
            read_buffer_bytes: 4 * 1024,
            fanout_threads: 1,
        }
    }
}

impl LimitConfig {
    fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes.max(1),
            queued_messages: self.log_messages.max(1),
            pending_bytes: self.pending_bytes.max(1),
        }
    }
}

/// What the server counts, reported when it stops.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages skipped by subscribers with more than `--log-messages` queued.
    pub skipped: AtomicU64,
    /// Subscribers closed for keeping more than `--pending-bytes`.
    pub dropped: AtomicU64,
    /// Times a subscriber's socket did not take a delivery at once.
    pub fell_behind: AtomicU64,
}

/// Messages in flight from publishers to the fan-out thread at most (a publisher waits beyond).
const COMMAND_QUEUE: usize = 1024;

/// Time a client gets to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound limit server.
#[derive(Debug)]
pub struct LimitServer {
    listener: TcpListener,
    config: LimitConfig,
    counters: Arc<Counters>,
}

/// Binds the listening socket.
pub async fn bind(config: LimitConfig) -> anyhow::Result<LimitServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    Ok(LimitServer {
        listener,
        config,
        counters: Arc::default(),
    })
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    commands: mpsc::Sender<Command>,
    limits: Limits,
    read_buffer_bytes: usize,
}

impl LimitServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Its counters (subscribers that fell behind, skipped, closed), live: tests and
    /// benchmarks see whether the slow path was taken.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Accepts connections until shutdown, then waits for every connection to close.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let counters = self.counters.clone();
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let fan_out = FanOut::new(
            self.config.limits(),
            counters.clone(),
            self.config.fanout_threads,
        );
        let fan_out = std::thread::Builder::new()
            .name("limit-fanout".into())
            .spawn(move || fan_out.run(receiver))
            .context("starting the fan-out thread")?;
        let shared = Arc::new(Shared {
            commands,
            limits: self.config.limits(),
            read_buffer_bytes: self.config.read_buffer_bytes,
        });
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve(stream, shared.clone(), shutdown.clone()));
                    }
                    // Out of file descriptors, say: keep serving the connections we have.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = shutdown.cancelled() => break,
            }
        }
        while connections.join_next().await.is_some() {}
        // The last sender goes: the fan-out thread ends.
        drop(shared);
        tokio::task::spawn_blocking(move || fan_out.join())
            .await
            .context("joining the fan-out thread")?
            .map_err(|_| anyhow::anyhow!("the fan-out thread panicked"))?;
        let skipped = counters.skipped.load(Ordering::Relaxed);
        let dropped = counters.dropped.load(Ordering::Relaxed);
        let fell_behind = counters.fell_behind.load(Ordering::Relaxed);
        if skipped > 0 || dropped > 0 {
            tracing::warn!(
                skipped,
                dropped,
                "subscribers that fell too far behind skipped messages or were closed"
            );
        }
        tracing::info!(fell_behind, "limit-server stopped");
        Ok(())
    }
}

fn websocket_config(read_buffer_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes.max(256))
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024))
}

/// Handshakes, then serves the connection as a publisher (`/publish`) or a subscriber.
async fn serve(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut target = (String::new(), None::<String>);
    // The signature is tungstenite's callback type; its error variant is large by design.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        target = (
            request.uri().path().to_owned(),
            request.uri().query().map(str::to_owned),
        );
        Ok(response)
    };
    // Boxed, like the publisher's loop below: the task's future is as large as its largest
    // state, and a subscriber's task lives on long after its handshake.
    let handshake = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(websocket_config(shared.read_buffer_bytes)),
    ));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (path, query) = target;
    if path == "/publish" {
        Box::pin(publisher::serve(ws, &shared.commands, &shutdown)).await;
        return;
    }
    // The client waits for the handshake's answer before it sends a frame, so tungstenite has
    // read nothing past the request: the raw socket is all there is.
    let stream = ws.into_inner();
    let subscriber = Arc::new(Subscriber::new(stream, route::interest(query.as_deref())));
    if shared
        .commands
        .send(Command::Add(subscriber.clone()))
        .await
        .is_err()
    {
        return;
    }
    subscriber.serve(&shared.limits, &shutdown).await;
    let _ = shared.commands.send(Command::Remove(subscriber)).await;
}
