//! What one loadgen run does: the system under test, how many subscribers, which load.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::decode::Protocol;
use crate::plan::{PlanError, TopicPlan};

/// The kind of server being measured; it decides the subscribe handshake, how received frames
/// are decoded, and how messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// This workspace's topic server: subscribers offer protocol versions 2 and 1; the publisher
    /// (protocol 1) `add`s then `set`s a JSON topic.
    TopicServer,
    /// This workspace's redis-ws-bridge; the publisher PUBLISHes on its Redis channel.
    RedisWsBridge,
    /// nats-server through its WebSocket listener; the publisher speaks NATS over TCP.
    Nats,
    /// The Node.js WebSocket-to-Redis bridge in bench/node-bridge; published through Redis.
    NodeBridge,
    /// The `limit-server`: fans out what its publisher connection sends, nothing else.
    Limit,
    /// The uWebSockets.js pub/sub server in bench/uws-server (same protocol as the limit
    /// server: `/?topics=…` subscribes, `/publish` publishes `TOPIC\nPAYLOAD` frames).
    Uws,
    /// A plain Redis pub/sub subscriber over TCP (for bytes-per-update comparisons).
    Redis,
}

impl System {
    /// The decoder subscribers use.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::TopicServer => Protocol::Topic,
            Self::RedisWsBridge | Self::NodeBridge | Self::Limit | Self::Uws => Protocol::Lines,
            Self::Nats => Protocol::Nats,
            Self::Redis => Protocol::Redis,
        }
    }

    /// The name used in results (`topic-server`, `nats`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::TopicServer => "topic-server",
            Self::RedisWsBridge => "redis-ws-bridge",
            Self::Nats => "nats",
            Self::NodeBridge => "node-bridge",
            Self::Limit => "limit",
            Self::Uws => "uws",
            Self::Redis => "redis",
        }
    }

    /// Whether subscribers can receive a chosen set of topics (the `market` scenario): the
    /// Redis bridges fan one channel out to every client.
    pub fn subscribes_per_topic(self) -> bool {
        matches!(
            self,
            Self::TopicServer | Self::Nats | Self::Limit | Self::Uws
        )
    }
}

/// One phase of a run; a run may chain several on the same connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Publish `--rate` messages per second.
    FixedRate,
    /// Publish as fast as the subscribers keep up: at most `--window` messages in flight per
    /// subscriber on average.
    Saturate,
    /// Publish as fast as the server reads, without waiting for subscribers (for runs whose
    /// deliveries cannot be accounted for in advance, such as subscribers on views): what the
    /// server takes in is the publisher's rate.
    Flood,
    /// Publish nothing: measure the server's memory and CPU with idle subscribed connections.
    Idle,
    /// Publish nothing, count what arrives from an outside feed (bytes per update).
    Observe,
}

impl Mode {
    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::FixedRate => "fixed-rate",
            Self::Saturate => "saturate",
            Self::Flood => "flood",
            Self::Idle => "idle",
            Self::Observe => "observe",
        }
    }

    /// Whether the phase publishes.
    pub fn publishes(self) -> bool {
        matches!(self, Self::FixedRate | Self::Saturate | Self::Flood)
    }
}

