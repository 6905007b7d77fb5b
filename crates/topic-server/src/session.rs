//! One client connection: the handshake, the reader loop that dispatches requests, and the
//! orderly close.
//!
//! Every reply goes through the session's outbound queue, behind any topic messages already
//! queued, so a client sees notices and replies in the order the server produced them.
//!
//! The reader is the session's defence against a hostile or broken client: `connect` must come
//! within the handshake timeout; requests beyond the per-session rate are refused
//! (`RATE_LIMITED`) and reading pauses until the rate allows again, so a flood costs the
//! server no more than the rate; a text frame that is not UTF-8 closes the session with 1007;
//! and a request that panics inside the server is answered with `INTERNAL` and closes only
//! this session (1011), leaving the engine usable for everyone else.
//!
//! Liveness: after the handshake the connection is watched by [`crate::liveness`], which sends a
//! heartbeat every interval (`heartbeat` to a version-2 client, a WebSocket ping to a version-1
//! one) and closes a connection heard nothing from for the interval plus the timeout (4001). A version-2 session survives
//! losing its connection (see [`crate::resumable`]); a `connect` with `resume` takes it over,
//! and this connection's writer then moves to it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use diffusion_core::protocol::{
    ClientMessage, DecodeError, ErrorCode, PROTOCOL_VERSION, PROTOCOL_VERSION_1, Resume,
    SUPPORTED_VERSIONS, ServerMessage, SessionLimits, decode_client_message, encode_fetched,
    encode_server_message, negotiate_version,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use futures_util::stream::SplitSink;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ServerContext;
use crate::direct::DirectSocket;
use crate::engine::{Caller, OpError, Proposal};
use crate::metrics::Metrics;
use crate::outbound::{CloseReason, RecoveryRefusal, ReleaseDirect, SessionOutbound, run_writer};
use crate::resumable::{self, ResumableSession};
use crate::security::{AuthError, Identity, Presented};
use crate::subscriptions::SessionId;
use crate::upgrade::WebSocket;

/// How long a closing session may take to get its last bytes and close frame out (a client
/// that has stopped reading may never take them).
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the client's answer to our close frame (reading it also keeps unread
/// client data from turning our close into a TCP reset that could hide the close frame).
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);
/// The same wait while the whole server is shutting down, where time matters more.
const SHUTDOWN_CLOSE_REPLY_WAIT: Duration = Duration::from_millis(250);

/// Where the session is in its life.
enum Phase {
    /// Waiting for `connect`.
    Handshake,
    /// Connected as this identity.
    Connected { identity: Arc<Identity> },
}

/// Whether the reader loop goes on.
enum Flow {
    Continue,
    Close,
    /// `connect` resumed another session: hand the socket's writer over to it.
    Resume(ResumableSession, u64),
    /// `connect` (its version agreed) waits for its credentials to be checked.
    Authenticate(Box<PendingConnect>),
    /// A checked change waits for the cluster to accept and apply it; then request `cid` is
    /// answered. The session reads nothing meanwhile, so its requests stay in order.
    Propose(u64, Box<Proposal>),
}

/// A `connect` whose version is agreed, waiting for authentication.
struct PendingConnect {
    version: u32,
    resume: Option<Resume>,
    presented: Presented,
}

/// A successful request's answer.
enum Reply {
    /// `ok` with the request's cid.
    Ok,
    /// A reply message.
    Message(ServerMessage),
    /// A reply already encoded (a fetch page).
    Encoded(Bytes),
}

struct Session {
    /// This connection's own id (the liveness watch's key); `id` is the session's, which a
    /// resume replaces.
    connection: u64,
    id: SessionId,
    name: String,
    phase: Phase,
    /// The negotiated protocol version (1 until the handshake).
    version: u32,
    /// A version-2 session's token.
    token: Option<u128>,
    outbound: Arc<SessionOutbound>,
    /// Which connection of the session this is (bumped by every resume).
    generation: u64,
    ctx: Arc<ServerContext>,
    /// The client's address (failed authentications are counted per address).
    peer: IpAddr,
    /// Requests per second this session may make (0: unlimited), and its limiter.
    per_second: u32,
    limiter: Option<DefaultDirectRateLimiter>,
    /// When the session's token expires, for a session authenticated by one.
    expires_at: Option<Instant>,
    /// In cluster mode: the session's `set`s queued for Redis and not yet answered, in order.
    in_flight: FuturesOrdered<ProposalFuture>,
}

