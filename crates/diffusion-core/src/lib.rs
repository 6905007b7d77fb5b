//! `diffusion-core`: the pure heart of the topic platform.
//!
//! Everything here is plain data and functions — no async runtime, no sockets, no files — so the
//! topic server, the client library and the offline tools (`topic-cli selector match`, `view eval`)
//! share one definition of what a topic path is, what a selector selects, how a value is encoded
//! and what travels on the wire.
//!
//! This project is independent of, and not affiliated with, the commercial Diffusion product whose
//! documented behaviour it reproduces; "Diffusion" is a trademark of its owner.

pub mod conflation;
pub mod convert;
pub mod delta;
pub mod path;
pub mod protocol;
pub mod security;
pub mod selector;
pub mod selector_index;
pub mod topic;
pub mod value;
pub mod view;

pub use path::{PathError, TopicPath};
pub use selector::{Selector, SelectorError};
pub use topic::{TopicProperties, TopicType};
pub use value::{TopicValue, ValueError};
