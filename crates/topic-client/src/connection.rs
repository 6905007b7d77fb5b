//! The connection to the topic server, kept up by one supervisor task: it runs a reader and a
//! writer on the current socket, and when the socket is lost it dials again with back-off and
//! resumes the session (protocol version 2), so subscriptions, topic ids and every update
//! survive a dropped connection.
//!
//! The reader routes replies to waiting requests by cid, turns subscription messages into
//! events, remembers the sequence number of the last message it processed, answers heartbeats
//! with `ack` (through the writer) and declares the server dead after the heartbeat interval
//! plus timeout of silence. The writer batches outgoing frames. Requests in flight when a
//! connection drops fail with [`ClientError::Disconnected`]; requests made while reconnecting
//! wait (within their timeout) and go out on the next connection. When the server cannot
//! resume the session (window passed, server restarted) the client subscribes again with every
//! selector it holds and reports [`TopicEvent::Reconnected`] with `recovered: false`.
//!
//! Some ends are final, and the client then closes instead of reconnecting: the server does not
//! speak our protocol (1002), another connection took the session over (4002), or the server
//! refused who we are — authentication failed (4003, or an `AUTHENTICATION_FAILED` /
//! `RATE_LIMITED` answer to `connect`) or the session's token expired (4004). A refusal is kept
//! and becomes the error of every later request ([`ClientError::Refused`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diffusion_core::protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, Resume, SUPPORTED_VERSIONS, ServerMessage,
    SessionLimits, decode_sequenced_message, split_frame,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use service_kit::Backoff;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientConfig, ConnectOptions};
use crate::error::{CLOSE_AUTHENTICATION_FAILED, CLOSE_TOKEN_EXPIRED, ClientError, Refusal};
use crate::events::{TopicEvent, TopicTable};

/// The socket type this client uses.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Most outgoing frames the writer feeds before one flush.
const WRITE_BATCH: usize = 64;

/// How long the writer tries to send a farewell close frame.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The reader acknowledges at least this often, so the server's recovery buffer stays small
/// on a busy session.
const ACK_EVERY: u64 = 256;

/// Close code a client sends when it gives up on a connection it means to resume.
const CLOSE_TO_RESUME: u16 = 4000;

/// Close codes after which reconnecting is pointless: the server does not speak our
/// protocol, or another connection took our session over.
const FINAL_CLOSE_CODES: &[u16] = &[1002, 4002];

type PendingMap = HashMap<u64, oneshot::Sender<ServerMessage>>;

