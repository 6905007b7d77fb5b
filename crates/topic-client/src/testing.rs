//! Test helpers for clients of the topic server, only with the `testing` feature:
//! - a scripted, single-connection fake topic server (for this crate and `topic-cli`), over
//!   `ws://` or `wss://`: it speaks the wire protocol from `diffusion_core::protocol` so clients
//!   can be tested without the real server, including against a server that misbehaves or
//!   refuses them (and can tell whether a refused client dials again);
//! - [`CutProxy`], a TCP proxy that cuts or black-holes connections on command, to test
//!   reconnection and session recovery against the real server.

#![allow(clippy::unwrap_used)] // test code: a failure should stop the test

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use diffusion_core::protocol::{
    ClientMessage, SUPPORTED_VERSIONS, ServerMessage, decode_client_message, negotiate_version,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long the fake server waits for anything before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A byte stream the fake server speaks WebSocket over: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The server side of one accepted connection.
pub struct Peer {
    ws: WebSocketStream<Box<dyn Io>>,
    /// The fake server's listener, still open while the script runs: a client that dials again
    /// is seen here.
    listener: TcpListener,
}

/// What the next client frame was.
#[derive(Debug)]
pub enum Incoming {
    /// A protocol message.
    Message(ClientMessage),
    /// A close frame.
    Close,
    /// The TCP connection ended without a close frame.
    Gone,
}

impl Peer {
    /// The next frame from the client.
    pub async fn next(&mut self) -> Incoming {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("client sent nothing in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message = decode_client_message(text.as_str())
                        .unwrap_or_else(|(_, e)| panic!("client sent a bad message {text}: {e}"));
                    return Incoming::Message(message);
                }
                Some(Ok(Message::Close(_))) => return Incoming::Close,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(_)) | None => return Incoming::Gone,
            }
        }
    }

    /// The next protocol message from the client.
    pub async fn recv(&mut self) -> ClientMessage {
        match self.next().await {
            Incoming::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Sends messages packed into ONE frame, separated by '\n'.
    pub async fn send(&mut self, messages: &[ServerMessage]) {
        let text = messages
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        self.send_raw(&text).await;
    }

    /// Sends one text frame as given.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// Reads `connect` and answers `connected`; returns the connect message.
    pub async fn handshake(&mut self) -> ClientMessage {
        let hello = self.recv().await;
        let version = match &hello {
            ClientMessage::Connect {
                version, versions, ..
            } => negotiate_version(*version, versions.as_deref(), SUPPORTED_VERSIONS),
            _ => None,
        };
        let Some(version) = version else {
            panic!("first message must be connect with a known version, got {hello:?}");
        };
        self.send(&[ServerMessage::Connected {
            version,
            session: "session-1".to_owned(),
            token: None,
            recovered: None,
            reason: None,
            limits: None,
        }])
        .await;
        hello
    }

    /// Waits for the client's close frame (or the end of the connection); true for a close frame.
    pub async fn closed_by_client(&mut self) -> bool {
        match self.next().await {
            Incoming::Close => true,
            Incoming::Gone => false,
            Incoming::Message(m) => panic!("expected close, got {m:?}"),
        }
    }

    /// Closes the connection with a close frame carrying `code`.
    pub async fn close_with(mut self, code: u16) {
        self.send_close(code, "closed by the test").await;
    }

    /// Sends a close frame carrying `code` and `reason`, waits for the client's answer (so the
    /// frame is not lost in a reset) and then ends the TCP connection as a server does after
    /// the closing handshake (the client waits for that), keeping the peer for further checks.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.to_owned().into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(PATIENCE, self.ws.next()).await;
        let _ = tokio::time::timeout(PATIENCE, self.ws.get_mut().shutdown()).await;
    }

    /// Whether the client opens another connection within `wait`: how a test shows that a
    /// refused client does not reconnect (and, with a client that should, that it does).
    pub async fn dials_again_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.listener.accept()).await,
            Ok(Ok(_))
        )
    }

    /// Drops the connection abruptly (no close frame).
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// A fake server that accepts one connection and runs a script on it.
pub struct FakeServer {
    /// `ws://127.0.0.1:PORT/` (`wss://` for [`FakeServer::start_tls`]).
    pub url: String,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// Listens on a free loopback port; the script runs on the first connection.
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::listen(None, script).await
    }

    /// The same over TLS with `tls` (whose certificate should name 127.0.0.1, as
    /// `service_kit::testing::TestPki`'s does): the URL is `wss://127.0.0.1:PORT/`. A client that refuses the certificate never reaches the script;
    /// [`FakeServer::finish`] then fails, so tests of refusals do not call it.
    pub async fn start_tls<F, Fut>(tls: Arc<rustls::ServerConfig>, script: F) -> Self
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::listen(Some(TlsAcceptor::from(tls)), script).await
    }

    async fn listen<F, Fut>(tls: Option<TlsAcceptor>, script: F) -> Self
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = tokio::time::timeout(PATIENCE, listener.accept())
                .await
                .expect("no client connected")
                .unwrap();
            let io: Box<dyn Io> = match tls {
                Some(acceptor) => Box::new(acceptor.accept(tcp).await.unwrap()),
                None => Box::new(tcp),
            };
            let ws = tokio_tungstenite::accept_async(io).await.unwrap();
            script(Peer { ws, listener }).await;
        });
        Self { url, task }
    }

    /// Waits for the script to end, failing the test if the script's assertions failed.
    pub async fn finish(self) {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("fake server script did not finish")
            .expect("fake server script failed");
    }
}