/// A `set` on its way through the cluster: its cid and outcome.
type ProposalFuture = futures_util::future::BoxFuture<'static, (u64, Result<(), OpError>)>;

/// How many `set`s one session may have on their way through the cluster at once.
const MAX_SETS_IN_FLIGHT: usize = 64;

/// Counts the session in the connections gauge for exactly as long as it lives, however it
/// ends.
struct Counted(Metrics);

impl Counted {
    fn new(metrics: Metrics) -> Self {
        metrics.connections.increment(1.0);
        Self(metrics)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.decrement(1.0);
    }
}

impl Session {
    fn send_bytes(&self, bytes: Bytes) {
        // A reply that does not fit closes the session; one that made the queue drop
        // subscriptions (CONFLATION=unsubscribe) has those ended by the engine.
        let result = self.outbound.push_control(bytes);
        if matches!(self.phase, Phase::Connected { .. }) {
            self.ctx.engine.settle_push(self.id, result);
        }
    }

    fn send(&self, message: &ServerMessage) {
        self.send_bytes(encode_server_message(message));
    }

    fn send_error(&self, cid: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.send(&ServerMessage::Error {
            cid,
            code,
            message: message.into(),
        });
    }

    fn handle_frame(&mut self, frame: Incoming) -> Flow {
        let frame = match frame {
            Incoming::Request(Ok(message)) => return self.handle_message(message),
            Incoming::Request(Err((cid, error))) => {
                self.send_error(cid, error.code(self.version), error.to_string());
                return Flow::Continue;
            }
            Incoming::Frame(frame) => frame,
        };
        match frame {
            // A text frame within the limit was decoded into a request above.
            Message::Text(text) => self.too_large(Some(text.len())),
            Message::Binary(data) => {
                if data.len() > self.ctx.config.max_message_bytes {
                    return self.too_large(Some(data.len()));
                }
                let code = if self.version >= PROTOCOL_VERSION {
                    ErrorCode::BinaryFrame
                } else {
                    ErrorCode::MalformedMessage
                };
                self.send_error(
                    None,
                    code,
                    "binary frames are not part of the protocol; send JSON in text frames",
                );
                Flow::Continue
            }
            Message::Close(frame) => {
                // Code 1000 (or none) ends the session; any other close means the client
                // intends to come back and resume it.
                let reason = match frame {
                    Some(CloseFrame { code, .. }) if code != CloseCode::Normal => {
                        CloseReason::ClientDropped
                    }
                    _ => CloseReason::ClientClosed,
                };
                self.outbound.close(reason);
                Flow::Close
            }
            // The WebSocket layer answers pings itself; raw frames are never read.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
        }
    }

    fn too_large(&self, len: Option<usize>) -> Flow {
        let limit = self.ctx.config.max_message_bytes;
        let message = match len {
            Some(len) => {
                format!("message of {len} bytes is larger than the limit of {limit} bytes")
            }
            None => format!("message is larger than the limit of {limit} bytes"),
        };
        self.send_error(None, ErrorCode::MessageTooLarge, message);
        self.outbound.close(CloseReason::MessageTooLarge);
        Flow::Close
    }

    /// Answers a request that came faster than the session's rate, without carrying it out.
    fn refuse_rate(&self, frame: &Message) {
        self.ctx.metrics.rate_limited.increment(1);
        let Message::Text(text) = frame else {
            return;
        };
        let cid = decode_client_message(text.as_str())
            .ok()
            .and_then(|m| m.cid());
        self.send_error(
            cid,
            ErrorCode::RateLimited,
            format!(
                "more than {} requests per second: this request was not carried out",
                self.per_second
            ),
        );
    }