/// State shared by the client handles and the supervisor.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Requests waiting for their reply; `None` once the client is closed for good, so late
    /// registrations fail at once instead of waiting for their timeout.
    pending: Mutex<Option<PendingMap>>,
    /// Becomes `true` exactly once, when the client is closed for good.
    closed: watch::Sender<bool>,
    /// Set by the application (close, or dropping every handle): do not reconnect.
    stopping: CancellationToken,
    /// Set while `close` waits for the server's answer: a lost connection is then the end.
    closing: CancellationToken,
    /// The selectors subscribed, to subscribe again when a session cannot be resumed.
    selectors: Mutex<Vec<String>>,
    /// Correlation ids, shared by requests and the supervisor's own resubscriptions.
    next_cid: AtomicU64,
    /// Why the server ended the client for good, when it refused its identity.
    refusal: Mutex<Option<Refusal>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            pending: Mutex::new(Some(HashMap::new())),
            closed: watch::Sender::new(false),
            stopping: CancellationToken::new(),
            closing: CancellationToken::new(),
            selectors: Mutex::new(Vec::new()),
            next_cid: AtomicU64::new(1),
            refusal: Mutex::new(None),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<PendingMap>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn selector_list(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.selectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh correlation id.
    pub(crate) fn next_cid(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }

    /// Remembers a selector the server accepted.
    pub(crate) fn remember_selector(&self, selector: &str) {
        let mut list = self.selector_list();
        if !list.iter().any(|s| s == selector) {
            list.push(selector.to_owned());
        }
    }

    /// Forgets a withdrawn selector.
    pub(crate) fn forget_selector(&self, selector: &str) {
        self.selector_list().retain(|s| s != selector);
    }

    /// Registers a request; its reply (or `error`) will be delivered to the returned receiver.
    pub(crate) fn register(
        &self,
        cid: u64,
    ) -> Result<oneshot::Receiver<ServerMessage>, ClientError> {
        let mut guard = self.pending();
        let Some(map) = guard.as_mut() else {
            return Err(self.closed_error());
        };
        let (tx, rx) = oneshot::channel();
        map.insert(cid, tx);
        Ok(rx)
    }

    /// Forgets a request that timed out or was cancelled, so the map does not grow.
    pub(crate) fn forget(&self, cid: u64) {
        if let Some(map) = self.pending().as_mut() {
            map.remove(&cid);
        }
    }

    /// Hands a reply to the request waiting for it.
    fn deliver(&self, cid: u64, reply: ServerMessage) {
        let waiter = self.pending().as_mut().and_then(|map| map.remove(&cid));
        match waiter {
            // The requester may have timed out meanwhile; nothing to do then.
            Some(tx) => drop(tx.send(reply)),
            None => tracing::debug!(cid, "reply for a request nobody is waiting for"),
        }
    }

    /// Fails every request in flight on a connection that was lost (their replies may never
    /// come); the client itself goes on.
    fn fail_in_flight(&self) {
        if let Some(map) = self.pending().as_mut() {
            map.clear();
        }
    }

    /// Marks the client closed for good and fails every waiting request (after the flag is
    /// set, so each of them reports why the client closed, not a lost connection).
    pub(crate) fn shut_down(&self) {
        let waiters = self.pending().take();
        self.stopping.cancel();
        self.closed.send_replace(true);
        drop(waiters);
    }

    /// Records that the server refused the client's identity (before shutting it down).
    fn refuse(&self, refusal: Refusal) {
        tracing::warn!(%refusal, "the topic server refused this client; not reconnecting");
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
    }

    /// The refusal that ended the client, if one did.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The error for a request on a closed client: the refusal that ended it, or `Closed`.
    pub(crate) fn closed_error(&self) -> ClientError {
        self.refusal()
            .map_or(ClientError::Closed, ClientError::Refused)
    }

    /// The application is done with the client: stop reconnecting.
    pub(crate) fn stop(&self) {
        self.stopping.cancel();
    }

    /// `close` is under way: the connection ending is expected.
    pub(crate) fn begin_close(&self) {
        self.closing.cancel();
    }

    /// True once the client is closed for good.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A receiver that observes the closed flag.
    pub(crate) fn closed_watch(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// Waits until the watched closed flag is set (or its sender is gone, which also means closed).
pub(crate) async fn wait_closed(mut closed: watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

/// What the handshake produced.
pub(crate) struct Established {
    pub(crate) socket: Socket,
    pub(crate) version: u32,
    pub(crate) session: String,
    /// The session token (version 2).
    pub(crate) token: Option<String>,
    /// After a resume: whether the session was taken back.
    pub(crate) recovered: Option<bool>,
    /// Why not, when it was not.
    pub(crate) reason: Option<String>,
    /// The server's limits (version 2).
    pub(crate) limits: Option<SessionLimits>,
    /// Messages the server packed into the same frame after `connected`.
    pub(crate) leftover: Vec<(ServerMessage, Option<u64>)>,
}

/// The `connect` message for these options, resuming `resume` if given.
pub(crate) fn hello(options: &ConnectOptions, resume: Option<Resume>) -> ClientMessage {
    ClientMessage::connect_v2(&options.credentials, resume)
}

/// The TLS configuration to dial `url` with: built (and the CA file read) once per client, for
/// `wss://` URLs and whenever a CA file is given (so a bad file is reported even before a
/// `wss://` URL is used); `None` for plain `ws://`.
pub(crate) fn tls_for(
    urls: &[String],
    options: &ConnectOptions,
) -> Result<Option<Arc<rustls::ClientConfig>>, ClientError> {
    let secure = urls.iter().any(|url| {
        url.get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"))
    });
    if secure || options.ca_file.is_some() {
        Ok(Some(service_kit::tls::client_config(
            options.ca_file.as_deref(),
        )?))
    } else {
        Ok(None)
    }
}

/// The servers a client may use: `url` split at commas, blanks dropped.
pub(crate) fn server_urls(url: &str) -> Result<Vec<String>, ClientError> {
    let urls: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(ClientError::InvalidUrl(url.to_owned()));
    }
    Ok(urls)
}

/// The refusal a close code means, if it is one.
fn refusal_for_close(
    code: u16,
    reason: &str,
    notice: Option<(ErrorCode, String)>,
) -> Option<Refusal> {
    match code {
        CLOSE_AUTHENTICATION_FAILED => {
            let (code, message) = match notice {
                Some((
                    code @ (ErrorCode::AuthenticationFailed | ErrorCode::RateLimited),
                    message,
                )) => (code, message),
                _ => (ErrorCode::AuthenticationFailed, reason.to_owned()),
            };
            Some(Refusal::Authentication { code, message })
        }
        CLOSE_TOKEN_EXPIRED => Some(Refusal::TokenExpired {
            reason: reason.to_owned(),
        }),
        _ => None,
    }
}

/// Dials `url` (over TLS with `tls` for `wss://`) and performs the `connect` / `connected`
/// handshake, each step bounded by `timeout`.
pub(crate) async fn establish(
    url: &str,
    connect: ClientMessage,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    max_message_size: usize,
) -> Result<Established, ClientError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    let connector = tls.map(Connector::Rustls);
    let dial = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector);
    let (mut socket, _response) = tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(|source| ClientError::Connect {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    let text = serde_json::to_string(&connect).map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::time::timeout(timeout, async {
        socket
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Handshake(format!("cannot send connect: {e}")))?;
        let frame = first_text_frame(&mut socket).await?;
        let mut messages = split_frame(&frame).map(decode_sequenced_message);
        let (first, _) = messages
            .next()
            .ok_or_else(|| ClientError::Handshake("empty reply to connect".to_owned()))?
            .map_err(|e| ClientError::Handshake(format!("unreadable reply to connect: {e}")))?;
        let ServerMessage::Connected {
            version,
            session,
            token,
            recovered,
            reason,
            limits,
        } = first
        else {
            return Err(match first {
                // Before a session exists, RATE_LIMITED can only mean too many failed
                // authentications from this address: the server closes with 4003 next.
                ServerMessage::Error {
                    code: code @ (ErrorCode::AuthenticationFailed | ErrorCode::RateLimited),
                    message,
                    ..
                } => ClientError::Refused(Refusal::Authentication { code, message }),
                ServerMessage::Error { code, message, .. } => ClientError::Server { code, message },
                other => ClientError::Handshake(format!(
                    "expected 'connected', got {}",
                    message_kind(&other)
                )),
            });
        };
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ClientError::Handshake(format!(
                "server chose protocol version {version}, this client speaks {SUPPORTED_VERSIONS:?}"
            )));
        }
        let leftover = messages.collect::<Result<Vec<_>, _>>().map_err(|e| {
            ClientError::Protocol(format!("unreadable message after connected: {e}"))
        })?;
        Ok(Established {
            socket,
            version,
            session,
            token,
            recovered,
            reason,
            limits,
            leftover,
        })
    })
    .await
    .map_err(|_| ClientError::Timeout(timeout))?
}

