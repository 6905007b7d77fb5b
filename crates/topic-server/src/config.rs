//! Command-line and environment configuration of the topic server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Default address: every interface, port 8080 (the dashboard and WebSocket port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default largest client message, 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default per-session outbound queue limit, 1 MiB.
pub const DEFAULT_QUEUE_LIMIT_BYTES: usize = 1024 * 1024;
/// Default largest server frame when packing several messages, 64 KiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Everything the server needs to start. Flatten into a clap parser, or build one in tests with
/// `Config { listen: "127.0.0.1:0".parse()?, ..Config::default() }`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address for HTTP, WebSocket (`/ws` and `/`), the dashboard and /metrics.
    #[arg(long, env = "TOPIC_SERVER_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory of dashboard files served at `/` (including its `node_modules/`).
    #[arg(long, env = "TOPIC_SERVER_WEB_DIR", default_value = "web")]
    pub web_dir: PathBuf,

    /// Largest client message accepted, in bytes; a larger one gets a MESSAGE_TOO_LARGE error
    /// and the connection is closed with code 1009.
    #[arg(long, env = "TOPIC_SERVER_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Per-session outbound queue limit in bytes. A session over it has its queued updates
    /// conflated per topic (by each topic's CONFLATION property); if it is still over, the
    /// session is closed with reason "message queue limit reached".
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            web_dir: PathBuf::from("web"),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            queue_limit_bytes: DEFAULT_QUEUE_LIMIT_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            views: None,
        }
    }
}

impl Config {
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
