//! Test harness: an in-process server on 127.0.0.1:0 and a raw WebSocket client that speaks the
//! protocol by hand (tokio-tungstenite, not the project's client library).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use diffusion_core::protocol::{ServerMessage, decode_sequenced_message, split_frame};
use diffusion_core::{TopicType, TopicValue};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;
use topic_server::{Config, ServerStats};

/// How long any single expected event may take.
pub const STEP: Duration = Duration::from_secs(5);

/// A dashboard directory made for one test (node_modules is git-ignored, so it cannot be a
/// checked-in fixture).
pub fn make_web_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "topic-server-test-web-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let files = [
        ("index.html", "<!doctype html><title>dashboard</title>\n"),
        ("js/main.js", "export const main = 1;\n"),
        ("css/style.css", "body { margin: 0 }\n"),
        (
            "node_modules/uplot/dist/uPlot.iife.min.js",
            "var uPlot = 1;\n",
        ),
        // Development files that sit beside the page and must never be served.
        ("package.json", "{\"private\": true}\n"),
        ("README.md", "# dashboard\n"),
        ("test/page.test.mjs", "// test\n"),
        ("node_modules/.package-lock.json", "{}\n"),
        ("node_modules/uplot/package.json", "{}\n"),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The `/metrics` listener.
    pub metrics_addr: SocketAddr,
    pub stats: ServerStats,
    pub web_dir: PathBuf,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        service_kit::logging::init(service_kit::LogFormat::Text);
        let web_dir = make_web_dir();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            web_dir: web_dir.clone(),
            ..Config::default()
        };
        tweak(&mut config);
        let server = topic_server::bind(config).await.unwrap();
        let addr = server.local_addr();
        let metrics_addr = server.metrics_addr();
        let stats = server.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
            metrics_addr,
            stats,
            web_dir,
            shutdown,
            task,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Triggers shutdown and waits (bounded) for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop in time")
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&self.web_dir);
    }

    /// A connected (handshaken) client.
    pub async fn client(&self) -> Client {
        let mut client = Client::open(&self.ws_url()).await;
        client.handshake().await;
        client
    }
}

/// What the client saw next.
#[derive(Debug)]
pub enum Event {
    Message(ServerMessage),
    Closed(Option<CloseFrame>),
}

/// A raw protocol client.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    pending: VecDeque<ServerMessage>,
    next_cid: u64,
    /// Every version-2 sequence number received, in arrival order.
    pub seqs: Vec<u64>,
    /// Heartbeats received (they are not queued as messages).
    pub heartbeats: usize,
    /// Largest number of messages seen in one frame.
    pub max_messages_per_frame: usize,
    /// Text frames received.
    pub frames: usize,
}

impl Client {
    /// Opens a WebSocket to `url` (no protocol handshake yet).
    pub async fn open(url: &str) -> Self {
        Self::open_with_recv_buffer(url, None).await
    }

    /// Opens a WebSocket, optionally with a small socket receive buffer (a slow reader's
    /// backlog then piles up in the server, not in the kernel).
    pub async fn open_with_recv_buffer(url: &str, recv_buffer: Option<u32>) -> Self {
        let authority = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let addr: SocketAddr = authority.parse().unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = tokio::time::timeout(STEP, socket.connect(addr))
            .await
            .unwrap()
            .unwrap();
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::client_async(url, stream))
            .await
            .unwrap()
            .unwrap();
        Self {
            ws,
            pending: VecDeque::new(),
            next_cid: 0,
            seqs: Vec::new(),
            heartbeats: 0,
            max_messages_per_frame: 0,
            frames: 0,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends `connect` and expects `connected`.
    pub async fn handshake(&mut self) {
        self.send_json(&json!({"type":"connect","version":1})).await;
        match self.next().await {
            ServerMessage::Connected {
                version, session, ..
            } => {
                assert_eq!(version, 1);
                assert!(!session.is_empty());
            }
            other => panic!("expected connected, got {other:?}"),
        }
    }

    /// The next event: a message or the close.
    pub async fn next_event(&mut self) -> Event {
        if let Some(m) = self.pending.pop_front() {
            return Event::Message(m);
        }
        loop {
            let frame = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("no message from the server in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let mut messages = Vec::new();
                    for part in split_frame(text.as_str()) {
                        let (message, seq) = decode_sequenced_message(part).unwrap();
                        self.seqs.extend(seq);
                        if message == ServerMessage::Heartbeat {
                            self.heartbeats += 1;
                        } else {
                            messages.push(message);
                        }
                    }
                    self.frames += 1;
                    self.max_messages_per_frame = self.max_messages_per_frame.max(messages.len());
                    self.pending.extend(messages);
                    if let Some(m) = self.pending.pop_front() {
                        return Event::Message(m);
                    }
                }
                Some(Ok(Message::Close(frame))) => return Event::Closed(frame),
                Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => return Event::Closed(None),
            }
        }
    }