async fn first_text_frame(socket: &mut Socket) -> Result<String, ClientError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(_))) => {
                return Err(ClientError::Handshake(
                    "server sent a binary frame".to_owned(),
                ));
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                let code = u16::from(frame.code);
                return Err(match refusal_for_close(code, &frame.reason, None) {
                    Some(refusal) => ClientError::Refused(refusal),
                    None => ClientError::Handshake(format!(
                        "server closed the connection during the handshake (code {code}: {})",
                        frame.reason
                    )),
                });
            }
            Some(Ok(Message::Close(None))) | None => {
                return Err(ClientError::Handshake(
                    "server closed the connection during the handshake".to_owned(),
                ));
            }
            Some(Ok(Message::Frame(_))) => {}
            Some(Err(e)) => return Err(ClientError::Handshake(e.to_string())),
        }
    }
}

/// A short name for a message type, for error messages.
pub(crate) fn message_kind(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Connected { .. } => "connected",
        ServerMessage::Ok { .. } => "ok",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Subscribed { .. } => "subscribed",
        ServerMessage::Value { .. } => "value",
        ServerMessage::Unsubscribed { .. } => "unsubscribed",
        ServerMessage::Fetched { .. } => "fetched",
        ServerMessage::Pong { .. } => "pong",
        ServerMessage::Views { .. } => "views",
        ServerMessage::Delta { .. } => "delta",
        ServerMessage::Heartbeat => "heartbeat",
    }
}

/// How one connection ended.
#[derive(Debug)]
enum LinkEnd {
    /// The application closed the client or dropped every handle.
    Stopped,
    /// The connection was lost (or the server closed it with this code); try again.
    Lost(Option<u16>),
    /// The server refused the client's identity: do not try again.
    Refused(Refusal),
}

