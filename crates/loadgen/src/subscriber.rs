//! One subscriber connection: bind to a source address, connect, subscribe, then count and time
//! everything that arrives until the run ends.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use diffusion_core::protocol::{ClientMessage, Credentials};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::config::System;
use crate::decode::{Decoder, FrameOutcome};
use crate::payload::now_ns;
use crate::plan::TopicPlan;
use crate::report::AttemptReport;
use crate::stats::Stats;

/// Largest message a subscriber accepts (the topic server packs up to 64 KiB per frame).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a subscriber could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not one a subscriber can use.
    #[error("bad URL '{0}': {1}")]
    Url(String, String),
    /// Binding or connecting the TCP socket failed.
    #[error("tcp: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket handshake failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The server refused the subscription or closed the connection.
    #[error("subscribe refused: {0}")]
    Refused(String),
    /// Nothing within the connect timeout.
    #[error("timed out")]
    Timeout,
}

/// Why one connection attempt failed, as the connect-storm scenario counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// ECONNREFUSED.
    Refused,
    /// Reset, aborted or closed by the server before the subscription was confirmed.
    Reset,
    /// Not subscribed within the connect timeout.
    TimedOut,
    /// Anything else.
    Other,
}

fn io_failure(error: &std::io::Error) -> AttemptFailure {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => AttemptFailure::Refused,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => AttemptFailure::Reset,
        ErrorKind::TimedOut => AttemptFailure::TimedOut,
        _ => AttemptFailure::Other,
    }
}

impl ConnectError {
    /// How the attempt failed.
    pub fn failure(&self) -> AttemptFailure {
        match self {
            Self::Io(error) => io_failure(error),
            Self::WebSocket(tungstenite::Error::Io(error)) => io_failure(error),
            Self::WebSocket(
                tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
            ) => AttemptFailure::Reset,
            Self::Timeout => AttemptFailure::TimedOut,
            Self::Url(..) | Self::WebSocket(_) | Self::Refused(_) => AttemptFailure::Other,
        }
    }
}

/// Failed attempts by kind, and retries, counted by every connection task of a run.
#[derive(Debug, Default)]
pub struct AttemptCounters {
    refused: AtomicU64,
    reset: AtomicU64,
    timed_out: AtomicU64,
    other: AtomicU64,
    retries: AtomicU64,
}