/// Settings of one run. Every flag has a `LOADGEN_*` environment fallback.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The system under test.
    #[arg(long, env = "LOADGEN_SYSTEM", value_enum)]
    pub system: System,

    /// Where subscribers connect: a ws:// URL (topic server: ws://127.0.0.1:PORT/ws), or for
    /// `--system redis` a redis:// URL. Several, comma-separated (the nodes of a cluster):
    /// subscriber i connects to URL number i mod their count, round-robin.
    #[arg(long, env = "LOADGEN_URL", value_delimiter = ',', required = true)]
    pub url: Vec<String>,

    /// Where the publisher connects, when that differs from --url: redis://… for the bridges,
    /// nats://127.0.0.1:4222 (TCP) for NATS. The topic server and the limit server default to
    /// the first --url (the limit server's publisher uses the path /publish).
    #[arg(long, env = "LOADGEN_PUBLISH_URL")]
    pub publish_url: Option<String>,

    /// Publisher connections (all to the publish URL); messages go through them in turn. A
    /// topic server in cluster mode answers a session's change once the cluster has applied it
    /// and reads nothing from that session meanwhile, so one publisher has one change in
    /// flight; several keep several in flight (their messages may then arrive out of order).
    #[arg(long, env = "LOADGEN_PUBLISHERS", default_value_t = 1)]
    pub publishers: usize,

    /// Subscriber connections to open.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 1000)]
    pub connections: usize,

    /// Phases to run on the same connections, in order (comma-separated).
    #[arg(
        long,
        env = "LOADGEN_MODES",
        value_enum,
        value_delimiter = ',',
        default_value = "fixed-rate"
    )]
    pub modes: Vec<Mode>,

    /// Messages published per second in the fixed-rate phase.
    #[arg(long, env = "LOADGEN_RATE", default_value_t = 100.0)]
    pub rate: f64,

    /// Saturate phase: most messages in flight per subscriber (published but not yet received,
    /// on average over subscribers) before the publisher waits.
    #[arg(long, env = "LOADGEN_WINDOW", default_value_t = 32)]
    pub window: u64,

    /// Length of each phase, in seconds.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    pub duration: f64,

    /// Length of each `idle` phase, in seconds, when it differs from --duration (the memory
    /// scenario holds its connections idle for 30 s after a saturating phase).
    #[arg(long, env = "LOADGEN_IDLE_DURATION")]
    pub idle_duration: Option<f64>,

    /// After publishing stops, how long to wait at most for messages still in flight (seconds).
    #[arg(long, env = "LOADGEN_DRAIN", default_value_t = 2.0)]
    pub drain: f64,

    /// After every connection is subscribed, how long to wait before reading the server's idle
    /// memory (seconds), so that allocations made during the handshake have settled.
    #[arg(long, env = "LOADGEN_SETTLE", default_value_t = 1.0)]
    pub settle: f64,

    /// Payload size in bytes (the JSON text `{"pad":…,"seq":…,"ts":…}`).
    #[arg(long, env = "LOADGEN_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,

    /// Change the padding on every message (defeats the topic server's deltas).
    #[arg(long, env = "LOADGEN_RANDOM_PAD")]
    pub random_pad: bool,

    /// Topic path (topic server), also the selector subscribers use.
    #[arg(long, env = "LOADGEN_TOPIC", default_value = "bench/t")]
    pub topic: String,

    /// NATS subject.
    #[arg(long, env = "LOADGEN_SUBJECT", default_value = "bench.t")]
    pub subject: String,

    /// Redis channel the bridges (and `--system redis`) use.
    #[arg(long, env = "LOADGEN_CHANNEL", default_value = "app:notifications")]
    pub channel: String,

    /// Publish on this many topics `PREFIX/SYMBOL` in turn instead of one (the `market`
    /// scenario; 0: the one topic --topic / --subject / --channel). Messages are market ticks
    /// (`{"px":{"ask":…,"bid":…},"seq":…,"size":…,"ts":…}`, price and size moving).
    #[arg(long, env = "LOADGEN_TOPICS", default_value_t = 0)]
    pub topics: usize,

    /// With --topics: the topics' common prefix (NATS subjects use `.` for `/`).
    #[arg(long, env = "LOADGEN_TOPIC_PREFIX", default_value = "md")]
    pub topic_prefix: String,

    /// With --topics: topics each subscriber receives (topic server: one selector set; NATS:
    /// one SUB each; limit and uws: `/?topics=`).
    #[arg(long, env = "LOADGEN_TOPICS_PER_SUBSCRIBER", default_value_t = 1)]
    pub topics_per_subscriber: usize,

    /// With --topics, topic server only: subscribe to views' reference topics instead of the
    /// source topics. Each entry is a selector in which `{symbol}` stands for one of the
    /// subscriber's symbols; a subscriber's selector is the set of every entry for each of
    /// its symbols. What such subscribers receive is counted, never owed: use the fixed-rate
    /// and flood phases.
    #[arg(long, env = "LOADGEN_VIEW_SELECTORS", value_delimiter = ',')]
    pub view_selectors: Vec<String>,

    /// First source address for subscriber connections; later ones count up from it.
    #[arg(long, env = "LOADGEN_SOURCE_BASE", default_value = "127.0.0.2")]
    pub source_base: Ipv4Addr,

    /// Subscriber connections per source address. The ephemeral port range holds ~28k per
    /// address, but the kernel's search for a free port in `bind` slows down as an address
    /// fills up (measured here: 10k connections set up at ~2.2k/s from one address, ~5.4k/s
    /// from four), so the default spreads widely: 100k connections use 50 addresses.
    #[arg(long, env = "LOADGEN_PER_SOURCE", default_value_t = 2_000)]
    pub per_source: usize,

    /// Connection attempts in flight at once.
    #[arg(long, env = "LOADGEN_CONNECT_CONCURRENCY", default_value_t = 200)]
    pub connect_concurrency: usize,

    /// Give up on one connection attempt (TCP + WebSocket + subscribe) after this many seconds.
    #[arg(long, env = "LOADGEN_CONNECT_TIMEOUT", default_value_t = 15.0)]
    pub connect_timeout: f64,

    /// Stop opening connections after this many have failed (the rest would fail the same way).
    #[arg(long, env = "LOADGEN_MAX_FAILURES", default_value_t = 100)]
    pub max_failures: usize,

    /// Before any subscriber connects, publish one message on every topic (numbered below the
    /// run's first, so never counted): the topics, and views' reference topics derived from
    /// them, exist and hold a value when subscribers arrive, as in a running deployment.
    #[arg(long, env = "LOADGEN_PRIME")]
    pub prime: bool,

    /// Try a failed connection attempt again this many times (after --retry-backoff-ms), as a
    /// client reconnecting after a load balancer restart does; refused, timed-out and other
    /// failed attempts and the retries are counted.
    #[arg(long, env = "LOADGEN_CONNECT_RETRIES", default_value_t = 0)]
    pub connect_retries: u32,

    /// Pause before retrying a failed connection attempt, in milliseconds (doubled for each
    /// further retry of the same connection).
    #[arg(long, env = "LOADGEN_RETRY_BACKOFF_MS", default_value_t = 100)]
    pub retry_backoff_ms: u64,

    /// Process ids of the server under test (comma-separated: e.g. a bridge and its Redis);
    /// their RSS and CPU are read from /proc.
    #[arg(long, env = "LOADGEN_SERVER_PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Published sequence numbers start just above this (default: the current Unix time in
    /// milliseconds, so a value retained from an earlier run is never counted). When several
    /// loadgen processes measure one publisher (one publishes, the others `observe`), give them
    /// all the same base so that the observers count and time what it publishes.
    #[arg(long, env = "LOADGEN_SEQ_BASE")]
    pub seq_base: Option<u64>,

    /// Once every connection is subscribed (and --settle has passed), write the set-up figures
    /// here as JSON, before the first phase starts: a script running several loadgen processes
    /// waits for these files before it starts publishing.
    #[arg(long, env = "LOADGEN_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// Scenario label copied into the results.
    #[arg(long, env = "LOADGEN_SCENARIO", default_value = "fanout-100B")]
    pub scenario: String,

    /// Write the JSON results here instead of stdout.
    #[arg(long, env = "LOADGEN_OUT")]
    pub out: Option<PathBuf>,

    /// No progress bar on stderr.
    #[arg(long, env = "LOADGEN_NO_PROGRESS")]
    pub no_progress: bool,
}

