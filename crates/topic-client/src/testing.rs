//! A scripted, single-connection fake topic server for tests (of this crate and of `topic-cli`):
//! it speaks the wire protocol from `diffusion_core::protocol` so clients can be tested without
//! the real server, including against a server that misbehaves. Only with the `testing` feature.

#![allow(clippy::unwrap_used)] // test code: a failure should stop the test

use std::future::Future;
use std::time::Duration;

use diffusion_core::protocol::{
    ClientMessage, SUPPORTED_VERSIONS, ServerMessage, negotiate_version, decode_client_message,
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
