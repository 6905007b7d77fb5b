//! One client connection: the handshake, the reader loop that dispatches requests, and the
//! orderly close.
//!
//! Every reply goes through the session's outbound queue, behind any topic messages already
//! queued, so a client sees notices and replies in the order the server produced them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use diffusion_core::protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage, decode_client_message,
    encode_server_message,
};
use futures_util::StreamExt;
use service_kit::ShutdownSignal;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tracing::Instrument;

use crate::ServerContext;
use crate::engine::OpError;
use crate::outbound::{CloseReason, SessionOutbound, run_writer};
use crate::subscriptions::SessionId;

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
    /// Connected as this principal (`None`: anonymous).
    Connected { principal: Option<String> },
}

/// Whether the reader loop goes on.
enum Flow {
    Continue,
    Close,
}

struct Session {
    id: SessionId,
    name: String,
    phase: Phase,
    outbound: Arc<SessionOutbound>,
    ctx: Arc<ServerContext>,
}

impl Session {
    fn send(&self, message: &ServerMessage) {
        let bytes: Bytes = encode_server_message(message);
        // A reply that does not fit closes the session; one that made the queue drop
        // subscriptions (CONFLATION=unsubscribe) has those ended by the engine.
        let result = self.outbound.push_control(bytes);
        if matches!(self.phase, Phase::Connected { .. }) {
            self.ctx.engine.settle_push(self.id, result);
        }
    }

    fn send_error(&self, cid: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.send(&ServerMessage::Error {
            cid,
            code,
            message: message.into(),
        });
    }