impl AttemptCounters {
    /// Counts one failed attempt.
    pub fn failed(&self, failure: AttemptFailure) {
        let counter = match failure {
            AttemptFailure::Refused => &self.refused,
            AttemptFailure::Reset => &self.reset,
            AttemptFailure::TimedOut => &self.timed_out,
            AttemptFailure::Other => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt made again.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn report(&self) -> AttemptReport {
        AttemptReport {
            refused: self.refused.load(Ordering::Relaxed),
            reset: self.reset.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// How often and how soon a failed connection attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts made again after the first failed (0: none).
    pub retries: u32,
    /// Pause before the first retry; doubled for each further one, at most [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// Longest pause between two attempts of one connection.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl RetryPolicy {
    /// The pause before retry number `retry` (0 = the first).
    pub fn delay(&self, retry: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(MAX_BACKOFF)
    }

    /// The longest one connection may take over all its attempts, each bounded by `timeout`.
    pub fn worst_case(&self, timeout: Duration) -> Duration {
        let pauses: Duration = (0..self.retries).map(|r| self.delay(r)).sum();
        timeout.saturating_mul(self.retries + 1) + pauses
    }
}

/// One server subscribers connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The ws:// (or redis://) URL.
    pub url: String,
    /// The server's socket address, parsed from `url` once.
    pub addr: SocketAddr,
}

/// Where and how subscribers connect; shared by all of them.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// The system under test.
    pub system: System,
    /// The servers, taken in turn (never empty).
    pub servers: Vec<Server>,
    /// Topic selector (topic server).
    pub topic: String,
    /// NATS subject.
    pub subject: String,
    /// Redis channel (`--system redis`).
    pub channel: String,
    /// Time allowed for connect + subscribe.
    pub timeout: Duration,
    /// The run's topics and who receives which (one topic unless [`Self::with_plan`]).
    pub plan: Arc<TopicPlan>,
    /// Topic server: selectors of views' reference topics to subscribe to instead of the
    /// plan's topics (`{symbol}` stands for each of the subscriber's symbols); what arrives
    /// on them is counted, never owed ([`Self::with_view_selectors`]).
    pub view_selectors: Vec<String>,
}

impl SubscriberSpec {
    /// Reads the server addresses out of `urls` (at least one).
    pub fn new(
        system: System,
        urls: &[String],
        topic: &str,
        subject: &str,
        channel: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        if urls.is_empty() {
            return Err(ConnectError::Url(String::new(), "no URL".to_owned()));
        }
        let servers = urls
            .iter()
            .map(|url| {
                Ok(Server {
                    url: url.clone(),
                    addr: socket_addr(url)?,
                })
            })
            .collect::<Result<_, ConnectError>>()?;
        let single = match system {
            System::TopicServer => topic,
            System::Nats => subject,
            _ => channel,
        };
        Ok(Self {
            system,
            servers,
            topic: topic.to_owned(),
            subject: subject.to_owned(),
            channel: channel.to_owned(),
            timeout,
            plan: Arc::new(TopicPlan::single(single)),
            view_selectors: Vec::new(),
        })
    }

    /// The same, publishing on `plan`'s topics: each subscriber subscribes to its share.
    pub fn with_plan(mut self, plan: Arc<TopicPlan>) -> Self {
        self.plan = plan;
        self
    }

    /// The same, subscribing to views' reference topics (see [`Self::view_selectors`]).
    pub fn with_view_selectors(mut self, selectors: Vec<String>) -> Self {
        self.view_selectors = selectors;
        self
    }

    /// The server subscriber `index` connects to: the servers in turn (round-robin).
    pub fn server(&self, index: usize) -> &Server {
        &self.servers[index % self.servers.len()]
    }

    /// The topics of the plan subscriber `index` receives.
    pub fn topics_of(&self, index: usize) -> Vec<usize> {
        self.plan.topics_of(index)
    }

    /// The URL subscriber `index` opens: the server's, with `?topics=` for the limit and uws
    /// servers when it receives only some of the plan's topics.
    pub fn subscribe_url(&self, index: usize, topics: &[usize]) -> String {
        let url = &self.server(index).url;
        if self.plan.is_single() || !matches!(self.system, System::Limit | System::Uws) {
            return url.clone();
        }
        let list: Vec<String> = topics
            .iter()
            .map(|&t| percent_encode(self.plan.name(t)))
            .collect();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}topics={}", list.join(","))
    }

    /// What subscriber `index` sends to subscribe (`None`: the connection itself subscribes).
    pub fn subscribe_request(&self, topics: &[usize]) -> Result<Option<Vec<u8>>, ConnectError> {
        Ok(match self.system {
            System::TopicServer => {
                let selector = self.topic_server_selector(topics);
                let subscribe = serde_json::json!({
                    "type": "subscribe", "cid": 1, "selector": selector,
                });
                Some(subscribe.to_string().into_bytes())
            }
            System::Nats => {
                let mut request =
                    String::from("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
                if self.plan.is_single() {
                    request += &format!("SUB {} 1\r\n", self.subject);
                } else {
                    for (sid, &t) in topics.iter().enumerate() {
                        request +=
                            &format!("SUB {} {}\r\n", nats_subject(self.plan.name(t)), sid + 1);
                    }
                }
                request += "PING\r\n";
                Some(request.into_bytes())
            }
            System::Redis => Some(
                format!(
                    "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
                    self.channel.len(),
                    self.channel
                )
                .into_bytes(),
            ),
            // The bridges send to every connected socket; the limit and uws servers subscribe
            // a connection to what its URL asks for.
            System::RedisWsBridge | System::NodeBridge | System::Limit | System::Uws => None,
        })
    }

    /// The topic server's selector for a subscriber on `topics`: the one topic, or a selector
    /// set of path selectors (one per topic, or per view selector and symbol).
    pub fn topic_server_selector(&self, topics: &[usize]) -> String {
        if self.plan.is_single() && self.view_selectors.is_empty() {
            return self.topic.clone();
        }
        let parts: Vec<String> = if self.view_selectors.is_empty() {
            topics
                .iter()
                .map(|&t| format!(">{}", self.plan.name(t)))
                .collect()
        } else {
            topics
                .iter()
                .flat_map(|&t| {
                    self.view_selectors
                        .iter()
                        .map(move |template| template.replace("{symbol}", self.plan.symbol(t)))
                })
                .collect()
        };
        format!("#{}", parts.join("////"))
    }
}

/// The NATS subject of a topic path (`md/AAAA` → `md.AAAA`).
pub fn nats_subject(path: &str) -> String {
    path.replace('/', ".")
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query parameter.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The socket address in a ws://, redis:// or nats:// URL (IP literals only: loopback tests).
pub fn socket_addr(url: &str) -> Result<SocketAddr, ConnectError> {
    let bad = |why: &str| ConnectError::Url(url.to_owned(), why.to_owned());
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("no port"))?;
    let ip = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| bad("host must be an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The WebSocket settings loadgen uses: small buffers (thousands of connections share two
/// cores and one address space), generous message limits.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// A TCP connection to `addr` from `source` (port chosen by the kernel). SO_REUSEADDR lets the
/// kernel hand out ports still in TIME_WAIT from an earlier run's connections; without it, runs
/// in quick succession from the same source address run out of ports.
pub async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

enum Transport {
    Ws(Box<WebSocketStream<TcpStream>>),
    Tcp(TcpStream, BytesMut),
}

/// A connected, subscribed subscriber, ready to be run.
pub struct Subscriber {
    index: usize,
    transport: Transport,
    decoder: Decoder,
    outcome: FrameOutcome,
    latencies: Vec<u64>,
    last_seq: u64,
    progress: u64,
    stats: Arc<Stats>,
    /// Counted in `Stats::alive` (from a successful subscribe until the connection ends).
    counted: bool,
    /// The run plan, to tell how many published messages a sequence number owes this
    /// subscriber.
    plan: Arc<TopicPlan>,
    /// The plan's topics this subscriber receives, ascending (empty when it is on views:
    /// nothing is owed).
    topics: Vec<usize>,
    /// When the connection was opened (ns since the epoch): a value published before it is
    /// the topic's current value, sent because this subscriber subscribed, not an update it
    /// waited for, so its age is no latency.
    opened_ns: u64,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.counted {
            self.stats
                .connection_down(&self.topics, self.progress, None);
        }
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("index", &self.index)
            .field("progress", &self.progress)
            .finish()
    }
}

impl Subscriber {
    /// Connects subscriber `index` from `source` and subscribes it, within the spec's timeout.
    pub async fn open(
        spec: &SubscriberSpec,
        index: usize,
        source: Ipv4Addr,
        stats: Arc<Stats>,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(spec.timeout, Self::open_inner(spec, index, source, stats))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    /// [`Self::open`], tried again after a pause while attempts fail, as `policy` allows;
    /// every failed attempt and every retry is counted in `counters`.
    pub async fn open_with_retries(
        spec: &SubscriberSpec,
        index: usize,
        source: Ipv4Addr,
        stats: Arc<Stats>,
        policy: RetryPolicy,
        counters: &AttemptCounters,
    ) -> Result<Self, ConnectError> {
        let mut retry = 0;
        loop {
            match Self::open(spec, index, source, stats.clone()).await {
                Ok(subscriber) => return Ok(subscriber),
                Err(error) => {
                    counters.failed(error.failure());
                    if retry >= policy.retries {
                        return Err(error);
                    }
                    tokio::time::sleep(policy.delay(retry)).await;
                    counters.retried();
                    retry += 1;
                }
            }
        }
    }

    async fn open_inner(
        spec: &SubscriberSpec,
        index: usize,
        source: Ipv4Addr,
        stats: Arc<Stats>,
    ) -> Result<Self, ConnectError> {
        let server = spec.server(index);
        let topics = spec.topics_of(index);
        let opened_ns = now_ns();
        let stream = connect_from(source, server.addr).await?;
        let transport = if spec.system == System::Redis {
            Transport::Tcp(stream, BytesMut::with_capacity(16 * 1024))
        } else {
            let (ws, _response) = tokio_tungstenite::client_async_with_config(
                spec.subscribe_url(index, &topics),
                stream,
                Some(websocket_config()),
            )
            .await?;
            Transport::Ws(Box::new(ws))
        };
        let mut subscriber = Self {
            index,
            transport,
            decoder: Decoder::new(spec.system.protocol()),
            outcome: FrameOutcome::default(),
            latencies: Vec::new(),
            last_seq: 0,
            progress: 0,
            stats,
            counted: false,
            opened_ns,
            plan: spec.plan.clone(),
            topics: if spec.view_selectors.is_empty() {
                topics
            } else {
                Vec::new()
            },
        };
        subscriber.subscribe(spec, index).await?;
        // Alive from here, before anyone hears of the success, so that a phase starting right
        // after the last subscription counts every subscriber.
        subscriber.stats.connection_up(&subscriber.topics);
        subscriber.counted = true;
        Ok(subscriber)
    }

    async fn subscribe(&mut self, spec: &SubscriberSpec, index: usize) -> Result<(), ConnectError> {
        if spec.system == System::TopicServer {
            // Offers versions 2 and 1; the decoder follows whichever the server picks.
            let connect = ClientMessage::connect_v2(&Credentials::Anonymous, None);
            let connect = serde_json::to_string(&connect)
                .map_err(|e| ConnectError::Refused(e.to_string()))?;
            self.send_text(connect).await?;
        }
        let Some(request) = spec.subscribe_request(&spec.topics_of(index))? else {
            return Ok(());
        };
        match &mut self.transport {
            Transport::Ws(ws) => {
                let message = match String::from_utf8(request) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                ws.send(message).await?;
            }
            Transport::Tcp(stream, _) => stream.write_all(&request).await?,
        }
        loop {
            match self.next_chunk().await {
                Ok(true) if self.outcome.acked => return Ok(()),
                Ok(true) => {
                    if let Some(error) = &self.outcome.error {
                        return Err(ConnectError::Refused(error.to_string()));
                    }
                }
                Ok(false) => return Err(ConnectError::Refused("connection closed".into())),
                Err(error) => return Err(ConnectError::Refused(error)),
            }
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), ConnectError> {
        if let Transport::Ws(ws) = &mut self.transport {
            ws.send(Message::text(text)).await?;
        }
        Ok(())
    }

    /// Reads and processes the next frame (or TCP read). `Ok(false)`: the server closed.
    async fn next_chunk(&mut self) -> Result<bool, String> {
        match &mut self.transport {
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        self.process(text.as_bytes());
                        break;
                    }
                    Some(Ok(Message::Binary(data))) => {
                        self.process(&data);
                        break;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(match frame {
                            Some(f) => format!("closed by server: {} {}", f.code, f.reason),
                            None => "closed by server".to_owned(),
                        });
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.to_string()),
                    None => return Ok(false),
                }
            },
            Transport::Tcp(stream, buf) => {
                buf.clear();
                let n = stream.read_buf(buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(false);
                }
                let data = std::mem::take(buf);
                self.process(&data);
                if let Transport::Tcp(_, buf) = &mut self.transport {
                    *buf = data;
                }
            }
        }
        if let Some(seq) = self.outcome.ack.take() {
            self.send_text(format!(r#"{{"type":"ack","s":{seq}}}"#))
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Some(reply) = self.outcome.reply.take() {
            match &mut self.transport {
                Transport::Ws(ws) => ws
                    .send(Message::binary(reply))
                    .await
                    .map_err(|e| e.to_string())?,
                Transport::Tcp(stream, _) => {
                    stream.write_all(reply).await.map_err(|e| e.to_string())?
                }
            }
        }
        Ok(true)
    }

    fn process(&mut self, data: &[u8]) {
        self.outcome.clear();
        self.decoder.feed(data, &mut self.outcome);
        self.stats.frame(data.len(), self.outcome.messages);
        if let Some(error) = &self.outcome.error {
            self.stats.decode_error(error.to_string());
        }
        if self.outcome.stamps.is_empty() {
            return;
        }
        let base = self.stats.seq_base();
        let recording = self.stats.recording();
        let now = now_ns();
        let mut advanced = 0;
        self.latencies.clear();
        for stamp in &self.outcome.stamps {
            if stamp.seq <= base {
                continue; // a value retained from before this run
            }
            if recording && stamp.ts_ns >= self.opened_ns {
                self.latencies.push(now.saturating_sub(stamp.ts_ns) / 1000);
            }
            if stamp.seq > self.last_seq {
                let owed = |seq: u64| {
                    self.plan
                        .messages_for(&self.topics, seq.saturating_sub(base))
                };
                advanced += owed(stamp.seq) - owed(self.last_seq);
                self.last_seq = stamp.seq;
            }
        }
        self.progress += advanced;
        self.stats.advance(advanced);
        self.stats.record_latencies(self.index, &self.latencies);
    }

    /// Receives until `cancel` fires or the connection ends; keeps the shared counters up to
    /// date. The connection counts as alive from its subscription until this returns.
    pub async fn run(mut self, cancel: CancellationToken) {
        let reason = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.close_normally().await;
                    break None;
                }
                chunk = self.next_chunk() => match chunk {
                    Ok(true) => {}
                    Ok(false) => break Some("connection closed by server".to_owned()),
                    Err(error) => break Some(error),
                },
            }
        };
        self.counted = false;
        self.stats
            .connection_down(&self.topics, self.progress, reason);
    }

    /// Ends a WebSocket subscriber with a close frame (briefly waited for), as a client that is
    /// done does: a topic server keeps a session whose connection merely dropped for it to be
    /// resumed, and would go on queueing updates for it into the next run on the same server.
    async fn close_normally(&mut self) {
        if let Transport::Ws(ws) = &mut self.transport {
            let _ = tokio::time::timeout(CLOSE_WAIT, SinkExt::close(ws.as_mut())).await;
        }
    }
}

/// How long a subscriber waits for its close frame to go out when the run ends.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        use std::io::{Error, ErrorKind};
        let io = |kind| ConnectError::Io(Error::from(kind));
        assert_eq!(
            io(ErrorKind::ConnectionRefused).failure(),
            AttemptFailure::Refused
        );
        assert_eq!(
            io(ErrorKind::ConnectionReset).failure(),
            AttemptFailure::Reset
        );
        assert_eq!(
            ConnectError::WebSocket(tungstenite::Error::Io(Error::from(
                ErrorKind::UnexpectedEof
            )))
            .failure(),
            AttemptFailure::Reset
        );
        assert_eq!(ConnectError::Timeout.failure(), AttemptFailure::TimedOut);
        assert_eq!(
            ConnectError::Refused("no".into()).failure(),
            AttemptFailure::Other
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_bound() {
        let policy = RetryPolicy {
            retries: 3,
            backoff: Duration::from_millis(100),
        };
        assert_eq!(policy.delay(0), Duration::from_millis(100));
        assert_eq!(policy.delay(2), Duration::from_millis(400));
        assert_eq!(policy.delay(40), MAX_BACKOFF);
        assert_eq!(
            policy.worst_case(Duration::from_secs(1)),
            Duration::from_millis(4_700)
        );
    }

    #[tokio::test]
    async fn refused_attempts_are_retried_and_counted() {
        // A port nothing listens on: bound, then closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let urls = [format!("ws://127.0.0.1:{port}/")];
        let spec =
            SubscriberSpec::new(System::Uws, &urls, "t", "s", "c", Duration::from_secs(2)).unwrap();
        let stats = Arc::new(Stats::new(1).unwrap());
        let counters = AttemptCounters::default();
        let policy = RetryPolicy {
            retries: 2,
            backoff: Duration::from_millis(1),
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            Subscriber::open_with_retries(
                &spec,
                0,
                Ipv4Addr::LOCALHOST,
                stats.clone(),
                policy,
                &counters,
            ),
        )
        .await
        .unwrap();
        assert!(outcome.is_err());
        let report = counters.report();
        assert_eq!((report.refused, report.retries, report.failed()), (3, 2, 3));
        assert_eq!(stats.snapshot().alive, 0);
    }

    #[test]
    fn market_subscriptions_per_system() {
        let plan = Arc::new(TopicPlan::market("md", 4, 2).unwrap());
        let urls = ["ws://127.0.0.1:9/".to_owned()];
        let spec = |system| {
            SubscriberSpec::new(system, &urls, "t", "s", "c", Duration::ZERO)
                .unwrap()
                .with_plan(plan.clone())
        };
        let topics = plan.topics_of(1); // 1 and 3
        assert_eq!(topics, vec![1, 3]);
        assert_eq!(
            spec(System::Uws).subscribe_url(1, &topics),
            "ws://127.0.0.1:9/?topics=md%2FAAAB,md%2FAAAD"
        );
        assert_eq!(
            spec(System::TopicServer).topic_server_selector(&topics),
            "#>md/AAAB////>md/AAAD"
        );
        let nats = spec(System::Nats)
            .subscribe_request(&topics)
            .unwrap()
            .unwrap();
        let nats = String::from_utf8(nats).unwrap();
        assert!(
            nats.contains("SUB md.AAAB 1\r\nSUB md.AAAD 2\r\nPING\r\n"),
            "{nats}"
        );
        assert!(
            spec(System::Limit)
                .subscribe_request(&topics)
                .unwrap()
                .is_none()
        );
        let views = spec(System::TopicServer).with_view_selectors(vec![
            ">views/a/{symbol}".into(),
            "?views/b/{symbol}/.*".into(),
        ]);
        assert_eq!(
            views.topic_server_selector(&[0]),
            "#>views/a/AAAA////?views/b/AAAA/.*"
        );
        // One topic: the URL and selector are the configured ones.
        let single =
            SubscriberSpec::new(System::Uws, &urls, "bench/t", "s", "c", Duration::ZERO).unwrap();
        assert_eq!(single.subscribe_url(0, &[0]), urls[0]);
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn urls_give_socket_addresses() {
        assert_eq!(
            socket_addr("ws://127.0.0.1:8080/ws").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            socket_addr("redis://localhost:6379/").unwrap(),
            "127.0.0.1:6379".parse().unwrap()
        );
        assert!(matches!(
            socket_addr("ws://example.invalid:1/"),
            Err(ConnectError::Url(..))
        ));
        assert!(socket_addr("not a url").is_err());
    }

    #[test]
    fn subscribers_take_the_servers_in_turn() {
        let urls = [
            "ws://127.0.0.1:1/ws",
            "ws://127.0.0.1:2/ws",
            "ws://127.0.0.1:3/ws",
        ]
        .map(String::from);
        let spec = SubscriberSpec::new(
            System::TopicServer,
            &urls,
            "t",
            "s",
            "c",
            Duration::from_secs(1),
        )
        .unwrap();
        let ports: Vec<u16> = (0..7).map(|i| spec.server(i).addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(spec.server(4).url, urls[1]);
        let none = SubscriberSpec::new(System::Limit, &[], "t", "s", "c", Duration::ZERO);
        assert!(matches!(none, Err(ConnectError::Url(..))));
        let bad = [
            "ws://127.0.0.1:1/".to_owned(),
            "ws://host.invalid/".to_owned(),
        ];
        assert!(SubscriberSpec::new(System::Limit, &bad, "t", "s", "c", Duration::ZERO).is_err());
    }
}
