//! The bridge's settings: every flag has an environment-variable fallback so containers can be
//! configured without a command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use service_kit::flags;
use service_kit::http_server::ServeLimits;
use service_kit::origins::{self, AllowedOrigins};
use service_kit::secret::{Secret, SecretError};

/// Default WebSocket listen address: the port the tutorial's clients connect to.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:3000";
/// Default Redis pub/sub channel, shared with the backend app.
pub const DEFAULT_CHANNEL: &str = "app:notifications";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// Default per-client send queue length, in messages.
pub const DEFAULT_CLIENT_QUEUE: usize = 1024;
/// Default per-client send queue size, in bytes (8 MiB).
pub const DEFAULT_CLIENT_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default largest WebSocket message a client may send (1 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Settings for one bridge. Parse it from the command line (it is a clap parser that can also be
/// flattened into a bigger one), or build it with [`Config::new`] and adjust the fields in tests.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "redis-ws-bridge",
    about = "WebSocket server that publishes client text frames to a Redis channel and fans \
             every message on that channel out to all connected clients."
)]
pub struct Config {
    /// Address the WebSocket and HTTP server listens on. WebSocket endpoint: `/`; health: `/healthz`.
    #[arg(long, env = "BRIDGE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Connections that may wait to be accepted (capped by the kernel's `net.core.somaxconn`):
    /// room for a burst of clients reconnecting at once without dropped handshakes.
    #[arg(long, env = "BRIDGE_LISTEN_BACKLOG",
          default_value_t = service_kit::listener::DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub listen_backlog: u32,

    /// Redis server URL, used both for publishing and for the one shared subscription:
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, or `rediss://…` for TLS.
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// PEM file of the CA that signed a `rediss://` server's certificate (then only that CA is
    /// trusted); without it, the public web roots are.
    #[arg(long, env = "BRIDGE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Redis pub/sub channel that client messages are published to and fanned out from.
    #[arg(long, env = "BRIDGE_CHANNEL", default_value = DEFAULT_CHANNEL)]
    pub channel: String,

    /// Most messages queued for one client; a client that falls this far behind is closed
    /// (code 1008, "send queue full: client too slow").
    #[arg(long, env = "BRIDGE_CLIENT_QUEUE", default_value_t = DEFAULT_CLIENT_QUEUE,
          value_parser = flags::at_least_one)]
    pub client_queue: usize,

    /// Most bytes queued for one client (a single message larger than this is still delivered
    /// to a client that has nothing else queued); past it the client is closed as too slow.
    #[arg(long, env = "BRIDGE_CLIENT_QUEUE_BYTES", default_value_t = DEFAULT_CLIENT_QUEUE_BYTES,
          value_parser = flags::at_least_one)]
    pub client_queue_bytes: usize,

    /// Largest WebSocket message (and frame) a client may send; a bigger one closes that client
    /// with code 1009.
    #[arg(long, env = "BRIDGE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = flags::at_least_one)]
    pub max_message_bytes: usize,

    /// Comma-separated browser origins allowed to open a WebSocket (e.g.
    /// `http://localhost:8080,https://app.example`). Empty allows every origin. A request with
    /// a non-listed `Origin` header gets HTTP 403; requests without an `Origin` header
    /// (non-browser clients) are allowed.
    #[arg(long, env = "BRIDGE_ALLOWED_ORIGINS", value_delimiter = ',',
          value_parser = origins::parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Name of the environment variable holding the publish token (at least 16 characters
    /// from `A-Z a-z 0-9 - . _ ~ +`, e.g. `openssl rand -hex 32`). Only clients presenting it
    /// (`Authorization: Bearer TOKEN`, or the WebSocket subprotocol `publish-token.TOKEN`
    /// offered together with `redis-ws-bridge`) may publish; others are closed with 1008 when
    /// they send. Without this flag the bridge is read-only.
    #[arg(long, env = "BRIDGE_PUBLISH_TOKEN_ENV", value_name = "VAR")]
    pub publish_token_env: Option<String>,

    /// The publish token itself, for a bridge embedded in another process (tests); when set,
    /// `publish_token_env` is not read. Never taken from the command line.
    #[arg(skip)]
    pub publish_token: Option<Secret>,

    /// PEM certificate chain (leaf first) to serve `wss://` and `https://`; needs `--tls-key`.
    #[arg(
        long,
        env = "BRIDGE_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "BRIDGE_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// Most open connections; one more gets HTTP 503. 0: no limit.
    #[arg(long, env = "BRIDGE_MAX_CONNECTIONS", default_value_t = ServeLimits::default().max_connections)]
    pub max_connections: usize,

    /// Most open connections from one source address; one more gets HTTP 429. 0: no limit.
    #[arg(long, env = "BRIDGE_MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = ServeLimits::default().max_connections_per_address)]
    pub max_connections_per_address: usize,
}

