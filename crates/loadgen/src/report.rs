//! The JSON results of one loadgen run (or of several merged, [`crate::merge`]).

use serde::{Deserialize, Serialize};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Version of the loadgen that measured.
    pub loadgen_version: String,
    /// Unix time (seconds) the run started.
    pub started_at_unix_s: u64,
    /// The system under test (`topic-server`, `nats`, …).
    pub system: String,
    /// The scenario label.
    pub scenario: String,
    /// Where subscribers connected (several URLs comma-separated).
    pub url: String,
    /// loadgen processes behind these figures: 1, or how many reports were merged.
    #[serde(default = "one")]
    pub processes: usize,
    /// The topic selector (topic server), subject (NATS) or channel (Redis) subscribed to.
    pub topic: String,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Whether the padding changed on every message.
    pub random_pad: bool,
    /// Connection set-up.
    pub connect: ConnectReport,
    /// One entry per phase.
    pub runs: Vec<RunReport>,
}

fn one() -> usize {
    1
}

/// How setting up the subscribers went, and what it cost the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections subscribed.
    pub connected: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// The first failure, which usually says what stopped the ramp (fd limit, refused, …).
    pub first_error: Option<String>,
    /// Source addresses used.
    pub source_addresses: usize,
    /// Seconds from the first attempt to the last subscription.
    pub seconds: f64,
    /// Subscribed connections per second during the ramp.
    pub connections_per_s: f64,
    /// Server RSS before any subscriber connected (bytes; 0 when no --server-pid).
    pub server_rss_before_bytes: u64,
    /// Server RSS with every subscriber connected and idle (bytes).
    pub server_rss_connected_bytes: u64,
    /// (connected − before) / connected: the server's memory per idle subscribed connection.
    pub rss_per_connection_bytes: f64,
    /// loadgen's own RSS with every subscriber connected (bytes).
    pub loadgen_rss_bytes: u64,
    /// Failed attempts by kind and the retries made (`--connect-retries`): what a burst of
    /// connections cost (the connect-storm scenario).
    #[serde(default)]
    pub attempts: AttemptReport,
}

/// Connection attempts that failed, by why, and how many were tried again. A connection that
/// subscribed after two failed attempts counts two failures and two retries here, and is not
/// in [`ConnectReport::failed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// Attempts the server's host refused (ECONNREFUSED: nothing listening, or no room).
    pub refused: u64,
    /// Attempts the server reset or closed before the subscription was confirmed.
    pub reset: u64,
    /// Attempts not subscribed within --connect-timeout.
    pub timed_out: u64,
    /// Attempts that failed otherwise (a refused subscription, a handshake error, …).
    pub other: u64,
    /// Attempts made again after a failure.
    pub retries: u64,
}

impl AttemptReport {
    /// Every failed attempt, whatever the reason.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.timed_out + self.other
    }
}

/// The sum of two reports (several loadgen processes measuring one run).
impl std::ops::Add for AttemptReport {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            refused: self.refused + other.refused,
            reset: self.reset + other.reset,
            timed_out: self.timed_out + other.timed_out,
            other: self.other + other.other,
            retries: self.retries + other.retries,
        }
    }
}

/// One phase (fixed-rate, saturate, idle or observe) on the subscribed connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// The system under test.
    pub system: String,
    /// The scenario label.
    pub scenario: String,
    /// `fixed-rate`, `saturate`, `idle` or `observe`.
    pub mode: String,
    /// Subscribed connections when the phase started.
    pub subscribers: u64,
    /// Phase length, seconds.
    pub duration_s: f64,
    /// Fixed-rate target, messages per second (fixed-rate only).
    pub rate: Option<f64>,
    /// In-flight window per subscriber (saturate only).
    pub window: Option<u64>,
    /// Messages published in the phase.
    pub published: u64,
    /// Messages published per second.
    pub published_per_s: f64,
    /// Messages received by all subscribers during the phase.
    pub deliveries: u64,
    /// Deliveries per second (the headline number).
    pub deliveries_per_s: f64,
    /// published × subscribers: what a server that merges nothing would deliver.
    pub expected_deliveries: u64,
    /// Publish→receive latency, median (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// 99.9th percentile (ms).
    pub p999_ms: f64,
    /// Largest latency seen (ms).
    pub max_ms: f64,
    /// Latency samples behind the percentiles.
    pub latency_samples: u64,
    /// The latency histogram itself (µs; base64 of HdrHistogram's V2 compressed encoding,
    /// [`crate::stats::encode_histogram`]), so that several processes' phases merge exactly.
    #[serde(default)]
    pub latency_histogram: Option<String>,
    /// WebSocket frame payload bytes received per delivery.
    pub bytes_per_delivery: f64,
    /// Frames received during the phase.
    pub frames: u64,
    /// Deliveries per frame (how much the server packs).
    pub messages_per_frame: f64,
    /// Server RSS at the end of the phase (bytes).
    pub server_rss_bytes: u64,
    /// Server CPU during the phase, percent of one core (200 = both cores of this machine).
    pub server_cpu_percent: f64,
    /// Server CPU time per delivery, microseconds (all --server-pid processes together).
    #[serde(default)]
    pub server_cpu_us_per_delivery: f64,
    /// Each --server-pid process on its own, in the order given.
    #[serde(default)]
    pub server_processes: Vec<ServerProcess>,
    /// loadgen's own CPU during the phase, percent of one core: it shares the machine.
    pub loadgen_cpu_percent: f64,
    /// The whole machine's CPU during the phase, percent of one core (200 = all of it).
    pub machine_cpu_percent: f64,
    /// Machine CPU not used by the server or loadgen (other processes: noise), percent of one
    /// core. Large values mean the figures of this phase are not trustworthy.
    pub other_cpu_percent: f64,
    /// Whether every in-flight message arrived within the drain time.
    pub drained: bool,
    /// The server stopped reading the publisher: a publish was cut off three seconds after the
    /// phase's end (a NATS publisher then publishes nothing more in this run: it may have
    /// written half a message).
    #[serde(default)]
    pub publish_stalled: bool,
    /// Connections the server or network ended during the phase.
    pub disconnects: u64,
    /// Frames that could not be decoded.
    pub decode_errors: u64,
    /// Publish requests the server refused.
    pub publish_rejections: u64,
    /// The first problem seen, if any.
    pub first_problem: Option<String>,
}

/// One server process during a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerProcess {
    /// The process id.
    pub pid: u32,
    /// Its command name (`topic-server`, `redis-server`, …), to tell the parts of a system apart.
    #[serde(default)]
    pub name: String,
    /// RSS at the end of the phase (bytes).
    pub rss_bytes: u64,
    /// CPU during the phase, percent of one core.
    pub cpu_percent: f64,
}
