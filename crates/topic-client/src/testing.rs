//! Test helpers for clients of the topic server, only with the `testing` feature:
//! - a scripted, single-connection fake topic server (for this crate and `topic-cli`): it speaks
//!   the wire protocol from `diffusion_core::protocol` so clients can be tested without the real
//!   server, including against a server that misbehaves;
//! - [`CutProxy`], a TCP proxy that cuts or black-holes connections on command, to test
//!   reconnection and session recovery against the real server.

#![allow(clippy::unwrap_used)] // test code: a failure should stop the test

use std::future::Future;
use std::time::Duration;

use diffusion_core::protocol::{
    ClientMessage, SUPPORTED_VERSIONS, ServerMessage, decode_client_message, negotiate_version,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long the fake server waits for anything before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The server side of one accepted connection.
pub struct Peer {
    ws: WebSocketStream<TcpStream>,
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
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "closed by the test".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        // Let the client answer, so the close frame is not lost in a reset.
        let _ = tokio::time::timeout(PATIENCE, self.ws.next()).await;
    }

    /// Drops the connection abruptly (no close frame).
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// A fake server that accepts one connection and runs a script on it.
pub struct FakeServer {
    /// `ws://127.0.0.1:PORT/`.
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = tokio::time::timeout(PATIENCE, listener.accept())
                .await
                .expect("no client connected")
                .unwrap();
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            script(Peer { ws }).await;
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