    /// Sends a version-2 `connect` (with `extra` fields merged in) and returns `connected`.
    pub async fn handshake_v2(&mut self, extra: Value) -> ServerMessage {
        let mut hello = json!({"type":"connect","versions":[2,1]});
        if let (Some(fields), Some(more)) = (hello.as_object_mut(), extra.as_object()) {
            fields.extend(more.clone());
        }
        self.send_json(&hello).await;
        match self.next().await {
            message @ ServerMessage::Connected { .. } => message,
            other => panic!("expected connected, got {other:?}"),
        }
    }

    /// The next message; panics on close.
    pub async fn next(&mut self) -> ServerMessage {
        match self.next_event().await {
            Event::Message(m) => m,
            Event::Closed(frame) => panic!("connection closed: {frame:?}"),
        }
    }

    /// Expects the connection to close next; returns the close frame.
    pub async fn expect_close(&mut self) -> CloseFrame {
        match self.next_event().await {
            Event::Closed(Some(frame)) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Sends `request` with a fresh cid and returns its reply (ok, error, fetched, views or
    /// pong).
    /// Other messages that arrive first stay queued for `next`, in order.
    pub async fn request(&mut self, mut request: Value) -> ServerMessage {
        self.next_cid += 1;
        let cid = self.next_cid;
        request["cid"] = json!(cid);
        self.send_json(&request).await;
        let mut skipped = VecDeque::new();
        let reply = loop {
            let m = self.next().await;
            let reply_cid = match &m {
                ServerMessage::Ok { cid }
                | ServerMessage::Fetched { cid, .. }
                | ServerMessage::Views { cid, .. }
                | ServerMessage::Pong { cid } => Some(*cid),
                ServerMessage::Error { cid, .. } => *cid,
                _ => None,
            };
            if reply_cid == Some(cid) {
                break m;
            }
            skipped.push_back(m);
        };
        skipped.extend(self.pending.drain(..));
        self.pending = skipped;
        reply
    }

    /// Sends `request` and asserts it succeeded.
    pub async fn ok(&mut self, request: Value) {
        let reply = self.request(request.clone()).await;
        assert!(
            matches!(reply, ServerMessage::Ok { .. }),
            "{request} -> {reply:?}"
        );
    }

    /// Sends a `ping` and returns every message that arrives before its `pong`, in order
    /// (later ones stay queued for `next`). Every message the server queued for this session
    /// before the ping is among them.
    pub async fn until_pong(&mut self) -> Vec<ServerMessage> {
        self.next_cid += 1;
        let cid = self.next_cid;
        self.send_json(&json!({"type":"ping","cid":cid})).await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                ServerMessage::Pong { cid: got } if got == cid => return before,
                other => before.push(other),
            }
        }
    }

    /// Messages already received but not yet taken.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Proves the session is alive and everything before it has been delivered.
    pub async fn ping(&mut self) {
        let reply = self.request(json!({"type":"ping"})).await;
        assert!(matches!(reply, ServerMessage::Pong { .. }), "{reply:?}");
    }
}

/// A topic's id from a `subscribed` message, checking its path.
pub fn subscribed_id(message: &ServerMessage, expected_path: &str) -> u64 {
    match message {
        ServerMessage::Subscribed { id, path, .. } => {
            assert_eq!(path, expected_path);
            *id
        }
        other => panic!("expected subscribed to {expected_path}, got {other:?}"),
    }
}

/// The value of a `value` message for topic `expected_id`.
pub fn value_of(message: &ServerMessage, expected_id: u64) -> Value {
    match message {
        ServerMessage::Value { id, value } => {
            assert_eq!(*id, expected_id);
            value.clone()
        }
        other => panic!("expected a value for topic {expected_id}, got {other:?}"),
    }
}

/// Polls `/metrics` until a line starting with `prefix` appears (bounded).
pub async fn wait_for_metric(addr: SocketAddr, prefix: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let prefix = prefix.to_owned();
    service_kit::testing::wait_until(STEP, || {
        let prefix = prefix.clone();
        async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return false;
            };
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_err() {
                return false;
            }
            let mut response = String::new();
            if stream.read_to_string(&mut response).await.is_err() {
                return false;
            }
            response.lines().any(|l| l.starts_with(&prefix))
        }
    })
    .await
    .unwrap();
}