    fn handle_message(&mut self, message: ClientMessage) -> Flow {
        match (&self.phase, message) {
            (
                Phase::Handshake,
                ClientMessage::Connect {
                    version,
                    versions,
                    principal,
                    credentials,
                    token,
                    resume,
                },
            ) => {
                let offered = versions.unwrap_or_else(|| version.into_iter().collect());
                let presented = Presented {
                    principal,
                    password: credentials,
                    token,
                };
                self.negotiate(&offered, presented, resume)
            }
            (Phase::Handshake, other) => {
                self.send_error(
                    other.cid(),
                    ErrorCode::HandshakeRequired,
                    "send 'connect' before any other message",
                );
                Flow::Continue
            }
            (Phase::Connected { .. }, ClientMessage::Connect { .. }) => {
                self.send_error(
                    None,
                    ErrorCode::HandshakeRequired,
                    "this session is already connected",
                );
                Flow::Continue
            }
            (Phase::Connected { .. }, ClientMessage::Ack { s }) => {
                self.ack(s);
                Flow::Continue
            }
            (Phase::Connected { .. }, request) => self.handle_request(request),
        }
    }

    /// Agrees the protocol version of a `connect`; its credentials are checked next.
    fn negotiate(&mut self, offered: &[u32], presented: Presented, resume: Option<Resume>) -> Flow {
        let Some(version) = negotiate_version(None, Some(offered), SUPPORTED_VERSIONS) else {
            self.send_error(
                None,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol versions offered {offered:?}: none is supported; this server speaks versions {SUPPORTED_VERSIONS:?}"
                ),
            );
            self.outbound.close(CloseReason::UnsupportedVersion);
            return Flow::Close;
        };
        Flow::Authenticate(Box::new(PendingConnect {
            version,
            resume,
            presented,
        }))
    }

    /// Completes a `connect` once its credentials are checked: refuses it (4003), resumes the
    /// session it names, or starts a new session.
    fn connect(
        &mut self,
        version: u32,
        resume: Option<Resume>,
        auth: Result<Identity, AuthError>,
    ) -> Flow {
        let identity = match auth {
            Ok(identity) => Arc::new(identity),
            Err(error) => {
                let code = match error {
                    AuthError::Refused(_) => ErrorCode::AuthenticationFailed,
                    AuthError::RateLimited(_) => ErrorCode::RateLimited,
                };
                self.ctx.metrics.authentication_failed(code);
                tracing::info!(peer = %self.peer, %error, "authentication refused");
                self.send_error(None, code, error.to_string());
                self.outbound.close(CloseReason::AuthenticationFailed);
                return Flow::Close;
            }
        };
        tracing::debug!(principal = identity.name(), version, "session connected");
        let mut refusal = None;
        if version >= PROTOCOL_VERSION
            && let Some(resume) = resume
        {
            match self.take_over(&resume, &identity) {
                Ok(flow) => {
                    self.ctx.metrics.session_resumed("recovered");
                    return flow;
                }
                Err(why) => {
                    self.ctx.metrics.session_resumed(why.label());
                    refusal = Some(why);
                }
            }
        }
        self.version = version;
        let limits = match self.ctx.engine.register_session(
            self.id,
            Arc::clone(&self.outbound),
            Arc::clone(&identity),
        ) {
            Ok(limits) => limits,
            Err(error) => {
                self.send_error(None, error.code, error.message);
                self.outbound.close(CloseReason::SessionLimit);
                return Flow::Close;
            }
        };
        self.become_connected(&identity, limits.requests_per_second);
        if version < PROTOCOL_VERSION {
            self.send(&ServerMessage::Connected {
                version,
                session: self.name.clone(),
                token: None,
                recovered: None,
                reason: None,
                limits: None,
            });
            self.ctx
                .liveness
                .watch(self.connection, Arc::clone(&self.outbound), false);
            return Flow::Continue;
        }
        let token = resumable::new_token();
        let connected = self.connected_v2(&self.name, token, refusal.map(Err));
        self.ctx.sessions.insert(ResumableSession {
            token,
            id: self.id,
            outbound: Arc::clone(&self.outbound),
            identity,
        });
        self.token = Some(token);
        self.outbound
            .start_numbering(connected, self.ctx.config.queue_limit_bytes);
        self.ctx
            .liveness
            .watch(self.connection, Arc::clone(&self.outbound), true);
        Flow::Continue
    }

    /// The version-2 `connected` for a session; `recovery` is the outcome of a resume, when
    /// one was asked for.
    fn connected_v2(
        &self,
        name: &str,
        token: u128,
        recovery: Option<Result<(), RecoveryRefusal>>,
    ) -> Bytes {
        let config = &self.ctx.config;
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        encode_server_message(&ServerMessage::Connected {
            version: PROTOCOL_VERSION,
            session: name.to_owned(),
            token: Some(resumable::token_text(token)),
            recovered: recovery.map(|r| r.is_ok()),
            reason: recovery.and_then(Result::err).map(|r| r.label().to_owned()),
            limits: Some(SessionLimits {
                max_message_bytes: config.max_message_bytes as u64,
                queue_limit_bytes: config.queue_limit_bytes as u64,
                heartbeat_interval_ms: millis(config.heartbeat_interval),
                heartbeat_timeout_ms: millis(config.heartbeat_timeout),
                reconnect_window_ms: millis(config.reconnect_window),
            }),
        })
    }

    /// Connected as `identity`: the phase, the request rate its roles allow, and when its
    /// token expires.
    fn become_connected(&mut self, identity: &Arc<Identity>, per_second: Option<u32>) {
        let per_second = per_second.unwrap_or(self.ctx.config.max_requests_per_second);
        if per_second != self.per_second {
            self.per_second = per_second;
            self.limiter = rate_limiter(per_second);
        }
        self.expires_at = identity.expires_at.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        });
        self.phase = Phase::Connected {
            identity: Arc::clone(identity),
        };
    }

    /// Takes over the session `resume` names, if it can still be resumed from there: only by
    /// the principal it belongs to. The session takes the identity this connection
    /// authenticated with (a fresh token's roles and expiry), and is re-checked under it.
    fn take_over(
        &self,
        resume: &Resume,
        identity: &Arc<Identity>,
    ) -> Result<Flow, RecoveryRefusal> {
        let mut session = self
            .ctx
            .sessions
            .get(&resume.token)
            .filter(|s| s.identity.principal == identity.principal)
            .ok_or(RecoveryRefusal::UnknownSession)?;
        let name = self.ctx.session_name(session.id);
        let connected = self.connected_v2(&name, session.token, Some(Ok(())));
        let generation = session.outbound.take_over(resume.s, connected)?;
        if session.identity != *identity {
            session.identity = Arc::clone(identity);
            self.ctx.engine.reidentify(session.id, Arc::clone(identity));
            self.ctx.sessions.insert(session.clone());
        }
        tracing::debug!(session = %name, from = resume.s, "session resumed");
        Ok(Flow::Resume(session, generation))
    }

    fn ack(&self, acked: u64) {
        if self.version < PROTOCOL_VERSION {
            self.send_error(
                None,
                ErrorCode::UnknownOperation,
                "'ack' is part of protocol version 2; this session speaks version 1",
            );
            return;
        }
        if let Err(error) = self.outbound.ack(acked) {
            self.send_error(None, ErrorCode::InvalidField, error.to_string());
        }
    }

    /// In cluster mode a change to the shared tree is checked here and proposed to the
    /// cluster (answered once it is applied); everything else, and every request of a
    /// server on its own, is answered at once.
    fn handle_request(&self, request: ClientMessage) -> Flow {
        if self.ctx.cluster.is_some() && request.changes_tree() {
            let cid = request.cid().unwrap_or_default();
            match self.ctx.engine.propose(Caller::Session(self.id), &request) {
                Ok(Some(proposal)) => return Flow::Propose(cid, Box::new(proposal)),
                Ok(None) => self.send(&ServerMessage::Ok { cid }),
                Err(error) => self.send_error(Some(cid), error.code, error.message),
            }
            return Flow::Continue;
        }
        self.answer(request);
        Flow::Continue
    }

    /// Waits for every `set` on its way through the cluster and answers them, in order.
    async fn drain_in_flight(&mut self) {
        while let Some((cid, result)) = self.in_flight.next().await {
            self.answer_proposal(cid, result);
        }
    }

    /// Answers a proposed change once the cluster has accepted and applied it (or refused).
    fn answer_proposal(&self, cid: u64, result: Result<(), OpError>) {
        match result {
            Ok(()) => self.send(&ServerMessage::Ok { cid }),
            Err(error) => self.send_error(Some(cid), error.code, error.message),
        }
    }

    /// Carries out a request on this server's tree and answers it.
    fn answer(&self, request: ClientMessage) {
        let engine = &self.ctx.engine;
        let caller = Caller::Session(self.id);
        let ok = |r: Result<(), OpError>| r.map(|()| Reply::Ok);
        let (cid, result): (u64, Result<Reply, OpError>) = match request {
            // Answered by `handle_message`.
            ClientMessage::Connect { .. } | ClientMessage::Ack { .. } => return,
            ClientMessage::Add {
                cid,
                path,
                topic_type,
                properties,
                value,
            } => (
                cid,
                ok(engine.add(caller, &path, topic_type, &properties, value)),
            ),
            ClientMessage::Set { cid, path, value } => (cid, ok(engine.set(caller, &path, value))),
            ClientMessage::Subscribe { cid, selector } => {
                (cid, ok(engine.subscribe(self.id, &selector)))
            }
            ClientMessage::Unsubscribe { cid, selector } => {
                (cid, ok(engine.unsubscribe(self.id, &selector)))
            }
            ClientMessage::Fetch {
                cid,
                selector,
                after,
                limit,
            } => (
                cid,
                engine
                    .fetch(caller, &selector, after.as_deref(), limit)
                    .map(|page| Reply::Encoded(encode_fetched(cid, &page.topics, page.more))),
            ),
            ClientMessage::Remove { cid, selector } => {
                (cid, engine.remove(caller, &selector).map(|_| Reply::Ok))
            }
            ClientMessage::CreateView { cid, name, spec } => {
                (cid, ok(engine.create_view(caller, &name, &spec)))
            }
            ClientMessage::RemoveView { cid, name } => (cid, ok(engine.remove_view(caller, &name))),
            ClientMessage::ListViews { cid } => (
                cid,
                engine
                    .list_views(caller)
                    .map(|views| Reply::Message(ServerMessage::Views { cid, views })),
            ),
            ClientMessage::Ping { cid } => (cid, Ok(Reply::Message(ServerMessage::Pong { cid }))),
        };
        match result {
            Ok(Reply::Ok) => self.send(&ServerMessage::Ok { cid }),
            Ok(Reply::Message(reply)) => self.send(&reply),
            Ok(Reply::Encoded(bytes)) => self.send_bytes(bytes),
            Err(error) => self.send_error(Some(cid), error.code, error.message),
        }
    }

    /// Handles one frame; a panic anywhere inside is contained: the client is told, only this
    /// session closes, and the engine (whose lock survives poisoning) goes on serving others.
    fn handle_frame_contained(&mut self, frame: Incoming) -> Flow {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.handle_frame(frame))) {
            Ok(flow) => flow,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "a request failed inside the server; closing its session");
                self.ctx.metrics.internal_errors.increment(1);
                // The details stay in the log: `INTERNAL` never tells the client more.
                self.send_error(None, ErrorCode::Internal, "internal error");
                self.outbound.close(CloseReason::InternalError);
                Flow::Close
            }
        }
    }

    fn principal(&self) -> &str {
        match &self.phase {
            Phase::Connected { identity } => identity.name(),
            Phase::Handshake => "-",
        }
    }
}

