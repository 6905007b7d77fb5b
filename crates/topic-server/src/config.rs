//! Command-line and environment configuration of the topic server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use diffusion_core::view::EvalLimits;
use service_kit::flags;
use service_kit::http_server::ServeLimits;

/// Default address: every interface, port 8080 (the dashboard and WebSocket port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default largest client message, 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default per-session outbound queue limit, 1 MiB.
pub const DEFAULT_QUEUE_LIMIT_BYTES: usize = 1024 * 1024;
/// Default largest server frame when packing several messages, 64 KiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Default address of the `/metrics` listener: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Everything the server needs to start. Flatten into a clap parser, or build one in tests with
/// `Config { listen: "127.0.0.1:0".parse()?, ..Config::default() }`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address for HTTP, WebSocket (`/ws` and `/`), the dashboard and /metrics.
    #[arg(long, env = "TOPIC_SERVER_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Connections that may wait to be accepted. When thousands of clients reconnect at once
    /// (a load balancer restarted), a short queue drops their handshakes and they retry a
    /// second later; the kernel caps this at `net.core.somaxconn`.
    #[arg(long, env = "TOPIC_SERVER_LISTEN_BACKLOG",
          default_value_t = service_kit::listener::DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub listen_backlog: u32,

    /// Directory of dashboard files served at `/` (including its `node_modules/`).
    #[arg(long, env = "TOPIC_SERVER_WEB_DIR", default_value = "web")]
    pub web_dir: PathBuf,

    /// Largest client message accepted, in bytes; a larger one gets a MESSAGE_TOO_LARGE error
    /// and the connection is closed with code 1009.
    #[arg(long, env = "TOPIC_SERVER_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Per-session outbound queue limit in bytes. It counts every byte the queue keeps alive
    /// (a queued delta also holds its update's full value and the value it applies to). A
    /// session over it has its queued updates conflated per topic (by each topic's CONFLATION
    /// property); if it is still over, the session is closed with reason "message queue limit
    /// reached".
    #[arg(long, env = "TOPIC_SERVER_QUEUE_LIMIT_BYTES", default_value_t = DEFAULT_QUEUE_LIMIT_BYTES)]
    pub queue_limit_bytes: usize,

    /// Largest WebSocket frame the server builds when it packs several queued messages into one
    /// frame (a single larger message still gets a frame of its own).
    #[arg(long, env = "TOPIC_SERVER_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Topic views to create at start-up: a file of `NAME: SPEC` lines (a line starting with
    /// whitespace continues the previous one; `#` starts a comment). See docs/views.md.
    #[arg(long, env = "TOPIC_SERVER_VIEWS", value_name = "FILE")]
    pub views: Option<PathBuf>,

    /// Most open connections (WebSocket sessions and HTTP requests together); one more gets
    /// HTTP 503. 0: no limit.
    #[arg(long, env = "TOPIC_SERVER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most open connections from one source address; one more gets HTTP 429. 0: no limit.
    #[arg(
        long,
        env = "TOPIC_SERVER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1_000
    )]
    pub max_connections_per_address: usize,

    /// How long a connection may take to send a complete HTTP request head (an idle
    /// keep-alive connection waiting for its next request counts too).
    #[arg(long, env = "TOPIC_SERVER_REQUEST_HEAD_TIMEOUT", default_value = "10s",
          value_parser = flags::duration)]
    pub request_head_timeout: Duration,

    /// How long a WebSocket session may take to send `connect`; then it is closed (1008).
    #[arg(long, env = "TOPIC_SERVER_HANDSHAKE_TIMEOUT", default_value = "10s",
          value_parser = flags::duration)]
    pub handshake_timeout: Duration,

    /// (v2) How often the server sends `heartbeat` (v1 sessions get WebSocket pings).
    #[arg(long, env = "TOPIC_SERVER_HEARTBEAT_INTERVAL", default_value = "15s",
          value_parser = flags::duration)]
    pub heartbeat_interval: Duration,

    /// A session the server has heard nothing from for the heartbeat interval plus this long
    /// is closed (4001); a version-2 session then waits for its client to resume it.
    #[arg(long, env = "TOPIC_SERVER_HEARTBEAT_TIMEOUT", default_value = "10s",
          value_parser = flags::duration)]
    pub heartbeat_timeout: Duration,

    /// How long a version-2 session that lost its connection is kept (subscriptions, queue,
    /// recovery buffer) for its client to resume it.
    #[arg(long, env = "TOPIC_SERVER_RECONNECT_WINDOW", default_value = "60s",
          value_parser = flags::duration)]
    pub reconnect_window: Duration,

    /// Requests one session may make per second (a burst of twice as many is allowed); a
    /// request over the rate gets RATE_LIMITED and the session is read no faster than the rate.
    /// 0: no limit.
    #[arg(
        long,
        env = "TOPIC_SERVER_MAX_REQUESTS_PER_SECOND",
        default_value_t = 1_000
    )]
    pub max_requests_per_second: u32,

    /// Most topics in the tree, reference topics included; `add` past it gets LIMIT_EXCEEDED.
    #[arg(long, env = "TOPIC_SERVER_MAX_TOPICS", default_value_t = 100_000,
          value_parser = flags::at_least_one)]
    pub max_topics: usize,

    /// Most bytes of values the tree holds (canonical bytes of every retained value); a value
    /// that would pass it gets LIMIT_EXCEEDED.
    #[arg(long, env = "TOPIC_SERVER_MAX_TREE_BYTES", default_value_t = 512 * 1024 * 1024,
          value_parser = flags::at_least_one)]
    pub max_tree_bytes: usize,

    /// Most topic views.
    #[arg(long, env = "TOPIC_SERVER_MAX_VIEWS", default_value_t = 100,
          value_parser = flags::at_least_one)]
    pub max_views: usize,

    /// Longest view specification, in bytes.
    #[arg(long, env = "TOPIC_SERVER_MAX_VIEW_SPEC_BYTES", default_value_t = 8 * 1024,
          value_parser = flags::at_least_one)]
    pub max_view_spec_bytes: usize,

    /// Most reference topics one source topic may derive through one view; a source past it
    /// derives nothing (logged, and counted in /metrics).
    #[arg(long, env = "TOPIC_SERVER_MAX_VIEW_RESULTS", default_value_t = EvalLimits::default().max_results,
          value_parser = flags::at_least_one)]
    pub max_view_results: usize,

    /// Most bytes one source topic may derive through one view (values and paths of its
    /// reference topics, and what `insert` copies in).
    #[arg(long, env = "TOPIC_SERVER_MAX_VIEW_OUTPUT_BYTES", default_value_t = EvalLimits::default().max_output_bytes,
          value_parser = flags::at_least_one)]
    pub max_view_output_bytes: usize,

    /// Most view results held back by `delay by` at once (beyond it, a source's newest held
    /// result is replaced rather than another one added).
    #[arg(long, env = "TOPIC_SERVER_MAX_DELAYED_RESULTS", default_value_t = 100_000,
          value_parser = flags::at_least_one)]
    pub max_delayed_results: usize,

    /// Most selectors one session may hold subscribed at once.
    #[arg(long, env = "TOPIC_SERVER_MAX_SELECTORS_PER_SESSION", default_value_t = 10_000,
          value_parser = flags::at_least_one)]
    pub max_selectors_per_session: usize,

    /// Most memory one session's selectors may take (text and compiled patterns, as estimated
    /// when they are parsed).
    #[arg(long, env = "TOPIC_SERVER_MAX_SELECTOR_BYTES_PER_SESSION", default_value_t = 16 * 1024 * 1024,
          value_parser = flags::at_least_one)]
    pub max_selector_bytes_per_session: usize,

    /// Largest `fetched` reply, in bytes; a larger result comes in pages (`more: true`).
    #[arg(long, env = "TOPIC_SERVER_MAX_FETCH_REPLY_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = flags::at_least_one)]
    pub max_fetch_reply_bytes: usize,

    /// The security store (TOML: principals, roles, permissions, tokens; docs/security.md).
    /// Reloaded on SIGHUP. Without it every session may do everything, so the server accepts
    /// clients from loopback only unless `--insecure-open` is given.
    #[arg(long, env = "TOPIC_SERVER_SECURITY", value_name = "FILE")]
    pub security: Option<PathBuf>,

    /// Without `--security`, accept clients from every address anyway (everyone may do
    /// everything): for trusted networks only.
    #[arg(long, env = "TOPIC_SERVER_INSECURE_OPEN")]
    pub insecure_open: bool,

    /// Origins (`scheme://host[:port]`, comma-separated) whose pages may open WebSocket
    /// sessions; `*` allows every origin. Default: only pages served by this server (the
    /// Origin names the Host the request was sent to). Clients that send no Origin (not
    /// browsers) are not affected.
    #[arg(long, env = "TOPIC_SERVER_ALLOWED_ORIGINS", value_delimiter = ',',
          value_parser = origin_or_any)]
    pub allowed_origins: Vec<String>,

    /// Address of the Prometheus `/metrics` listener (its own port, loopback by default;
    /// `Config::default()` takes an ephemeral port instead).
    #[arg(long, env = "TOPIC_SERVER_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// TLS certificate chain (PEM): with `--tls-key`, the port speaks HTTPS and `wss://`.
    #[arg(
        long,
        env = "TOPIC_SERVER_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for `--tls-cert`.
    #[arg(
        long,
        env = "TOPIC_SERVER_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Cluster mode (docs/cluster.md): keep the topic tree in this Redis and share it with
    /// every node given the same one — `redis://HOST:PORT` (or `rediss://`) for one Redis
    /// server, or several comma-separated seed nodes of a Redis Cluster. Also how a single
    /// node keeps its topics and views across restarts.
    #[arg(
        long,
        env = "TOPIC_SERVER_CLUSTER",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub cluster: Vec<String>,

    /// This node's name in a cluster's logs and messages (default: generated).
    #[arg(long, env = "TOPIC_SERVER_NODE_ID", requires = "cluster")]
    pub node_id: Option<String>,

    /// CA file (PEM) for a `rediss://` cluster Redis with a private CA.
    #[arg(
        long,
        env = "TOPIC_SERVER_CLUSTER_CA_FILE",
        value_name = "PEM",
        requires = "cluster"
    )]
    pub cluster_ca_file: Option<PathBuf>,

    /// Changes each partition's log keeps in Redis for nodes catching up (approximately);
    /// a node away for longer reloads the latest values instead.
    #[arg(long, env = "TOPIC_SERVER_CLUSTER_LOG_LENGTH", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub cluster_log_length: u64,
}