/// What a client holds per topic, rebuilt from `subscribed`, `value` and `delta` messages the way
/// a real client must: canonical bytes of the last value (compact JSON with sorted keys for JSON,
/// UTF-8 for STRING, raw bytes for BINARY), with each delta applied to them.
#[derive(Default)]
pub struct Held {
    types: HashMap<u64, TopicType>,
    paths: HashMap<u64, String>,
    canonical: HashMap<u64, Vec<u8>>,
    /// `value` messages seen, per topic id.
    pub values: HashMap<u64, usize>,
    /// `delta` messages seen, per topic id.
    pub deltas: HashMap<u64, usize>,
}

impl Held {
    /// Takes one message into account; returns the topic id for `value`/`delta` messages.
    /// Panics when a delta does not apply: the server sent a delta the client cannot use.
    pub fn apply(&mut self, message: &ServerMessage) -> Option<u64> {
        match message {
            ServerMessage::Subscribed {
                id,
                path,
                topic_type,
                ..
            } => {
                self.types.insert(*id, *topic_type);
                self.paths.insert(*id, path.clone());
                self.canonical.remove(id);
                None
            }
            ServerMessage::Unsubscribed { id, .. } => {
                self.canonical.remove(id);
                None
            }
            ServerMessage::Value { id, value } => {
                let topic_type = self.types[id];
                match TopicValue::from_json(topic_type, value).unwrap() {
                    Some(v) => self.canonical.insert(*id, v.canonical().to_vec()),
                    None => self.canonical.remove(id),
                };
                *self.values.entry(*id).or_default() += 1;
                Some(*id)
            }
            ServerMessage::Delta { id, delta } => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(delta)
                    .unwrap();
                let base = self
                    .canonical
                    .get(id)
                    .unwrap_or_else(|| panic!("delta for topic {id} without a held value"));
                let new = diffusion_core::delta::apply(base, &raw, 64 << 20)
                    .unwrap_or_else(|e| panic!("delta for topic {id} does not apply: {e}"));
                self.canonical.insert(*id, new.to_vec());
                *self.deltas.entry(*id).or_default() += 1;
                Some(*id)
            }
            _ => None,
        }
    }

    /// The value held for topic `id`, as JSON (`None`: no value).
    pub fn value(&self, id: u64) -> Option<Value> {
        let bytes = self.canonical.get(&id)?;
        let v = TopicValue::from_canonical(self.types[&id], bytes.clone().into()).unwrap();
        Some(v.to_json())
    }

    /// The canonical bytes held for topic `id`.
    pub fn canonical(&self, id: u64) -> Option<&[u8]> {
        self.canonical.get(&id).map(Vec::as_slice)
    }

    /// The id of the topic at `path`, once subscribed.
    pub fn id(&self, path: &str) -> Option<u64> {
        self.paths
            .iter()
            .find(|(_, p)| p.as_str() == path)
            .map(|(id, _)| *id)
    }
}

/// The canonical bytes of a JSON value: compact, keys sorted.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

impl TestServer {
    /// A WebSocket opened to the server and a version-1 `connect` sent with `extra` fields
    /// merged in (`principal`, `credentials`, `token`); returns the client and the server's
    /// reply (`connected`, or the `error` of a refused authentication).
    pub async fn client_with(&self, extra: Value) -> (Client, ServerMessage) {
        let mut client = Client::open(&self.ws_url()).await;
        let reply = client.handshake_with(extra).await;
        (client, reply)
    }
}

impl Client {
    /// Sends a version-1 `connect` with `extra` fields merged in and returns the reply
    /// (`connected` or `error`), whatever it is.
    pub async fn handshake_with(&mut self, extra: Value) -> ServerMessage {
        let mut hello = json!({"type":"connect","version":1});
        if let (Some(fields), Some(more)) = (hello.as_object_mut(), extra.as_object()) {
            fields.extend(more.clone());
        }
        self.send_json(&hello).await;
        self.next().await
    }
}
