//! `backend-app`: relays a Redis pub/sub channel into a topic-server JSON topic.
//!
//! This is the tutorial's "backend app" done properly: it reads the channel either straight from
//! Redis (`--from redis://…`) or through the WebSocket bridge (`--from ws://…:3000`), and sets each
//! message as the value of one JSON topic. Messages that are not JSON are counted, logged and
//! skipped. Both sides reconnect by themselves, and nothing is published before the topic-server
//! connection is up and the topic exists: while the topic server is away, only the latest message
//! is kept (the topic is stateful, so the latest value is all a subscriber would see anyway).

mod config;
mod relay;
mod source;

pub use config::{Config, SourceUrl};
pub use relay::{Relay, RelayStats};
