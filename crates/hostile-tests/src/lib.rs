//! The harness of the hostile-input suite (`tests/hostile.rs`): the platform's real binaries
//! started as processes on loopback, raw WebSocket and HTTP peers that send whatever a hostile
//! client would, and after every case the checks the suite promises:
//!
//! - the attacked client got its documented error or clean close (the case asserts that);
//! - the topic server's `/healthz` answers;
//! - a concurrent subscriber (the *canary*, on its own source address) keeps receiving a
//!   steady tick: the longest publish→receive latency during the case stays within a bound;
//! - the attacked process is still running and its resident memory stays under a cap.
//!
//! Every case becomes a row of a Markdown table (input, expected, observed, canary latency,
//! RSS), written to `hostile-report.md` beside the binaries, which `docs/reliability.md`
//! reproduces.
//!
//! The processes themselves are [`Service`]s of `service_kit::testing::process`, shared with
//! the chaos driver (`crates/chaos`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long one expected event may take.
pub const STEP: Duration = Duration::from_secs(5);
/// Longest time one case may take.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// The loopback address the suite's own well-behaved clients (the canary) use; attackers use
/// others, so per-address limits they hit do not touch the canary.
pub const CANARY_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

/// A loopback source address for attacker number `n` (127.0.1.n).
pub fn attacker(n: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, n))
}

/// Where the binaries under test are: `$HOSTILE_BIN_DIR` when set (`scripts/test.sh` points it
/// at the release build, what users run: the latency bounds are about the product, not a
/// debug build), else beside the test binary.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HOSTILE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/hostile-… → target/<profile>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .context("the test binary has no target directory")
}

pub use service_kit::testing::process::{Ready, Service, ServiceSpec};

/// Starts one of the workspace's binaries from [`bin_dir`] with `args`, waiting until it is
/// ready as `ready` says (it logs in JSON: its address, or a message).
pub async fn service(name: &str, args: &[String], ready: Ready) -> anyhow::Result<Service> {
    let spec = ServiceSpec::new(name, binary(name)?, ready).args(args);
    Ok(Service::start(spec).await?)
}

/// The path of one of the workspace's binaries in [`bin_dir`].
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the binaries first (scripts/test.sh runs cargo build --release --bins and sets HOSTILE_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}

/// Connects a TCP socket to `addr` from the loopback address `source`.
pub async fn tcp(
    addr: SocketAddr,
    source: IpAddr,
    recv_buffer: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = tokio::time::timeout(STEP, socket.connect(addr))
        .await
        .context("connect timed out")??;
    Ok(stream)
}

/// What a peer saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A protocol message (one of possibly several in a frame).
    Message(Value),
    /// A binary frame.
    Binary(usize),
    /// A close frame with its code and reason.
    Close(u16, String),
    /// The connection ended without a close frame (the error, if any).
    Ended(String),
    /// Nothing within the wait.
    Nothing,
}

/// A raw WebSocket peer: sends anything, reads whatever comes.
pub struct Peer {
    ws: WebSocketStream<TcpStream>,
    pending: VecDeque<Value>,
    next_cid: u64,
}

impl Peer {
    /// Opens a WebSocket to `url` from `source`.
    pub async fn open(url: &str, source: IpAddr) -> anyhow::Result<Self> {
        Self::open_with(url, source, None, None).await
    }

    /// Opens a WebSocket with an optional small receive buffer and WebSocket settings.
    pub async fn open_with(
        url: &str,
        source: IpAddr,
        recv_buffer: Option<u32>,
        config: Option<WebSocketConfig>,
    ) -> anyhow::Result<Self> {
        let authority = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .context("no authority")?;
        let addr: SocketAddr = authority.parse()?;
        let stream = tcp(addr, source, recv_buffer).await?;
        let config = config
            .unwrap_or_default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio::time::timeout(
            STEP,
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
        )
        .await
        .context("WebSocket handshake timed out")??;
        Ok(Self {
            ws,
            pending: VecDeque::new(),
            next_cid: 1,
        })
    }