/// A frame as read, a text frame decoded once: whether it must wait for the session's
/// pipelined `set`s is decided on the decoded request, which is then handled as it is.
enum Incoming {
    /// A text frame within the message size limit, decoded.
    Request(Result<ClientMessage, (Option<u64>, DecodeError)>),
    /// Any other frame (a text frame over the limit included).
    Frame(Message),
}

impl Incoming {
    fn read(frame: Message, max_message_bytes: usize) -> Self {
        match frame {
            Message::Text(text) if text.len() <= max_message_bytes => {
                Self::Request(decode_client_message(text.as_str()))
            }
            other => Self::Frame(other),
        }
    }

    /// Only a `set` may overtake the answers of the sets before it.
    fn is_set(&self) -> bool {
        matches!(self, Self::Request(Ok(ClientMessage::Set { .. })))
    }
}

/// What a read error means for the close.
fn read_error_close(error: &tungstenite::Error) -> Option<CloseReason> {
    match error {
        tungstenite::Error::Capacity(_) => Some(CloseReason::MessageTooLarge),
        tungstenite::Error::Utf8(_) => Some(CloseReason::InvalidPayload),
        _ => None,
    }
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The session's request rate limiter, or `None` when the rate is unlimited (`0`).
fn rate_limiter(per_second: u32) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// How long until the limiter allows another request; `None` when it allows one now (and has
/// counted it).
fn rate_wait(limiter: Option<&DefaultDirectRateLimiter>) -> Option<Duration> {
    let limiter = limiter?;
    match limiter.check() {
        Ok(()) => None,
        Err(not_until) => Some(
            not_until
                .wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ))
                .max(Duration::from_millis(1)),
        ),
    }
}