/// Keeps the client connected: everything the supervisor owns across connections.
pub(crate) struct Supervisor {
    /// The servers it may use, in order of preference.
    pub(crate) urls: Vec<String>,
    /// The one it is (or was last) connected to.
    pub(crate) current: usize,
    pub(crate) options: ConnectOptions,
    /// The TLS configuration for `wss://`, built once.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) config: ClientConfig,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: mpsc::Sender<TopicEvent>,
    pub(crate) outgoing: mpsc::Receiver<Message>,
}

/// The session as the supervisor knows it.
struct SessionState {
    version: u32,
    token: Option<String>,
    limits: Option<SessionLimits>,
    table: TopicTable,
    /// The sequence number of the last message processed.
    last_seq: u64,
}

impl Supervisor {
    /// Runs the client's connections until the application stops it.
    pub(crate) async fn run(mut self, first: Established) {
        let mut session = SessionState {
            version: first.version,
            token: first.token.clone(),
            limits: first.limits.clone(),
            table: TopicTable::new(self.config.max_message_size),
            last_seq: 0,
        };
        let mut link = first;
        loop {
            let end = self.serve(link, &mut session).await;
            let code = match end {
                LinkEnd::Stopped => break,
                LinkEnd::Refused(refusal) => {
                    self.shared.refuse(refusal);
                    break;
                }
                LinkEnd::Lost(code) => code,
            };
            if !self.config.reconnect
                || self.shared.closing.is_cancelled()
                || code.is_some_and(|c| FINAL_CLOSE_CODES.contains(&c))
            {
                break;
            }
            self.shared.fail_in_flight();
            tracing::info!(?code, "connection to the topic server lost; reconnecting");
            match self.reconnect(&mut session).await {
                Some(next) => link = next,
                None => break,
            }
        }
        self.shared.shut_down();
    }