    /// Opens and completes the protocol handshake.
    pub async fn connected(url: &str, source: IpAddr) -> anyhow::Result<Self> {
        let mut peer = Self::open(url, source).await?;
        peer.send_json(&json!({"type":"connect","version":1}))
            .await?;
        match peer.next(STEP).await {
            Event::Message(m) if m["type"] == "connected" => Ok(peer),
            other => bail!("expected connected, got {other:?}"),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends a JSON message as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> anyhow::Result<()> {
        self.send_text(value.to_string()).await
    }

    /// Sends any frame.
    pub async fn send_raw(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// Queues a frame without flushing (to send many in one write).
    pub async fn feed(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.feed(message).await?;
        Ok(())
    }

    /// Flushes what was fed.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.ws.flush().await?;
        Ok(())
    }

    /// The underlying stream, for sending raw bytes.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.ws.get_mut()
    }

    /// The next event within `within`.
    pub async fn next(&mut self, within: Duration) -> Event {
        if let Some(m) = self.pending.pop_front() {
            return Event::Message(m);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Event::Nothing,
                Ok(frame) => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    for line in text.as_str().split('\n').filter(|l| !l.is_empty()) {
                        match serde_json::from_str(line) {
                            Ok(v) => self.pending.push_back(v),
                            Err(e) => self.pending.push_back(json!({"unparsable": e.to_string()})),
                        }
                    }
                    if let Some(m) = self.pending.pop_front() {
                        return Event::Message(m);
                    }
                }
                Some(Ok(Message::Binary(b))) => return Event::Binary(b.len()),
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Event::Close(f.code.into(), f.reason.to_string()),
                        None => Event::Close(1005, String::new()),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Event::Ended(e.to_string()),
                None => return Event::Ended("end of stream".to_owned()),
            }
        }
    }

    /// Sends a request with a fresh cid and returns the reply with that cid (or the first
    /// `error` without one), skipping topic updates.
    pub async fn request(&mut self, mut request: Value) -> anyhow::Result<Value> {
        let cid = self.next_cid;
        self.next_cid += 1;
        request["cid"] = json!(cid);
        self.send_json(&request).await?;
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Event::Message(m) if m["cid"] == json!(cid) => return Ok(m),
                Event::Message(m) if m["type"] == "error" && m.get("cid").is_none() => {
                    return Ok(m);
                }
                Event::Message(_) => {}
                other => bail!("no reply to {request}: {other:?}"),
            }
        }
    }

    /// Sends a request and expects `ok`.
    pub async fn ok(&mut self, request: Value) -> anyhow::Result<()> {
        let reply = self.request(request.clone()).await?;
        if reply["type"] != "ok" {
            bail!("{request} answered {reply}");
        }
        Ok(())
    }

    /// Waits for the close (skipping messages); returns its code and reason, or what happened.
    pub async fn close_code(&mut self, within: Duration) -> Result<(u16, String), Event> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Event::Message(_) | Event::Binary(_) => {}
                Event::Close(code, reason) => return Ok((code, reason)),
                other => return Err(other),
            }
        }
    }
}

/// Sends raw bytes to an HTTP port from `source` and reads the answer until the server closes
/// or `within` passes. Returns the response text (lossy UTF-8) and whether the server closed.
pub async fn http_raw(
    addr: SocketAddr,
    source: IpAddr,
    request: &[u8],
    within: Duration,
) -> anyhow::Result<(String, bool)> {
    let mut stream = tcp(addr, source, None).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 16 * 1024 * 1024 {
                    break false;
                }
            }
            Ok(Err(_)) => break true,
        }
    };
    Ok((String::from_utf8_lossy(&out).into_owned(), closed))
}

/// `GET path` over a fresh connection; returns (status, head, body).
pub async fn http_get(
    addr: SocketAddr,
    source: IpAddr,
    path: &str,
) -> anyhow::Result<(u16, String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    let (text, _) = http_raw(addr, source, request.as_bytes(), STEP).await?;
    parse_response(&text)
}

