//! The harness of the bridge's integration tests: a bridge running in-process against a real
//! redis-server, real WebSocket clients, and small HTTP helpers.

#![allow(dead_code)]
// Test helpers outside `#[test]` functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use redis_ws_bridge::{Config, StatsHandle};
use service_kit::secret::Secret;
use service_kit::testing::{RedisServer, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const CHANNEL: &str = "app:notifications";
pub const STEP: Duration = Duration::from_secs(5);

/// A bridge running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub stats: StatsHandle,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn start(config: Config) -> Self {
        let bridge = redis_ws_bridge::bind(config).await.unwrap();
        let addr = bridge.local_addr();
        let stats = bridge.stats_handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bridge.run(shutdown.clone()));
        Self {
            addr,
            stats,
            shutdown,
            task,
        }
    }

    /// Starts with defaults against `redis` and waits until the subscription is up.
    pub async fn start_subscribed(redis: &RedisServer, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(redis);
        adjust(&mut config);
        let running = Self::start(config).await;
        running.wait_redis(true).await;
        running
    }

    pub async fn wait_redis(&self, connected: bool) {
        let stats = self.stats.clone();
        wait_until(STEP, move || {
            let stats = stats.clone();
            async move { stats.snapshot().redis_connected == connected }
        })
        .await
        .unwrap();
    }

    pub async fn wait_clients(&self, n: usize) {
        let stats = self.stats.clone();
        wait_until(STEP, move || {
            let stats = stats.clone();
            async move { stats.snapshot().clients == n }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "expected {n} clients, have {}",
                self.stats.snapshot().clients
            )
        });
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Connects presenting the publish token of [`test_config`] as a bearer token.
    pub async fn connect(&self) -> Ws {
        self.connect_with(self.request(Some(TOKEN))).await
    }

    /// Connects without presenting any token: a read-only client.
    pub async fn connect_read_only(&self) -> Ws {
        self.connect_with(self.request(None)).await
    }

    /// An upgrade request for this bridge, with `Authorization: Bearer TOKEN` when given.
    pub fn request(&self, bearer: Option<&str>) -> Request {
        let mut request = self.url().into_client_request().unwrap();
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        request
    }

    /// Connects with `request`, which the bridge must accept.
    pub async fn connect_with(&self, request: Request) -> Ws {
        let (ws, response) = timeout(STEP, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 101);
        ws
    }

    /// Tries to connect with `request`; returns the HTTP status of a refusal.
    pub async fn refused_status(&self, request: Request) -> u16 {
        match timeout(STEP, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            other => panic!("expected an HTTP refusal, got {other:?}"),
        }
    }

    /// Connects `n` clients and waits until the bridge has registered all of them.
    pub async fn connect_many(&self, n: usize) -> Vec<Ws> {
        let before = self.stats.snapshot().clients;
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(self.connect().await);
        }
        self.wait_clients(before + n).await;
        clients
    }

    /// Shuts the bridge down; each of `clients` must get the 1001 close, and the bridge must
    /// finish promptly.
    pub async fn stop(self, clients: impl IntoIterator<Item = Ws>) {
        self.shutdown.cancel();
        for mut ws in clients {
            let (code, reason, _) = expect_close(&mut ws).await;
            assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
        }
        timeout(Duration::from_secs(3), self.task)
            .await
            .expect("bridge stops in time")
            .unwrap()
            .unwrap();
    }
}

/// The publish token of [`test_config`].
pub const TOKEN: &str = "test-publish-token-0123456789";

/// A bridge on 127.0.0.1:0 against `redis`, publishing for clients that present [`TOKEN`].
pub fn test_config(redis: &RedisServer) -> Config {
    let mut config = Config::new(redis.url());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.publish_token = Some(Secret::new(TOKEN, "test").unwrap());
    config
}

pub async fn publish(redis: &RedisServer, payload: impl redis::ToRedisArgs) -> u64 {
    let mut conn = redis.connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The next data message (text or binary), skipping pings.
pub async fn next_data(ws: &mut Ws) -> Message {
    loop {
        let msg = timeout(STEP, ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Reads until the server's close frame, then finishes the close handshake; returns
/// (code, reason) and how many data messages came before the close.
pub async fn expect_close(ws: &mut Ws) -> (u16, String, usize) {
    let mut skipped = 0;
    loop {
        let msg = timeout(STEP, ws.next())
            .await
            .expect("close in time")
            .expect("stream open until the close frame")
            .expect("no error before the close frame");
        match msg {
            Message::Close(Some(frame)) => {
                // Polling once more sends our close reply; then the stream ends.
                let end = timeout(STEP, ws.next()).await.expect("stream ends in time");
                assert!(!matches!(end, Some(Ok(_))), "data after close: {end:?}");
                return (u16::from(frame.code), frame.reason.to_string(), skipped);
            }
            Message::Close(None) => panic!("close frame without a code"),
            Message::Text(_) | Message::Binary(_) => skipped += 1,
            _ => {}
        }
    }
}

/// A minimal HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = timeout(STEP, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(STEP, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub async fn healthz(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}