impl Config {
    /// A configuration with the command line's defaults, for tests and embedding.
    pub fn new(system: System, url: impl Into<String>) -> Self {
        Self {
            system,
            url: vec![url.into()],
            publish_url: None,
            publishers: 1,
            connections: 1000,
            modes: vec![Mode::FixedRate],
            rate: 100.0,
            window: 32,
            duration: 10.0,
            idle_duration: None,
            drain: 2.0,
            settle: 1.0,
            payload_bytes: 100,
            random_pad: false,
            topic: "bench/t".to_owned(),
            subject: "bench.t".to_owned(),
            channel: "app:notifications".to_owned(),
            topics: 0,
            topic_prefix: "md".to_owned(),
            topics_per_subscriber: 1,
            view_selectors: Vec::new(),
            source_base: Ipv4Addr::new(127, 0, 0, 2),
            per_source: 2_000,
            connect_concurrency: 200,
            connect_timeout: 15.0,
            max_failures: 100,
            prime: false,
            connect_retries: 0,
            retry_backoff_ms: 100,
            server_pid: Vec::new(),
            seq_base: None,
            ready_file: None,
            scenario: "fanout-100B".to_owned(),
            out: None,
            no_progress: false,
        }
    }

    /// Where the publisher connects: --publish-url, else the first --url.
    pub fn publish_target(&self) -> &str {
        self.publish_url
            .as_deref()
            .or_else(|| self.url.first().map(String::as_str))
            .unwrap_or_default()
    }

