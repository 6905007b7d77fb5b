//! The one publisher of a run, speaking each system's own publish path: the topic server's
//! `set`, Redis `PUBLISH` (the bridges), NATS `PUB` over TCP, or a text frame to the limit
//! server's `/publish` socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::{Config, System};
use crate::plan::TopicPlan;
use crate::subscriber::{nats_subject, socket_addr, websocket_config};

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A socket error.
    #[error("publisher I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A WebSocket error.
    #[error("publisher websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// A Redis error.
    #[error("publisher redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The server refused the set-up (topic creation, say).
    #[error("publisher set-up refused: {0}")]
    Refused(String),
    /// Bad URL or settings.
    #[error("publisher configuration: {0}")]
    Config(String),
}

type WsSink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Errors the server reported asynchronously (replies to `set`, NATS `-ERR`).
#[derive(Debug, Default)]
struct Rejections {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Rejections {
    fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(what);
    }
}

enum Kind {
    Topic {
        sink: WsSink,
        cid: u64,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
    },
    Nats {
        writer: OwnedWriteHalf,
    },
    /// The limit and uws servers: a text frame on `/publish`.
    Frames {
        sink: WsSink,
    },
}

/// A connected publisher.
pub struct Publisher {
    kind: Kind,
    /// Each topic of the plan as this system names it: the topic server's path (as a JSON
    /// string), the NATS subject, the Redis channel, or the `TOPIC\n` prefix of a frame to the
    /// limit and uws servers (empty on the single topic: those frames go to everyone).
    targets: Vec<String>,
    rejections: Arc<Rejections>,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

async fn websocket(url: &str) -> Result<WebSocketStream<TcpStream>, PublishError> {
    let addr = socket_addr(url).map_err(|e| PublishError::Config(e.to_string()))?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(websocket_config())).await?;
    Ok(ws)
}

/// Reads the next text frame, skipping control frames; `None` when the connection ends.
async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> Option<String> {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
    None
}

