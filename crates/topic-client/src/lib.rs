//! `topic-client`: an async Rust client for the topic server (the `topic-cli` tool is built on it,
//! in its own crate).
//!
//! ```no_run
//! # async fn demo() -> Result<(), topic_client::ClientError> {
//! use topic_client::{ConnectOptions, TopicClient, TopicEvent};
//! let client = TopicClient::connect("ws://127.0.0.1:8080", ConnectOptions::default()).await?;
//! client.subscribe("?redis//").await?;
//! while let Some(event) = client.next_event().await {
//!     if let TopicEvent::Value { path, value, .. } = event {
//!         println!("{path} = {value}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Authenticate with [`ConnectOptions::password`] or [`ConnectOptions::token`]; `wss://` URLs
//! use rustls, trusting the public web roots and, with [`ConnectOptions::with_ca_file`], a
//! private CA. A refused authentication (close code 4003) or an expired token (4004) ends the
//! client for good with [`ClientError::Refused`]: it never reconnects with an identity the
//! server refused.
//!
//! The connection runs two background tasks: a reader that routes replies to waiting requests by
//! correlation id and turns subscription messages into [`TopicEvent`]s (through a bounded
//! channel, so a slow application slows the socket instead of growing memory), and a writer that
//! batches outgoing frames. This project is independent of, and not affiliated with, the
//! commercial Diffusion product whose documented behaviour the topic server reproduces.

#[cfg(feature = "cli")]
pub mod cli;
mod client;
mod connection;
pub mod error;
pub mod events;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{ClientConfig, ConnectOptions, TopicClient};
pub use diffusion_core::TopicType;
pub use diffusion_core::protocol::{Credentials, ErrorCode, FetchedTopic, ViewInfo};
pub use error::{ClientError, Refusal};
pub use events::TopicEvent;