/// What happens to the connections a [`CutProxy`] carries when the network "fails".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Both sockets are closed at once.
    Cut,
    /// Nothing more is carried either way, but both sockets stay open (a half-open link, as
    /// after a machine vanishes): only a heartbeat can tell.
    BlackHole,
}

#[derive(Debug, Clone, Copy)]
struct ProxyState {
    /// Connections accepted before this epoch have failed.
    epoch: u64,
    failure: Failure,
    /// New connections are refused (accepted and dropped) until then.
    refuse_until: Option<tokio::time::Instant>,
}

/// A loopback TCP proxy in front of a server, for tests: clients connect to [`CutProxy::addr`];
/// [`CutProxy::cut`] breaks every connection and refuses new ones for a while,
/// [`CutProxy::black_hole`] silently stops carrying data on the current ones.
pub struct CutProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    state: tokio::sync::watch::Sender<ProxyState>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Starts a proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, watch) = tokio::sync::watch::channel(ProxyState {
            epoch: 0,
            failure: Failure::Cut,
            refuse_until: None,
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let now = *watch.borrow();
                if now
                    .refuse_until
                    .is_some_and(|until| tokio::time::Instant::now() < until)
                {
                    drop(client);
                    continue;
                }
                tokio::spawn(carry(client, target, now.epoch, watch.clone()));
            }
        });
        Self { addr, state, task }
    }

    /// `ws://ADDR/` for clients.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Closes every connection now and refuses new ones for `refuse_for`.
    pub fn cut(&self, refuse_for: Duration) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.failure = Failure::Cut;
            s.refuse_until = Some(tokio::time::Instant::now() + refuse_for);
        });
    }

    /// Stops carrying anything on the current connections, leaving them open; new
    /// connections work.
    pub fn black_hole(&self) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.failure = Failure::BlackHole;
            s.refuse_until = None;
        });
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one connection until the proxy fails it (or either side closes).
async fn carry(
    mut client: TcpStream,
    target: std::net::SocketAddr,
    epoch: u64,
    mut watch: tokio::sync::watch::Receiver<ProxyState>,
) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let failed = async {
        loop {
            if watch.changed().await.is_err() {
                return None;
            }
            let now = *watch.borrow();
            if now.epoch != epoch {
                return Some(now.failure);
            }
        }
    };
    let failure = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        failure = failed => failure,
    };
    if failure == Some(Failure::BlackHole) {
        // Hold both sockets, carrying nothing, until the proxy goes away.
        while watch.changed().await.is_ok() {}
    }
}