/// Runs one WebSocket session to its end. `_done` is held until the session has finished, so
/// the server can wait for every session at shutdown.
pub(crate) async fn run(
    socket: WebSocket,
    direct: Option<Arc<DirectSocket>>,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    _done: mpsc::Sender<()>,
    peer: IpAddr,
) {
    let id = ctx.next_session_id();
    let name = ctx.session_name(id);
    let span = tracing::info_span!("session", session = %name);
    run_session(socket, direct, ctx, shutdown, id, name, peer)
        .instrument(span)
        .await;
}

type Writer = tokio::task::JoinHandle<Option<SplitSink<WebSocket, Message>>>;

/// Starts the writer task of `generation` on `sink`; on a plain-TCP connection the session
/// also writes directly to `direct` from now on.
fn spawn_writer(
    sink: SplitSink<WebSocket, Message>,
    direct: Option<&Arc<DirectSocket>>,
    outbound: &Arc<SessionOutbound>,
    generation: u64,
    ctx: &ServerContext,
) -> Writer {
    if let Some(socket) = direct {
        outbound.attach_direct(
            generation,
            Arc::clone(socket),
            ctx.config.max_frame_bytes,
            ctx.metrics.clone(),
        );
    }
    // However the task ends (even dropped before it runs), the session stops writing
    // directly to this connection's socket.
    let release = ReleaseDirect::new(outbound, generation);
    let writer = run_writer(
        sink,
        direct.cloned(),
        Arc::clone(outbound),
        generation,
        ctx.config.max_frame_bytes,
        ctx.metrics.clone(),
    );
    tokio::spawn(
        async move {
            let _release = release;
            writer.await
        }
        .in_current_span(),
    )
}