    /// Dials again with back-off until a handshake succeeds (resuming the session when there
    /// is one), then settles what the server said about recovery. `None`: stopped meanwhile.
    async fn reconnect(&mut self, session: &mut SessionState) -> Option<Established> {
        let mut backoff = Backoff::reconnect();
        loop {
            // A `close` while no connection is up has no one to say goodbye to: stop now.
            tokio::select! {
                () = self.shared.stopping.cancelled() => return None,
                () = self.shared.closing.cancelled() => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            let resume = session.token.clone().map(|token| Resume {
                token,
                s: session.last_seq,
            });
            let url = self.urls[self.current].clone();
            let attempt = establish(
                &url,
                hello(&self.options, resume),
                self.tls.clone(),
                self.config.connect_timeout,
                self.config.max_message_size,
            );
            let established = tokio::select! {
                () = self.shared.stopping.cancelled() => return None,
                () = self.shared.closing.cancelled() => return None,
                result = attempt => result,
            };
            match established {
                Ok(established) => {
                    let recovered = established.recovered == Some(true);
                    if !recovered {
                        tracing::info!(
                            reason = established
                                .reason
                                .as_deref()
                                .unwrap_or("no session to resume"),
                            "session not recovered; subscribing again"
                        );
                        session.table.clear();
                        session.last_seq = 0;
                    } else {
                        tracing::info!(from = session.last_seq, "session resumed");
                    }
                    session.version = established.version;
                    session.token = established.token.clone();
                    session.limits = established.limits.clone();
                    if !self.announce(TopicEvent::Reconnected { recovered }).await {
                        return None;
                    }
                    return Some(established);
                }
                Err(ClientError::Refused(refusal)) => {
                    self.shared.refuse(refusal);
                    return None;
                }
                Err(error) => {
                    // Its own server first (where the session can be resumed), then the next.
                    tracing::debug!(%url, %error, "reconnection attempt failed");
                    self.current = (self.current + 1) % self.urls.len();
                }
            }
        }
    }

    /// Hands an event to the application; false once stopped.
    async fn announce(&self, event: TopicEvent) -> bool {
        tokio::select! {
            () = self.shared.stopping.cancelled() => false,
            // The application closed its event stream: keep serving replies.
            _ = self.events.send(event) => true,
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, link: Established, session: &mut SessionState) -> LinkEnd {
        let resubscribe = link.recovered != Some(true);
        let (sink, stream) = link.socket.split();
        let done = self.shared.stopping.child_token();
        let (acks, ack_rx) = watch::channel(session.last_seq);
        let silence = session
            .limits
            .as_ref()
            .map(|l| Duration::from_millis(l.heartbeat_interval_ms + l.heartbeat_timeout_ms));
        let mut writer = Writer {
            sink,
            acks: ack_rx,
            version: session.version,
        };
        // The selectors to subscribe again go out first, before any request made meanwhile.
        if resubscribe && !self.resend_subscriptions(&mut writer).await {
            return LinkEnd::Lost(None);
        }
        let mut reader = Reader {
            shared: &self.shared,
            events: &self.events,
            session,
            acks,
            done: done.clone(),
            close_code: None,
            notice: None,
            refusal: None,
        };
        let (read_end, write_end) = tokio::join!(
            async {
                let end = reader.run(stream, link.leftover, silence).await;
                done.cancel();
                end
            },
            async {
                let end = writer
                    .run(&mut self.outgoing, &done, &self.shared.stopping)
                    .await;
                done.cancel();
                end
            }
        );
        if let Some(refusal) = reader.refusal.take() {
            return LinkEnd::Refused(refusal);
        }
        match (read_end, write_end) {
            (_, LinkEnd::Stopped) | (LinkEnd::Stopped, _) => LinkEnd::Stopped,
            (LinkEnd::Refused(refusal), _) => LinkEnd::Refused(refusal),
            (LinkEnd::Lost(code), _) => LinkEnd::Lost(code.or(reader.close_code)),
        }
    }

    /// Subscribes again with every selector held (replies are not waited for: an error is
    /// logged by the reader as a reply nobody waits for).
    async fn resend_subscriptions(&self, writer: &mut Writer) -> bool {
        let selectors = self.shared.selector_list().clone();
        for selector in selectors {
            let request = ClientMessage::Subscribe {
                cid: self.shared.next_cid(),
                selector,
            };
            let Ok(text) = serde_json::to_string(&request) else {
                continue;
            };
            if writer.sink.feed(Message::text(text)).await.is_err() {
                return false;
            }
        }
        writer.sink.flush().await.is_ok()
    }
}

/// The reading half of one connection.
struct Reader<'a> {
    shared: &'a Shared,
    events: &'a mpsc::Sender<TopicEvent>,
    session: &'a mut SessionState,
    /// Tells the writer which sequence number to acknowledge.
    acks: watch::Sender<u64>,
    done: CancellationToken,
    close_code: Option<u16>,
    /// The last error the server sent without a cid: it explains a close that follows.
    notice: Option<(ErrorCode, String)>,
    /// Set when the server's close frame refused the client's identity.
    refusal: Option<Refusal>,
}

impl Reader<'_> {
    async fn run(
        &mut self,
        mut stream: SplitStream<Socket>,
        leftover: Vec<(ServerMessage, Option<u64>)>,
        silence: Option<Duration>,
    ) -> LinkEnd {
        for (message, seq) in leftover {
            if !self.handle(message, seq).await {
                return LinkEnd::Stopped;
            }
        }
        loop {
            let next = async {
                match silence {
                    Some(limit) => tokio::time::timeout(limit, stream.next()).await.ok(),
                    None => Some(stream.next().await),
                }
            };
            let frame = tokio::select! {
                biased;
                () = self.done.cancelled() => {
                    return if self.shared.stopping.is_cancelled() {
                        LinkEnd::Stopped
                    } else {
                        LinkEnd::Lost(None)
                    };
                }
                frame = next => frame,
            };
            let Some(frame) = frame else {
                tracing::info!(
                    "no message or heartbeat from the server in time; the connection is dead"
                );
                return LinkEnd::Lost(None);
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    for raw in split_frame(text.as_str()) {
                        match decode_sequenced_message(raw) {
                            Ok((message, seq)) => {
                                if !self.handle(message, seq).await {
                                    return LinkEnd::Stopped;
                                }
                            }
                            // Newer servers may send messages this client does not know.
                            Err(e) => {
                                tracing::debug!(error = %e, message = raw, "ignoring a server message this client cannot read")
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        let code = u16::from(frame.code);
                        self.close_code = Some(code);
                        self.refusal = refusal_for_close(code, &frame.reason, self.notice.take());
                    }
                }
                Some(Ok(Message::Binary(_))) => tracing::warn!("ignoring unexpected binary frame"),
                // Pings are answered by the WebSocket layer.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "topic server connection failed");
                    return LinkEnd::Lost(self.close_code);
                }
                None => return LinkEnd::Lost(self.close_code),
            }
        }
    }

