//! What can go wrong talking to the topic server.

use std::time::Duration;

use diffusion_core::protocol::ErrorCode;

/// Close code with which the server ends a connection whose authentication it refused.
pub const CLOSE_AUTHENTICATION_FAILED: u16 = 4003;

/// Close code with which the server ends a session whose token (JWT) expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4004;

/// Every failure a [`crate::TopicClient`] reports. Applications match on the variant to decide
/// whether to retry (`Connect`, `Closed`, `Disconnected`, `Timeout`), give up (`Handshake`,
/// `Tls`), get new credentials (`Refused`), or fix the request (`Server` with its
/// [`ErrorCode`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket connection could not be opened (bad URL, nothing listening, HTTP refusal).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL that was dialled.
        url: String,
        /// The transport's explanation (boxed: the error type is large).
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The URL names no server (it is empty, or only commas and blanks).
    #[error("no topic server URL in {0:?}")]
    InvalidUrl(String),
    /// The socket opened but the `connect` handshake did not end in `connected`.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server answered a request (or the handshake) with an `error` message.
    #[error("server error {}: {message}", code_name(*.code))]
    Server {
        /// The machine-readable code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The client is closed (by the application, or the server refused to go on); no reply
    /// will come.
    #[error("connection to the topic server is closed")]
    Closed,
    /// The connection dropped while the request was in flight: it may or may not have been
    /// carried out. The client is reconnecting; retry if the request is safe to repeat.
    #[error("connection to the topic server was lost while the request was in flight")]
    Disconnected,
    /// No reply arrived within the request timeout; the connection may still be usable.
    #[error("no reply from the topic server within {0:?}")]
    Timeout(Duration),
    /// The server sent something this client does not understand in this place.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused who this client is, for good: at connect, when resuming, or during
    /// the session. The client does not reconnect (the same identity would be refused again);
    /// every later request fails with this error too.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// TLS for `wss://` could not be set up: the CA file cannot be read or holds no usable
    /// certificate (the error names it). Reported before dialling. (A server certificate that
    /// is not trusted is a `Connect` error.)
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] service_kit::tls::TlsError),
}

/// Why the server will not let this client go on with its identity: reconnecting cannot help,
/// new credentials can. Kept by the client (it is `Clone`) so every request made after the end,
/// and [`crate::TopicClient::refusal`], report the same cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Authentication was refused (close code 4003): a wrong password, an unknown principal,
    /// an invalid token (`AUTHENTICATION_FAILED`), or too many failed attempts from this
    /// address (`RATE_LIMITED`).
    #[error("authentication refused ({}): {message}", code_name(*code))]
    Authentication {
        /// `AUTHENTICATION_FAILED` or `RATE_LIMITED`.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The session's token expired and the server closed it (close code 4004); connect again
    /// with a fresh token.
    #[error("the session's token expired (close code 4004): {reason}")]
    TokenExpired {
        /// The close frame's reason text.
        reason: String,
    },
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    /// An authentication refusal carries its code too, so `AUTHENTICATION_FAILED` is found here
    /// whether it came at connect or later.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } | Self::Refused(Refusal::Authentication { code, .. }) => {
                Some(*code)
            }
            _ => None,
        }
    }
}

/// The wire spelling of an error code (`NO_SUCH_TOPIC`), which is what users see in docs and logs.
pub fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{code:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_show_the_wire_code() {
        let err = ClientError::Server {
            code: ErrorCode::NoSuchTopic,
            message: "no topic at a/b".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "server error NO_SUCH_TOPIC: no topic at a/b"
        );
        assert_eq!(err.code(), Some(ErrorCode::NoSuchTopic));
        assert_eq!(ClientError::Closed.code(), None);
    }
}
