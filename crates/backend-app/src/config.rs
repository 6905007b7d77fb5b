//! Command-line and environment configuration.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use topic_client::cli::IdentityArgs;

/// Where the channel's messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    /// Subscribe to the channel on this Redis server.
    Redis(String),
    /// Connect to the redis-ws-bridge at this WebSocket URL and read what it fans out.
    Bridge(String),
}

impl FromStr for SourceUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(Self::Redis(s.to_owned()))
        } else if s.starts_with("ws://") || s.starts_with("wss://") {
            Ok(Self::Bridge(s.to_owned()))
        } else {
            Err(format!(
                "'{s}' is neither a redis:// URL nor a ws:// bridge URL"
            ))
        }
    }
}

impl std::fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(url) | Self::Bridge(url) => f.write_str(url),
        }
    }
}

/// Settings of the relay.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Where to read the channel: redis://HOST:PORT or rediss:// (subscribe directly), or
    /// ws://HOST:3000 or wss:// (through redis-ws-bridge, as in the tutorial).
    #[arg(long, env = "BACKEND_FROM", default_value = "redis://127.0.0.1:6379/")]
    pub from: SourceUrl,

    /// Redis channel to subscribe to (with a redis:// source; the bridge has its own channel).
    #[arg(long, env = "BACKEND_CHANNEL", default_value = "app:notifications")]
    pub channel: String,

    /// Topic server WebSocket URL (ws:// or wss://); several, comma-separated, for the nodes of
    /// one deployment (the relay moves on to the next when its server goes away).
    #[arg(long, env = "TOPIC_SERVER_URL", default_value = "ws://127.0.0.1:8080")]
    pub topic_server: String,

    /// JSON topic that receives each message.
    #[arg(long, env = "BACKEND_TOPIC", default_value = "redis/bitcoin")]
    pub topic: String,

    /// Who to be on the topic server (--principal with --credentials, or --token; anonymous
    /// otherwise) and the CA file trusted for wss:// — the topic server's and the bridge's.
    /// A refused identity stops backend-app with an error instead of retrying.
    #[command(flatten)]
    pub identity: IdentityArgs,

    /// PEM CA file for a rediss:// source whose certificate a private CA signed (the server
    /// must then chain to it).
    #[arg(long, env = "BACKEND_REDIS_CA_FILE", value_name = "PEM")]
    pub redis_ca_file: Option<PathBuf>,

    /// Largest channel message relayed, in bytes; a larger one is skipped (counted and logged)
    /// before it is parsed.
    #[arg(long, env = "BACKEND_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = service_kit::flags::at_least_one)]
    pub max_message_bytes: usize,
}

/// Default largest relayed message: 1 MiB, the topic server's default request limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
