//! The WebSocket upgrade, done here rather than by axum's extractor so that a plain-TCP
//! connection comes out of HTTP with its socket, which the session then shares for direct
//! writes ([`crate::direct`]); a TLS connection keeps hyper's upgraded stream.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use service_kit::http_server::LingeringStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::direct::{ConnIo, DirectSocket};

/// A session's WebSocket, with its socket when it takes direct writes.
pub(crate) type WebSocket = WebSocketStream<ConnIo>;

/// A request that asked to become a WebSocket (RFC 6455, HTTP/1.1), checked.
pub(crate) struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade: the answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not a GET.
    MethodNotGet,
    /// Headers missing or wrong (`Connection`, `Upgrade`, `Sec-WebSocket-Version`, key).
    BadHeaders(&'static str),
    /// The connection cannot be upgraded (HTTP/2, say).
    NotUpgradable,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::MethodNotGet => (
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET\n",
            )
                .into_response(),
            Self::BadHeaders(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            Self::NotUpgradable => (
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded to a WebSocket\n",
            )
                .into_response(),
        }
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl WsUpgrade {
    /// Checks the request's method and headers and takes hyper's upgrade handle.
    pub fn from_parts(parts: &mut Parts) -> Result<Self, Rejection> {
        if parts.method != Method::GET {
            return Err(Rejection::MethodNotGet);
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(Rejection::BadHeaders(
                "the Connection header must include 'upgrade'\n",
            ));
        }
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(Rejection::BadHeaders(
                "the Upgrade header must be 'websocket'\n",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(Rejection::BadHeaders("Sec-WebSocket-Version must be 13\n"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(Rejection::BadHeaders("Sec-WebSocket-Key is missing\n"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(Rejection::NotUpgradable)?;
        Ok(Self { key, on_upgrade })
    }

    /// Answers `101 Switching Protocols` and, once hyper has handed the connection over, runs
    /// `session` on it (with its shared socket when it is plain TCP).
    pub fn respond<F, Fut>(self, config: WebSocketConfig, session: F) -> Response
    where
        F: FnOnce(WebSocket, Option<Arc<DirectSocket>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "WebSocket upgrade failed");
                    return;
                }
            };
            let (io, read_ahead, direct) = match upgraded.downcast::<TokioIo<LingeringStream>>() {
                Ok(parts) => {
                    let socket = DirectSocket::new(parts.io.into_inner());
                    (
                        ConnIo::Direct(Arc::clone(&socket)),
                        parts.read_buf,
                        Some(socket),
                    )
                }
                Err(upgraded) => (
                    ConnIo::Upgraded(Box::new(TokioIo::new(upgraded))),
                    bytes::Bytes::new(),
                    None,
                ),
            };
            // Bytes the client sent right after its request (its first frames) are not lost.
            // They are copied out, so that HTTP's read buffer (which they may be a slice of)
            // is freed now, not kept for the life of the session.
            let part = read_ahead.to_vec();
            drop(read_ahead);
            let socket =
                WebSocketStream::from_partially_read(io, part, Role::Server, Some(config)).await;
            session(socket, direct).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        match HeaderValue::from_str(&accept) {
            Ok(value) => {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
            }
            // Base64 is always a valid header value.
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::builder().method(method).uri("/ws");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn bad_requests_are_told_why() {
        assert_eq!(
            WsUpgrade::from_parts(&mut parts(Method::POST, &GOOD)).err(),
            Some(Rejection::MethodNotGet)
        );
        for missing in 0..GOOD.len() {
            let headers: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, h)| *h)
                .collect();
            assert!(matches!(
                WsUpgrade::from_parts(&mut parts(Method::GET, &headers)),
                Err(Rejection::BadHeaders(_))
            ));
        }
        let mut old = GOOD;
        old[2] = ("sec-websocket-version", "8");
        assert!(matches!(
            WsUpgrade::from_parts(&mut parts(Method::GET, &old)),
            Err(Rejection::BadHeaders(_))
        ));
        // Everything right, but no connection to upgrade (not served by hyper).
        assert_eq!(
            WsUpgrade::from_parts(&mut parts(Method::GET, &GOOD)).err(),
            Some(Rejection::NotUpgradable)
        );
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