/// Waits for a reply whose `type` is `ok`/`connected` (success) or `error` (refusal).
async fn expect_ok(ws: &mut WebSocketStream<TcpStream>, what: &str) -> Result<(), PublishError> {
    while let Some(frame) = next_text(ws).await {
        for message in frame.split('\n') {
            if message.starts_with(r#"{"type":"ok""#)
                || message.starts_with(r#"{"type":"connected""#)
            {
                return Ok(());
            }
            if message.starts_with(r#"{"type":"error""#) {
                return Err(PublishError::Refused(format!("{what}: {message}")));
            }
        }
    }
    Err(PublishError::Refused(format!(
        "{what}: connection closed before a reply"
    )))
}

impl Publisher {
    /// Connects the publisher for `config.system` and prepares it (creates the topics, …).
    pub async fn connect(config: &Config, plan: &TopicPlan) -> Result<Self, PublishError> {
        let rejections = Arc::new(Rejections::default());
        let target = config.publish_target().to_owned();
        let names = (0..plan.len()).map(|t| plan.name(t));
        let targets: Vec<String> = match config.system {
            System::TopicServer => names
                .map(|n| serde_json::Value::from(n).to_string())
                .collect(),
            System::Nats => names.map(nats_subject).collect(),
            System::Limit | System::Uws if plan.is_single() => vec![String::new()],
            System::Limit | System::Uws => names.map(|n| format!("{n}\n")).collect(),
            _ => names.map(str::to_owned).collect(),
        };
        let (kind, reader) = match config.system {
            System::TopicServer => {
                let mut ws = websocket(&target).await?;
                // Version 1 on purpose: the publisher needs neither recovery nor sequence
                // numbers, and version 1 has no heartbeats for its write-only loop to answer.
                ws.send(Message::text(r#"{"type":"connect","version":1}"#))
                    .await?;
                expect_ok(&mut ws, "connect").await?;
                for topic in 0..plan.len() {
                    let add = serde_json::json!({
                        "type": "add", "cid": 1, "path": plan.name(topic), "topicType": "JSON",
                    });
                    ws.send(Message::text(add.to_string())).await?;
                    expect_ok(&mut ws, "add topic").await?;
                }
                let (sink, mut stream) = ws.split();
                let seen = rejections.clone();
                let reader = tokio::spawn(async move {
                    while let Some(Ok(message)) = stream.next().await {
                        if let Message::Text(text) = message {
                            for line in text.as_str().split('\n') {
                                if line.starts_with(r#"{"type":"error""#) {
                                    seen.record(line.to_owned());
                                }
                            }
                        }
                    }
                });
                (Kind::Topic { sink, cid: 1 }, Some(reader))
            }
            System::RedisWsBridge | System::NodeBridge => {
                let url = config.publish_url.clone().ok_or_else(|| {
                    PublishError::Config("--publish-url redis://… is required".into())
                })?;
                let client = redis::Client::open(url)?;
                let conn = client.get_multiplexed_async_connection().await?;
                (Kind::Redis { conn }, None)
            }
            System::Nats => {
                let url = config.publish_url.clone().ok_or_else(|| {
                    PublishError::Config("--publish-url nats://127.0.0.1:PORT is required".into())
                })?;
                let addr = socket_addr(&url).map_err(|e| PublishError::Config(e.to_string()))?;
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (mut read, mut writer) = stream.into_split();
                writer
                    .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                    .await?;
                let seen = rejections.clone();
                // Runs are far shorter than the server's ping interval (2 min), so the reader
                // only has to notice errors.
                let reader = tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(at) = text.find("-ERR") {
                            seen.record(text[at..].lines().next().unwrap_or("").to_owned());
                        }
                    }
                });
                (Kind::Nats { writer }, Some(reader))
            }
            System::Limit | System::Uws => {
                let mut url =
                    url::Url::parse(&target).map_err(|e| PublishError::Config(e.to_string()))?;
                url.set_path("/publish");
                let (sink, mut stream) = websocket(url.as_str()).await?.split();
                let reader =
                    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                (Kind::Frames { sink }, Some(reader))
            }
            System::Redis => {
                return Err(PublishError::Config(
                    "--system redis only observes (modes idle/observe)".into(),
                ));
            }
        };
        Ok(Self {
            kind,
            targets,
            rejections,
            reader,
        })
    }

    /// Publishes one payload (JSON text) on topic `topic` of the plan.
    pub async fn publish(&mut self, topic: usize, payload: &str) -> Result<(), PublishError> {
        let target = &self.targets[topic % self.targets.len()];
        match &mut self.kind {
            Kind::Topic { sink, cid } => {
                *cid += 1;
                let set =
                    format!(r#"{{"type":"set","cid":{cid},"path":{target},"value":{payload}}}"#);
                sink.send(Message::text(set)).await?;
            }
            Kind::Redis { conn } => {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(target.as_str())
                    .arg(payload)
                    .query_async(conn)
                    .await?;
            }
            Kind::Nats { writer } => {
                let frame = format!("PUB {target} {}\r\n{payload}\r\n", payload.len());
                writer.write_all(frame.as_bytes()).await?;
            }
            Kind::Frames { sink } => {
                sink.send(Message::text(format!("{target}{payload}")))
                    .await?
            }
        }
        Ok(())
    }

    /// Publish requests the server refused so far, and the first refusal.
    pub fn rejections(&self) -> (u64, Option<String>) {
        let first = self
            .rejections
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.rejections.count.load(Ordering::Relaxed), first)
    }
}

/// The publishers of a run (`--publishers`), used in turn.
#[derive(Debug)]
pub struct Publishers {
    all: Vec<Publisher>,
    next: usize,
    /// A publish was cut off half-way (the server stopped reading) on a connection that cannot
    /// take up again where it stopped (NATS's raw TCP writes): nothing more is published.
    stalled: bool,
}

impl Publishers {
    /// Connects and prepares `config.publishers` publishers (at least one), one after another.
    pub async fn connect(config: &Config, plan: &TopicPlan) -> Result<Self, PublishError> {
        let mut all = Vec::with_capacity(config.publishers.max(1));
        for _ in 0..config.publishers.max(1) {
            all.push(Publisher::connect(config, plan).await?);
        }
        Ok(Self {
            all,
            next: 0,
            stalled: false,
        })
    }

    /// Publishes one payload on topic `topic` through the next publisher.
    pub async fn publish(&mut self, topic: usize, payload: &str) -> Result<(), PublishError> {
        let index = self.next;
        self.next = (index + 1) % self.all.len();
        self.all[index].publish(topic, payload).await
    }

    /// A publish was cut off before it completed. WebSocket frames and Redis commands are
    /// queued whole before they are written, so those publishers go on with the next message;
    /// a NATS publisher may have written half a `PUB` and is stopped for good
    /// ([`Self::stalled`]).
    pub fn mark_cut_off(&mut self) {
        if self.all.iter().any(|p| matches!(p.kind, Kind::Nats { .. })) {
            self.stalled = true;
        }
    }

    /// Whether a publish was cut off where no further message may follow it.
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// Requests refused so far over every publisher, and the first refusal seen.
    pub fn rejections(&self) -> (u64, Option<String>) {
        self.all
            .iter()
            .map(Publisher::rejections)
            .fold((0, None), |(count, first), (n, one)| {
                (count + n, first.or(one))
            })
    }
}