    fn handle_frame(&mut self, frame: Message) -> Flow {
        match frame {
            Message::Text(text) => self.handle_text(text.as_str()),
            Message::Binary(data) => {
                if data.len() > self.ctx.config.max_message_bytes {
                    return self.too_large(Some(data.len()));
                }
                self.send_error(
                    None,
                    ErrorCode::MalformedMessage,
                    "binary frames are not part of the protocol; send JSON in text frames",
                );
                Flow::Continue
            }
            Message::Close(_) => {
                self.outbound.close(CloseReason::ClientClosed);
                Flow::Close
            }
            // The WebSocket layer answers pings itself.
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
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

    fn handle_text(&mut self, text: &str) -> Flow {
        if text.len() > self.ctx.config.max_message_bytes {
            return self.too_large(Some(text.len()));
        }
        match decode_client_message(text) {
            Ok(message) => self.handle_message(message),
            Err((cid, error)) => {
                self.send_error(cid, error.code(), error.to_string());
                Flow::Continue
            }
        }
    }

    fn handle_message(&mut self, message: ClientMessage) -> Flow {
        match (&self.phase, message) {
            (
                Phase::Handshake,
                ClientMessage::Connect {
                    version, principal, ..
                },
            ) => self.connect(version, principal),
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
            (Phase::Connected { .. }, request) => {
                self.handle_request(request);
                Flow::Continue
            }
        }
    }

    fn connect(&mut self, version: u32, principal: Option<String>) -> Flow {
        if version != PROTOCOL_VERSION {
            self.send_error(
                None,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
                ),
            );
            self.outbound.close(CloseReason::UnsupportedVersion);
            return Flow::Close;
        }
        // Credentials are not checked yet: every session is accepted, and the principal it
        // claims is recorded for logs (authentication arrives with the security work).
        tracing::debug!(
            principal = principal.as_deref().unwrap_or("ANONYMOUS"),
            "session connected"
        );
        self.ctx
            .engine
            .register_session(self.id, Arc::clone(&self.outbound));
        self.phase = Phase::Connected { principal };
        self.send(&ServerMessage::Connected {
            version: PROTOCOL_VERSION,
            session: self.name.clone(),
        });
        Flow::Continue
    }

    fn handle_request(&self, request: ClientMessage) {
        let engine = &self.ctx.engine;
        let (cid, result): (u64, Result<Option<ServerMessage>, OpError>) = match request {
            // Answered by `handle_message`.
            ClientMessage::Connect { .. } => return,
            ClientMessage::Add {
                cid,
                path,
                topic_type,
                properties,
                value,
            } => (
                cid,
                engine
                    .add(&path, topic_type, &properties, value.as_ref())
                    .map(|()| None),
            ),
            ClientMessage::Set { cid, path, value } => {
                (cid, engine.set(&path, &value).map(|()| None))
            }
            ClientMessage::Subscribe { cid, selector } => {
                (cid, engine.subscribe(self.id, &selector).map(|()| None))
            }
            ClientMessage::Unsubscribe { cid, selector } => {
                (cid, engine.unsubscribe(self.id, &selector).map(|()| None))
            }
            ClientMessage::Fetch { cid, selector } => (
                cid,
                engine
                    .fetch(&selector)
                    .map(|topics| Some(ServerMessage::Fetched { cid, topics })),
            ),
            ClientMessage::Remove { cid, selector } => {
                (cid, engine.remove(&selector).map(|_| None))
            }
            ClientMessage::CreateView { cid, name, spec } => {
                (cid, engine.create_view(&name, &spec).map(|()| None))
            }
            ClientMessage::RemoveView { cid, name } => {
                (cid, engine.remove_view(&name).map(|()| None))
            }
            ClientMessage::ListViews { cid } => (
                cid,
                Ok(Some(ServerMessage::Views {
                    cid,
                    views: engine.list_views(),
                })),
            ),
            ClientMessage::Ping { cid } => (cid, Ok(Some(ServerMessage::Pong { cid }))),
        };
        match result {
            Ok(Some(reply)) => self.send(&reply),
            Ok(None) => self.send(&ServerMessage::Ok { cid }),
            Err(error) => self.send_error(Some(cid), error.code, error.message),
        }
    }

    fn principal(&self) -> &str {
        match &self.phase {
            Phase::Connected { principal: Some(p) } => p,
            Phase::Connected { principal: None } => "ANONYMOUS",
            Phase::Handshake => "-",
        }
    }
}

/// Was this read error the WebSocket layer refusing an oversized message?
fn is_capacity_error(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Runs one WebSocket session to its end. `_done` is held until the session has finished, so
/// the server can wait for every session at shutdown.
pub(crate) async fn run(
    socket: WebSocket,
    ctx: Arc<ServerContext>,
    shutdown: ShutdownSignal,
    _done: mpsc::Sender<()>,
) {
    let id = ctx.next_session_id();
    let name = ctx.session_name(id);
    let span = tracing::info_span!("session", session = %name);
    run_session(socket, ctx, shutdown, id, name)
        .instrument(span)
        .await;
}

async fn run_session(
    socket: WebSocket,
    ctx: Arc<ServerContext>,
    mut shutdown: ShutdownSignal,
    id: SessionId,
    name: String,
) {
    let metrics = ctx.metrics.clone();
    metrics.connections.increment(1.0);
    let outbound = Arc::new(SessionOutbound::new(ctx.config.queue_limit_bytes));
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(
        run_writer(
            sink,
            Arc::clone(&outbound),
            ctx.config.max_frame_bytes,
            metrics.clone(),
        )
        .in_current_span(),
    );
    let mut session = Session {
        id,
        name,
        phase: Phase::Handshake,
        outbound: Arc::clone(&outbound),
        ctx: Arc::clone(&ctx),
    };

    loop {
        tokio::select! {
            _ = outbound.closed() => break,
            _ = shutdown.recv() => {
                outbound.close(CloseReason::Shutdown);
                break;
            }
            frame = stream.next() => match frame {
                Some(Ok(frame)) => {
                    if let Flow::Close = session.handle_frame(frame) {
                        break;
                    }
                }
                Some(Err(error)) => {
                    let text = error.to_string();
                    if is_capacity_error(error) {
                        session.too_large(None);
                    } else {
                        tracing::debug!(error = %text, "read failed; closing session");
                        outbound.close(CloseReason::ConnectionLost);
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

    if matches!(session.phase, Phase::Connected { .. }) {
        ctx.engine.close_session(id);
    }
    let reason = outbound
        .close_reason()
        .unwrap_or(CloseReason::ConnectionLost);
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        tracing::debug!("writer did not finish in time; dropping the connection");
        writer.abort();
    }
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
        principal = session.principal(),
        reason = reason.label(),
        "session closed"
    );
    metrics.session_closed(reason.label());
    metrics.connections.decrement(1.0);
}