async fn run_session(
    socket: WebSocket,
    direct: Option<Arc<DirectSocket>>,
    ctx: Arc<ServerContext>,
    shutdown: CancellationToken,
    id: SessionId,
    name: String,
    peer: IpAddr,
) {
    let metrics = ctx.metrics.clone();
    let _counted = Counted::new(metrics.clone());
    let outbound = Arc::new(SessionOutbound::new(ctx.config.queue_limit_bytes));
    let (sink, mut stream) = socket.split();
    let mut writer = spawn_writer(sink, direct.as_ref(), &outbound, 0, &ctx);
    let mut session = Session {
        connection: id,
        id,
        name,
        phase: Phase::Handshake,
        version: PROTOCOL_VERSION_1,
        token: None,
        outbound,
        generation: 0,
        ctx: Arc::clone(&ctx),
        peer,
        per_second: ctx.config.max_requests_per_second,
        limiter: rate_limiter(ctx.config.max_requests_per_second),
        expires_at: None,
        in_flight: FuturesOrdered::new(),
    };
    let handshake_deadline = tokio::time::sleep(ctx.config.handshake_timeout);
    tokio::pin!(handshake_deadline);
    // While set, the client is over its rate: nothing is read until then.
    let mut paused_until: Option<Instant> = None;

    loop {
        let handshaking = matches!(session.phase, Phase::Handshake);
        let outbound = Arc::clone(&session.outbound);
        tokio::select! {
            _ = outbound.closed(session.generation) => break,
            _ = shutdown.cancelled() => {
                outbound.close(CloseReason::Shutdown);
                break;
            }
            () = &mut handshake_deadline, if handshaking => {
                tracing::debug!("no connect within the handshake timeout; closing");
                outbound.close(CloseReason::HandshakeTimeout);
                break;
            }
            () = sleep_until_some(session.expires_at), if session.expires_at.is_some() => {
                tracing::info!(principal = session.principal(), "token expired; closing session");
                session.send_error(None, ErrorCode::AuthenticationFailed, "the session's token has expired");
                outbound.close(CloseReason::TokenExpired);
                break;
            }
            () = async {
                if let Some(until) = paused_until {
                    tokio::time::sleep_until(until).await;
                }
            }, if paused_until.is_some() => {
                paused_until = None;
            }
            Some((cid, result)) = session.in_flight.next(), if !session.in_flight.is_empty() => {
                session.answer_proposal(cid, result);
            }
            frame = stream.next(), if paused_until.is_none() => match frame {
                Some(Ok(frame)) => {
                    outbound.heard(ctx.liveness.now_ms());
                    let counted = !matches!(frame, Message::Close(_) | Message::Pong(_));
                    if counted && let Some(wait) = rate_wait(session.limiter.as_ref()) {
                        // Over the rate: a request is refused; a ping is simply answered
                        // later. Either way nothing more is read until the rate allows.
                        session.refuse_rate(&frame);
                        paused_until = Some(Instant::now() + wait);
                        if !matches!(frame, Message::Ping(_)) {
                            continue;
                        }
                    }
                    // Only `set`s overtake the answers of the sets before them; anything else
                    // waits for those first, so it sees their effect.
                    let frame = Incoming::read(frame, ctx.config.max_message_bytes);
                    if !session.in_flight.is_empty() && !frame.is_set() {
                        session.drain_in_flight().await;
                    }
                    let mut flow = session.handle_frame_contained(frame);
                    if let Flow::Authenticate(pending) = flow {
                        let PendingConnect { version, resume, presented } = *pending;
                        let checked = ctx.security.authenticate(presented, session.peer).await;
                        flow = session.connect(version, resume, checked);
                    }
                    let pipelined =
                        matches!(&flow, Flow::Propose(_, p) if matches!(**p, Proposal::Set { .. }));
                    if pipelined
                        && let Some(cluster) = ctx.cluster.clone()
                        && let Flow::Propose(cid, proposal) =
                            std::mem::replace(&mut flow, Flow::Continue)
                    {
                        // Queued for Redis now (so in order), answered in order by
                        // `in_flight`; the session goes on reading meanwhile.
                        if session.in_flight.len() >= MAX_SETS_IN_FLIGHT
                            && let Some((cid, result)) = session.in_flight.next().await
                        {
                            session.answer_proposal(cid, result);
                        }
                        let finishing = cluster.begin(&proposal).await;
                        session.in_flight.push_back(Box::pin(async move {
                            match finishing {
                                Ok(finishing) => (cid, finishing.await),
                                Err(error) => (cid, Err(error)),
                            }
                        }));
                    }
                    if let Flow::Propose(cid, proposal) = flow {
                        let result = match &ctx.cluster {
                            Some(cluster) => tokio::select! {
                                result = cluster.submit(&proposal) => result,
                                () = shutdown.cancelled() => Err(OpError::new(
                                    ErrorCode::Unavailable,
                                    "the server is shutting down: the change may or may not have been made",
                                )),
                            },
                            None => Ok(()),
                        };
                        session.answer_proposal(cid, result);
                        flow = Flow::Continue;
                    }
                    match flow {
                        Flow::Continue | Flow::Authenticate(_) | Flow::Propose(..) => {}
                        Flow::Close => break,
                        Flow::Resume(resumed, generation) => {
                            // This connection's own queue holds at most replies sent during
                            // the handshake: the writer sends them, then hands the socket over.
                            session.outbound.close(CloseReason::Handover);
                            let Some(sink) = writer.await.ok().flatten() else {
                                // The socket failed meanwhile: the session waits for the next
                                // attempt, as if this one had never come.
                                resumed.outbound.close(CloseReason::ConnectionLost);
                                session.adopt(resumed, generation);
                                return Box::pin(session.finish(None, &shutdown, &mut stream)).await;
                            };
                            writer = spawn_writer(
                                sink,
                                direct.as_ref(),
                                &resumed.outbound,
                                generation,
                                &ctx,
                            );
                            ctx.liveness.watch(session.connection, Arc::clone(&resumed.outbound), true);
                            session.adopt(resumed, generation);
                        }
                    }
                }
                Some(Err(error)) => {
                    let text = error.to_string();
                    match read_error_close(&error) {
                        Some(CloseReason::MessageTooLarge) => {
                            session.too_large(None);
                        }
                        Some(reason) => {
                            tracing::debug!(error = %text, "read failed; closing session");
                            outbound.close(reason);
                        }
                        None => {
                            tracing::debug!(error = %text, "read failed; closing session");
                            outbound.close(CloseReason::ConnectionLost);
                        }
                    }
                    break;
                }
                None => {
                    outbound.close(CloseReason::ConnectionLost);
                    break;
                }
            },
        }
    }
    // Boxed: the closing steps' state is needed once, at the end, so it does not belong in
    // the future every idle connection keeps for its whole life.
    Box::pin(session.finish(Some(writer), &shutdown, &mut stream)).await;
}

