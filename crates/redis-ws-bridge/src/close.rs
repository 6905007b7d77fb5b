//! The close frames the bridge sends, in one place so clients (and tests) can recognise them.
//!
//! Every way the bridge ends a connection on purpose says why, with a standard RFC 6455 code and
//! a short human-readable reason.

use axum::extract::ws::{CloseFrame, Utf8Bytes, close_code};

/// A client fell so far behind that its send queue filled up; it is closed so the others are
/// not held back. Policy violation (1008).
pub const SLOW_CLIENT: (u16, &str) = (close_code::POLICY, "send queue full: client too slow");

/// A client sent a message larger than `--max-message-bytes`. Message too big (1009).
pub const TOO_BIG: (u16, &str) = (close_code::SIZE, "message too big");

/// A client sent a binary frame: Redis channel messages from clients must be text. Unsupported
/// data (1003). The binary frame is not published.
pub const BINARY_REFUSED: (u16, &str) = (
    close_code::UNSUPPORTED,
    "binary frames are not supported: send text",
);

/// Redis could not take a client's message. Try again later (1013): the message that triggered
/// this was NOT published, and the client should reconnect (with back-off) and resend it.
pub const REDIS_UNAVAILABLE: (u16, &str) = (
    close_code::AGAIN,
    "redis unavailable: message not published, retry later",
);

/// A client that did not present the publish token sent a text message. Policy violation
/// (1008); nothing is published. Reconnect presenting the token to publish.
pub const PUBLISH_NEEDS_TOKEN: (u16, &str) = (
    close_code::POLICY,
    "publishing needs the publish token: this connection is read-only",
);

/// A client sent a text message to a bridge started without `--publish-token-env`, which
/// publishes for nobody. Policy violation (1008); nothing is published.
pub const BRIDGE_READ_ONLY: (u16, &str) = (
    close_code::POLICY,
    "this bridge is read-only: it publishes nothing",
);

/// The bridge is shutting down. Going away (1001).
pub const SHUTTING_DOWN: (u16, &str) = (close_code::AWAY, "server shutting down");

/// The client broke the WebSocket protocol. Protocol error (1002).
pub const PROTOCOL_ERROR: (u16, &str) = (close_code::PROTOCOL, "protocol error");

/// Builds the frame for one of the `(code, reason)` pairs above.
pub(crate) fn frame((code, reason): (u16, &'static str)) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}