impl Config {
    /// The defaults the command line would give, with `redis_url` filled in.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            listen_backlog: service_kit::listener::DEFAULT_LISTEN_BACKLOG,
            redis_url: redis_url.into(),
            channel: DEFAULT_CHANNEL.to_owned(),
            client_queue: DEFAULT_CLIENT_QUEUE,
            client_queue_bytes: DEFAULT_CLIENT_QUEUE_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            allowed_origins: Vec::new(),
            publish_token_env: None,
            publish_token: None,
            tls_cert: None,
            tls_key: None,
            redis_ca_file: None,
            max_connections: ServeLimits::default().max_connections,
            max_connections_per_address: ServeLimits::default().max_connections_per_address,
        }
    }

    /// The accept loop's limits (the request-head timeout is the shared default).
    pub(crate) fn serve_limits(&self) -> ServeLimits {
        ServeLimits {
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            ..ServeLimits::default()
        }
    }

    /// The Origin allow-list: blanks dropped, and an empty list allows every origin (so
    /// `--allowed-origins ""` allows everyone).
    pub(crate) fn allowed_origins(&self) -> AllowedOrigins {
        AllowedOrigins::any_if_empty(&self.allowed_origins)
    }

    /// The publish token: the one set in `publish_token`, else the one in the environment
    /// variable named by `--publish-token-env`; `None` makes the bridge read-only.
    pub(crate) fn resolve_publish_token(&self) -> Result<Option<Secret>, SecretError> {
        Secret::resolve(
            self.publish_token.as_ref(),
            self.publish_token_env.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_defaults_match_new() {
        let parsed = Config::try_parse_from(["redis-ws-bridge", "--redis-url", "redis://x/"])
            .expect("parses");
        let built = Config::new("redis://x/");
        assert_eq!(parsed.listen, built.listen);
        assert_eq!(parsed.channel, built.channel);
        assert_eq!(parsed.client_queue, built.client_queue);
        assert_eq!(parsed.client_queue_bytes, built.client_queue_bytes);
        assert_eq!(parsed.max_message_bytes, built.max_message_bytes);
        assert_eq!(parsed.max_connections, built.max_connections);
        assert_eq!(
            parsed.max_connections_per_address,
            built.max_connections_per_address
        );
    }

    #[test]
    fn origins_are_split_and_normalized() {
        let parsed = Config::try_parse_from([
            "redis-ws-bridge",
            "--allowed-origins",
            "HTTP://Localhost:8080/, https://app.example,",
        ])
        .expect("parses");
        assert_eq!(
            parsed.allowed_origins().list(),
            ["http://localhost:8080", "https://app.example"]
        );
        let err =
            Config::try_parse_from(["redis-ws-bridge", "--allowed-origins", "localhost:8080"])
                .expect_err("an origin without a scheme never matches");
        assert!(err.to_string().contains("scheme://host"), "{err}");
    }

    #[test]
    fn tls_needs_both_files() {
        for (flag, missing) in [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")] {
            let err = Config::try_parse_from(["redis-ws-bridge", flag, "x.pem"])
                .expect_err("half a TLS configuration must be refused");
            assert!(err.to_string().contains(missing), "{err}");
        }
        let mut config = Config::new("redis://x/");
        config.tls_key = Some("k.pem".into());
        let files = |c: &Config| {
            service_kit::tls::tls_files(c.tls_cert.as_deref(), c.tls_key.as_deref())
                .map(|f| f.is_some())
                .map_err(|e| e.to_string())
        };
        assert!(files(&config).unwrap_err().contains("--tls-cert"));
        config.tls_cert = Some("c.pem".into());
        assert!(files(&config).unwrap());
    }

    #[test]
    fn the_publish_token_comes_from_the_field_or_the_named_variable() {
        let mut config = Config::new("redis://x/");
        assert_eq!(config.resolve_publish_token(), Ok(None));
        config.publish_token_env = Some("REDIS_WS_BRIDGE_TEST_SURELY_UNSET".into());
        let err = config.resolve_publish_token().unwrap_err();
        assert!(
            err.to_string()
                .contains("REDIS_WS_BRIDGE_TEST_SURELY_UNSET"),
            "{err}"
        );
        let token = Secret::new("0123456789abcdef", "test").unwrap();
        config.publish_token = Some(token.clone());
        assert_eq!(config.resolve_publish_token(), Ok(Some(token)));
    }

    #[test]
    fn zero_queue_is_refused() {
        let err = Config::try_parse_from(["redis-ws-bridge", "--client-queue", "0"])
            .expect_err("zero must be refused");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }

    #[test]
    fn bad_listen_address_is_refused() {
        let err = Config::try_parse_from(["redis-ws-bridge", "--listen", "nonsense"]);
        assert!(err.is_err());
    }
}
