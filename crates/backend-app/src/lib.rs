//! `backend-app`: relays a Redis pub/sub channel into a topic-server JSON topic.
//!
//! This is the tutorial's "backend app" done properly: it reads the channel either straight from
//! Redis (`--from redis://…`) or through the WebSocket bridge (`--from ws://…:3000`), and sets each
//! message as the value of one JSON topic — forwarding the bytes it received, checked to be JSON
//! but never parsed into a tree, so every number arrives exactly as published. Messages that are
//! not JSON are counted, logged and skipped. Both sides reconnect by themselves (the shared
//! `service_kit::reconnect` loop), and nothing is published before the topic-server connection is
//! up and the topic exists: while the topic server is away, only the latest message is kept (the
//! topic is stateful, so the latest value is all a subscriber would see anyway).

mod config;
mod inbox;
mod relay;
mod source;
mod topic_side;

pub use config::{Config, SourceUrl};
pub use relay::{Relay, RelayStats};