impl Session {
    /// Becomes the connection of a resumed session.
    fn adopt(&mut self, resumed: ResumableSession, generation: u64) {
        self.id = resumed.id;
        self.name = self.ctx.session_name(resumed.id);
        self.outbound = resumed.outbound;
        self.generation = generation;
        self.version = PROTOCOL_VERSION;
        let per_second = self.ctx.engine.limits_of(resumed.id).requests_per_second;
        self.become_connected(&resumed.identity, per_second);
        self.token = Some(resumed.token);
    }

    /// Closes the connection: lets the writer finish (close frame included), then ends the
    /// session, or leaves a version-2 session waiting to be resumed.
    async fn finish(
        self,
        writer: Option<Writer>,
        shutdown: &CancellationToken,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
    ) {
        let outbound = &self.outbound;
        let reason = match outbound.generation() == self.generation {
            true => outbound
                .close_reason()
                .unwrap_or(CloseReason::ConnectionLost),
            false => CloseReason::Replaced,
        };
        if let Some(mut writer) = writer
            && tokio::time::timeout(CLOSE_GRACE, &mut writer)
                .await
                .is_err()
        {
            tracing::debug!("writer did not finish in time; dropping the connection");
            writer.abort();
        }
        self.ctx.liveness.forget(self.connection);
        self.leave_session(shutdown);
        if reason.close_frame().is_some() {
            // Let the client answer our close frame, so the TCP connection ends cleanly.
            let wait = if reason == CloseReason::Shutdown {
                SHUTDOWN_CLOSE_REPLY_WAIT
            } else {
                CLOSE_REPLY_WAIT
            };
            let _ = tokio::time::timeout(wait, async {
                while let Some(Ok(frame)) = stream.next().await {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        tracing::debug!(
            principal = self.principal(),
            reason = reason.label(),
            "connection closed"
        );
        self.ctx.metrics.session_closed(reason.label());
    }

    /// After the connection: a version-2 session that may outlive it waits to be resumed;
    /// any other connected session ends.
    fn leave_session(&self, shutdown: &CancellationToken) {
        if !matches!(self.phase, Phase::Connected { .. }) {
            return;
        }
        let Some(token) = &self.token else {
            self.ctx.engine.close_session(self.id);
            return;
        };
        let Phase::Connected { identity } = &self.phase else {
            return;
        };
        let session = ResumableSession {
            token: *token,
            id: self.id,
            outbound: Arc::clone(&self.outbound),
            identity: Arc::clone(identity),
        };
        if self.outbound.detach(self.generation) {
            resumable::watch_detached(
                Arc::clone(&self.ctx),
                session,
                self.generation,
                shutdown.clone(),
            );
        } else if self.outbound.generation() == self.generation {
            resumable::end_session(&self.ctx, &session);
        }
        // Otherwise another connection has taken the session over.
    }
}