impl Config {
    /// How this node joins a cluster, when `--cluster` is given.
    pub(crate) fn cluster_config(&self) -> Option<crate::cluster::ClusterConfig> {
        let urls: Vec<String> = self
            .cluster
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        Some(crate::cluster::ClusterConfig {
            urls,
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>())),
            ca_file: self.cluster_ca_file.clone(),
            log_length: usize::try_from(self.cluster_log_length).unwrap_or(usize::MAX),
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            listen_backlog: service_kit::listener::DEFAULT_LISTEN_BACKLOG,
            web_dir: PathBuf::from("web"),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            queue_limit_bytes: DEFAULT_QUEUE_LIMIT_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            views: None,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            request_head_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(10),
            reconnect_window: Duration::from_secs(60),
            max_requests_per_second: 1_000,
            max_topics: 100_000,
            max_tree_bytes: 512 * 1024 * 1024,
            max_views: 100,
            max_view_spec_bytes: 8 * 1024,
            max_view_results: EvalLimits::default().max_results,
            max_view_output_bytes: EvalLimits::default().max_output_bytes,
            max_delayed_results: 100_000,
            max_selectors_per_session: 10_000,
            max_selector_bytes_per_session: 16 * 1024 * 1024,
            max_fetch_reply_bytes: 4 * 1024 * 1024,
            security: None,
            insecure_open: false,
            allowed_origins: Vec::new(),
            // Port 0 (unlike the command line's 9464) so that servers built in one process,
            // as tests do, never collide.
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster: Vec::new(),
            node_id: None,
            cluster_ca_file: None,
            cluster_log_length: 10_000,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// One `--allowed-origins` entry: `*`, or an origin that a browser could send (anything else
/// could never match and is refused at start-up rather than silently refusing every page).
fn origin_or_any(input: &str) -> Result<String, String> {
    match input.trim() {
        "*" => Ok("*".to_owned()),
        _ => service_kit::origins::parse_origin(input),
    }
}

impl Config {
    /// The accept loop's limits.
    pub(crate) fn serve_limits(&self) -> ServeLimits {
        ServeLimits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            request_head_timeout: self.request_head_timeout,
            request_timeout: ServeLimits::default().request_timeout,
        }
    }

    /// What one source may derive through one view.
    pub(crate) fn eval_limits(&self) -> EvalLimits {
        EvalLimits {
            max_results: self.max_view_results,
            max_output_bytes: self.max_view_output_bytes,
        }
    }

    /// Most bytes the WebSocket layer may hold unsent for one connection: the largest message
    /// the server writes (a value up to the transport limit, or a fetch page) plus a frame.
    /// Pongs to a client's pings wait here too, so a ping flood from a client that does not
    /// read fails the connection instead of growing the server's memory.
    pub(crate) fn max_write_buffer_bytes(&self) -> usize {
        self.transport_max_message_bytes()
            .max(self.max_fetch_reply_bytes)
            .saturating_mul(2)
            .saturating_add(self.max_frame_bytes)
    }

    /// The size limit handed to the WebSocket layer: above our own limit, so that a message
    /// slightly too large is still read and answered with a clear MESSAGE_TOO_LARGE error
    /// instead of a torn connection.
    pub(crate) fn transport_max_message_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_add(self.max_message_bytes / 4)
            .saturating_add(64 * 1024)
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
    fn clap_defaults_match_default_impl() {
        let parsed = Cli::parse_from(["topic-server"]).config;
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.web_dir, default.web_dir);
        assert_eq!(parsed.max_message_bytes, default.max_message_bytes);
        assert_eq!(parsed.queue_limit_bytes, default.queue_limit_bytes);
        assert_eq!(parsed.max_frame_bytes, default.max_frame_bytes);
        assert_eq!(parsed.max_connections, default.max_connections);
        assert_eq!(
            parsed.max_connections_per_address,
            default.max_connections_per_address
        );
        assert_eq!(parsed.request_head_timeout, default.request_head_timeout);
        assert_eq!(parsed.handshake_timeout, default.handshake_timeout);
        assert_eq!(
            parsed.max_requests_per_second,
            default.max_requests_per_second
        );
        assert_eq!(parsed.max_topics, default.max_topics);
        assert_eq!(parsed.max_tree_bytes, default.max_tree_bytes);
        assert_eq!(parsed.max_views, default.max_views);
        assert_eq!(parsed.max_view_spec_bytes, default.max_view_spec_bytes);
        assert_eq!(parsed.max_view_results, default.max_view_results);
        assert_eq!(parsed.max_view_output_bytes, default.max_view_output_bytes);
        assert_eq!(parsed.max_delayed_results, default.max_delayed_results);
        assert_eq!(
            parsed.max_selectors_per_session,
            default.max_selectors_per_session
        );
        assert_eq!(
            parsed.max_selector_bytes_per_session,
            default.max_selector_bytes_per_session
        );
        assert_eq!(parsed.max_fetch_reply_bytes, default.max_fetch_reply_bytes);
    }

    #[test]
    fn allowed_origins_are_checked_at_start() {
        let parsed = Cli::try_parse_from([
            "topic-server",
            "--allowed-origins",
            "https://App.example/,*,http://localhost:5173",
        ])
        .unwrap();
        assert_eq!(
            parsed.config.allowed_origins,
            ["https://app.example", "*", "http://localhost:5173"]
        );
        for bad in ["app.example", "ftp://x", "http://x/path"] {
            assert!(
                Cli::try_parse_from(["topic-server", "--allowed-origins", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn limits_are_range_checked() {
        assert!(Cli::try_parse_from(["topic-server", "--max-topics", "0"]).is_err());
        assert!(Cli::try_parse_from(["topic-server", "--handshake-timeout", "2h"]).is_err());
        assert!(Cli::try_parse_from(["topic-server", "--listen-backlog", "0"]).is_err());
        assert!(Cli::try_parse_from(["topic-server", "--listen-backlog", "70000"]).is_err());
    }

    #[test]
    fn transport_limit_is_above_ours() {
        let config = Config {
            max_message_bytes: 1000,
            ..Config::default()
        };
        assert!(config.transport_max_message_bytes() > 1000);
    }
}