    /// The topics of the run: --topics market topics, or the one topic of the system (the
    /// topic server's path, the NATS subject, the Redis channel).
    pub fn plan(&self) -> Result<TopicPlan, PlanError> {
        if self.topics == 0 {
            let name = match self.system {
                System::TopicServer => &self.topic,
                System::Nats => &self.subject,
                _ => &self.channel,
            };
            return Ok(TopicPlan::single(name));
        }
        TopicPlan::market(&self.topic_prefix, self.topics, self.topics_per_subscriber)
    }

    /// How long a phase of `mode` lasts, in seconds.
    pub fn phase_seconds(&self, mode: Mode) -> f64 {
        match (mode, self.idle_duration) {
            (Mode::Idle, Some(seconds)) => seconds,
            _ => self.duration,
        }
    }

    /// The source address for subscriber `index`.
    pub fn source_for(&self, index: usize) -> Ipv4Addr {
        let step = u32::try_from(index / self.per_source.max(1)).unwrap_or(u32::MAX);
        Ipv4Addr::from(u32::from(self.source_base).saturating_add(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn defaults_match_new() {
        let parsed = Cli::parse_from(["loadgen", "--system", "nats", "--url", "ws://x"]).config;
        let built = Config::new(System::Nats, "ws://x");
        assert_eq!(parsed.connections, built.connections);
        assert_eq!(parsed.modes, built.modes);
        assert_eq!(parsed.window, built.window);
        assert_eq!(parsed.source_base, built.source_base);
        assert_eq!(parsed.per_source, built.per_source);
        assert_eq!(parsed.topic, built.topic);
        assert_eq!(parsed.url, built.url);
        assert_eq!(parsed.seq_base, None);
        assert_eq!(parsed.publishers, built.publishers);
    }

    #[test]
    fn several_urls_and_the_publisher_default() {
        let parsed = Cli::parse_from([
            "loadgen",
            "--system",
            "topic-server",
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
        ])
        .config;
        assert_eq!(parsed.url.len(), 2);
        assert_eq!(parsed.publish_target(), "ws://127.0.0.1:1/ws");
        let mut config = parsed;
        config.publish_url = Some("ws://127.0.0.1:3/ws".into());
        assert_eq!(config.publish_target(), "ws://127.0.0.1:3/ws");
        assert!(Cli::try_parse_from(["loadgen", "--system", "limit"]).is_err());
    }

    #[test]
    fn plans_and_phase_lengths() {
        let mut config = Config::new(System::Nats, "ws://x");
        assert_eq!(config.plan().unwrap().name(0), "bench.t");
        config.topics = 2000;
        config.topics_per_subscriber = 20;
        let plan = config.plan().unwrap();
        assert_eq!((plan.len(), plan.per_subscriber()), (2000, 20));
        assert_eq!(plan.name(0), "md/AAAA");
        config.topics_per_subscriber = 0;
        assert!(config.plan().is_err());
        config.duration = 2.0;
        config.idle_duration = Some(30.0);
        assert_eq!(config.phase_seconds(Mode::Saturate), 2.0);
        assert_eq!(config.phase_seconds(Mode::Idle), 30.0);
    }

    #[test]
    fn sources_count_up_per_block() {
        let mut config = Config::new(System::Limit, "ws://x");
        config.per_source = 2;
        assert_eq!(config.source_for(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(config.source_for(1), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(config.source_for(2), Ipv4Addr::new(127, 0, 0, 3));
    }

    #[test]
    fn modes_parse_as_a_list() {
        let parsed = Cli::parse_from([
            "loadgen",
            "--system",
            "limit",
            "--url",
            "ws://x",
            "--modes",
            "idle,saturate",
        ])
        .config;
        assert_eq!(parsed.modes, vec![Mode::Idle, Mode::Saturate]);
        let flood = Cli::parse_from([
            "loadgen", "--system", "uws", "--url", "ws://x", "--modes", "flood",
        ]);
        assert_eq!(flood.config.modes, vec![Mode::Flood]);
        assert!(Mode::Flood.publishes());
        assert!(Cli::try_parse_from(["loadgen", "--system", "x", "--url", "ws://x"]).is_err());
    }
}
