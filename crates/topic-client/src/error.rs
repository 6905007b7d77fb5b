//! What can go wrong talking to the topic server.

use std::time::Duration;

use diffusion_core::protocol::ErrorCode;

/// Every failure a [`crate::TopicClient`] reports. Applications match on the variant to decide
/// whether to retry (`Connect`, `Closed`, `Disconnected`, `Timeout`), give up (`Handshake`), or
/// fix the request
/// (`Server` with its [`ErrorCode`]).
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
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
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