    /// Handles one message; `false` means the client was stopped while waiting.
    async fn handle(&mut self, message: ServerMessage, seq: Option<u64>) -> bool {
        if let Some(seq) = seq {
            // A message already processed (cannot happen with a correct server): never twice.
            if seq <= self.session.last_seq {
                tracing::warn!(seq, "ignoring a message received before");
                return true;
            }
        }
        let delivered = self.dispatch(message).await;
        if let Some(seq) = seq {
            self.session.last_seq = seq;
            if seq % ACK_EVERY == 0 {
                self.acks.send_replace(seq);
            }
        }
        delivered
    }

    async fn dispatch(&mut self, message: ServerMessage) -> bool {
        match message {
            ServerMessage::Ok { cid }
            | ServerMessage::Pong { cid }
            | ServerMessage::Views { cid, .. }
            | ServerMessage::Fetched { cid, .. } => {
                self.shared.deliver(cid, message);
            }
            ServerMessage::Error { cid: Some(cid), .. } => self.shared.deliver(cid, message),
            ServerMessage::Error {
                cid: None,
                code,
                message,
            } => {
                tracing::warn!(?code, %message, "server reported an error for an unidentified request");
                self.notice = Some((code, message));
            }
            ServerMessage::Heartbeat => {
                // Notifies the writer even when the value is unchanged.
                self.acks.send_replace(self.session.last_seq);
            }
            ServerMessage::Connected { .. } => tracing::warn!("ignoring a second 'connected'"),
            other => {
                if let Some(event) = self.session.table.apply(other) {
                    tokio::select! {
                        biased;
                        () = self.shared.stopping.cancelled() => return false,
                        // An error means the application closed or dropped the event stream;
                        // keep serving replies.
                        _ = self.events.send(event) => {}
                    }
                }
            }
        }
        true
    }
}

/// The writing half of one connection.
struct Writer {
    sink: SplitSink<Socket, Message>,
    acks: watch::Receiver<u64>,
    version: u32,
}

impl Writer {
    /// Writes queued frames, feeding up to [`WRITE_BATCH`] before each flush, and the acks the
    /// reader asks for. Ends when the connection fails, when `done` is cancelled, or — after a
    /// farewell close frame — when every client handle is dropped.
    async fn run(
        &mut self,
        outgoing: &mut mpsc::Receiver<Message>,
        done: &CancellationToken,
        stopping: &CancellationToken,
    ) -> LinkEnd {
        loop {
            let first = tokio::select! {
                biased;
                () = done.cancelled() => {
                    if stopping.is_cancelled() {
                        self.farewell(None).await;
                        return LinkEnd::Stopped;
                    }
                    self.farewell(Some(CLOSE_TO_RESUME)).await;
                    return LinkEnd::Lost(None);
                }
                changed = self.acks.changed(), if self.version >= PROTOCOL_VERSION => {
                    if changed.is_err() {
                        return LinkEnd::Lost(None);
                    }
                    let s = *self.acks.borrow_and_update();
                    match serde_json::to_string(&ClientMessage::Ack { s }) {
                        Ok(text) => Some(Message::text(text)),
                        Err(_) => continue,
                    }
                }
                next = outgoing.recv() => next,
            };
            let Some(first) = first else {
                // Every client handle is gone.
                let farewell = self.sink.send(Message::Close(None));
                let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, farewell).await;
                return LinkEnd::Stopped;
            };
            let mut batch = Some(first);
            let mut fed = 0;
            let mut failed = None;
            while let Some(message) = batch.take() {
                if let Err(e) = self.sink.feed(message).await {
                    failed = Some(e);
                    break;
                }
                fed += 1;
                if fed < WRITE_BATCH {
                    batch = outgoing.try_recv().ok();
                }
            }
            if failed.is_none() {
                failed = self.sink.flush().await.err();
            }
            if let Some(e) = failed {
                tracing::debug!(error = %e, "writing to the topic server failed");
                return LinkEnd::Lost(None);
            }
        }
    }

    /// Tries to send a close frame: with a code, the connection is given up but the session
    /// is to be resumed; without, the session ends.
    async fn farewell(&mut self, code: Option<u16>) {
        let frame = code.map(|code| CloseFrame {
            code: CloseCode::from(code),
            reason: "connection given up".into(),
        });
        let _ =
            tokio::time::timeout(CLOSE_SEND_TIMEOUT, self.sink.send(Message::Close(frame))).await;
    }
}
