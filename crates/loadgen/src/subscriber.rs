//! One subscriber connection: bind to a source address, connect, subscribe, then count and time
//! everything that arrives until the run ends.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
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
        Ok(Self {
            system,
            servers,
            topic: topic.to_owned(),
            subject: subject.to_owned(),
            channel: channel.to_owned(),
            timeout,
        })
    }

    /// The server subscriber `index` connects to: the servers in turn (round-robin).
    pub fn server(&self, index: usize) -> &Server {
        &self.servers[index % self.servers.len()]
    }
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
    /// When the connection was opened (ns since the epoch): a value published before it is
    /// the topic's current value, sent because this subscriber subscribed, not an update it
    /// waited for, so its age is no latency.
    opened_ns: u64,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.counted {
            self.stats.connection_down(self.progress, None);
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

    async fn open_inner(
        spec: &SubscriberSpec,
        index: usize,
        source: Ipv4Addr,
        stats: Arc<Stats>,
    ) -> Result<Self, ConnectError> {
        let server = spec.server(index);
        let opened_ns = now_ns();
        let stream = connect_from(source, server.addr).await?;
        let transport = if spec.system == System::Redis {
            Transport::Tcp(stream, BytesMut::with_capacity(16 * 1024))
        } else {
            let (ws, _response) = tokio_tungstenite::client_async_with_config(
                server.url.as_str(),
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
        };
        subscriber.subscribe(spec).await?;
        // Alive from here, before anyone hears of the success, so that a phase starting right
        // after the last subscription counts every subscriber.
        subscriber.stats.connection_up();
        subscriber.counted = true;
        Ok(subscriber)
    }

    async fn subscribe(&mut self, spec: &SubscriberSpec) -> Result<(), ConnectError> {
        let request: Option<Vec<u8>> = match spec.system {
            System::TopicServer => {
                // Offers versions 2 and 1; the decoder follows whichever the server picks.
                let connect = ClientMessage::connect_v2(&Credentials::Anonymous, None);
                let connect = serde_json::to_string(&connect)
                    .map_err(|e| ConnectError::Refused(e.to_string()))?;
                self.send_text(connect).await?;
                let subscribe = serde_json::json!({
                    "type": "subscribe", "cid": 1, "selector": spec.topic,
                });
                Some(subscribe.to_string().into_bytes())
            }
            System::Nats => Some(
                format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {} 1\r\nPING\r\n",
                    spec.subject
                )
                .into_bytes(),
            ),
            System::Redis => Some(
                format!(
                    "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
                    spec.channel.len(),
                    spec.channel
                )
                .into_bytes(),
            ),
            // The bridges and the limit server send to every connected socket.
            System::RedisWsBridge | System::NodeBridge | System::Limit => None,
        };
        let Some(request) = request else {
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
                advanced += stamp.seq - self.last_seq.max(base);
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
                () = cancel.cancelled() => break None,
                chunk = self.next_chunk() => match chunk {
                    Ok(true) => {}
                    Ok(false) => break Some("connection closed by server".to_owned()),
                    Err(error) => break Some(error),
                },
            }
        };
        self.counted = false;
        self.stats.connection_down(self.progress, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