/// Splits an HTTP response into (status, lower-cased head, body).
pub fn parse_response(text: &str) -> anyhow::Result<(u16, String, String)> {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {:?}", &text[..text.len().min(200)]))?;
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// The value of a metric in a `/metrics` body, summed over its label sets (0 when absent).
pub fn metric(body: &str, name: &str) -> f64 {
    service_kit::metrics_text::sum_of(body, name).unwrap_or(0.0)
}

/// Latency bookkeeping of the canary.
#[derive(Default)]
struct Ticks {
    sent: HashMap<i64, Instant>,
    /// Longest publish→receive latency since the last reset.
    worst: Duration,
    /// Ticks received since the last reset.
    received: u64,
    last_received: Option<Instant>,
}

/// A well-behaved subscriber on its own source address that receives a tick every 20 ms,
/// published by a well-behaved publisher: the measure of whether an attack stalls others.
pub struct Canary {
    ticks: Arc<Mutex<Ticks>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Interval between canary ticks.
const TICK: Duration = Duration::from_millis(20);

impl Canary {
    /// Starts the canary against the topic server at `url`, on topic `canary/tick`.
    pub async fn start(url: &str) -> anyhow::Result<Self> {
        let mut publisher = Peer::connected(url, CANARY_ADDRESS).await?;
        publisher
            .ok(
                json!({"type":"add","path":"canary/tick","topicType":"INT64",
                       "properties":{"CONFLATION":"off"},"value":0}),
            )
            .await?;
        let mut subscriber = Peer::connected(url, CANARY_ADDRESS).await?;
        subscriber
            .ok(json!({"type":"subscribe","selector":">canary/tick"}))
            .await?;
        let ticks: Arc<Mutex<Ticks>> = Arc::default();
        let sending = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                let mut n: i64 = 1;
                let mut interval = tokio::time::interval(TICK);
                loop {
                    interval.tick().await;
                    ticks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .sent
                        .insert(n, Instant::now());
                    let set = json!({"type":"set","cid":n,"path":"canary/tick","value":n});
                    if publisher.send_json(&set).await.is_err() {
                        return;
                    }
                    // Read the replies so the publisher's queue never fills.
                    while let Event::Message(_) = publisher.next(Duration::from_millis(1)).await {}
                    n += 1;
                }
            })
        };
        let receiving = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    match subscriber.next(Duration::from_secs(3600)).await {
                        Event::Message(m) => {
                            if let Some(v) = m.get("v").and_then(Value::as_i64) {
                                let mut t = ticks.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(sent) = t.sent.remove(&v) {
                                    let latency = sent.elapsed();
                                    t.worst = t.worst.max(latency);
                                }
                                t.received += 1;
                                t.last_received = Some(Instant::now());
                            }
                        }
                        Event::Nothing => {}
                        _ => return,
                    }
                }
            })
        };
        Ok(Self {
            ticks,
            tasks: vec![sending, receiving],
        })
    }

    /// Starts a new measurement window.
    pub fn reset(&self) {
        let mut t = self.ticks.lock().unwrap_or_else(|e| e.into_inner());
        t.worst = Duration::ZERO;
        t.received = 0;
        // Ticks sent long ago and never received count as a stall from now on.
        let now = Instant::now();
        for sent in t.sent.values_mut() {
            *sent = (*sent).max(now - Duration::from_millis(1));
        }
    }

    /// The worst latency since the reset, counting ticks still outstanding (a tick sent and not
    /// received is as late as it is old), after making sure fresh ticks arrive.
    pub async fn worst_latency(&self) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + STEP;
        loop {
            {
                let t = self.ticks.lock().unwrap_or_else(|e| e.into_inner());
                let fresh = t
                    .last_received
                    .is_some_and(|at| at.elapsed() < Duration::from_millis(100));
                if t.received > 0 && fresh {
                    let outstanding = t
                        .sent
                        .values()
                        .map(Instant::elapsed)
                        .filter(|age| *age > TICK * 2)
                        .max()
                        .unwrap_or_default();
                    return Ok(t.worst.max(outstanding));
                }
            }
            if Instant::now() > deadline {
                bail!("the canary receives nothing");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A masked WebSocket frame as a client must send it, built by hand so a case can send what a
/// WebSocket library refuses to (invalid UTF-8, odd fragmentation).
pub fn raw_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// Case number and name.
    pub case: String,
    /// What was attacked.
    pub surface: &'static str,
    /// What the attacker sent.
    pub input: String,
    /// What the documentation promises.
    pub expected: String,
    /// What happened.
    pub observed: String,
    /// The canary's worst latency during the case, in ms.
    pub canary_ms: u128,
    /// The topic server's RSS after the case, in MiB.
    pub rss_mib: f64,
    /// Whether every check held.
    pub passed: bool,
}

/// Renders rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| # | surface | input | expected | observed | canary worst | server RSS | result |\n|---|---|---|---|---|---|---|---|\n",
    );
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ms | {:.0} MiB | {} |\n",
            cell(&row.case),
            row.surface,
            cell(&row.input),
            cell(&row.expected),
            cell(&row.observed),
            row.canary_ms,
            row.rss_mib,
            if row.passed { "pass" } else { "**FAIL**" }
        ));
    }
    out
}

/// Runs `case` with a time limit, turning a panic or timeout into an error.
pub async fn bounded<F>(case: F) -> anyhow::Result<String>
where
    F: Future<Output = anyhow::Result<String>> + Send + 'static,
{
    match tokio::time::timeout(CASE_TIMEOUT, tokio::spawn(case)).await {
        Err(_) => bail!("the case took longer than {CASE_TIMEOUT:?}"),
        Ok(Err(join)) => bail!("the case panicked: {join}"),
        Ok(Ok(result)) => result,
    }
}
