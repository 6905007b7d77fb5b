//! The HTTP side: the WebSocket endpoint at `/` (with the optional Origin allow-list and the
//! publish token check) and the `/healthz` probe.
//!
//! A client presents the publish token in the upgrade request, either as
//! `Authorization: Bearer TOKEN` (command-line clients, the feeder) or — since browsers cannot
//! set headers on a WebSocket — as the subprotocol `publish-token.TOKEN`, offered together with
//! [`PROTOCOL`], which is the one the bridge answers with (so the token is never echoed).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use service_kit::origins::AllowedOrigins;
use service_kit::secret::{self, Secret};

use crate::client::{self, ClientContext, Publish};
use crate::hub::StatsSnapshot;

/// The subprotocol the bridge selects when a client offers it: a browser that offers
/// `publish-token.TOKEN` must offer this one too, since a browser fails a handshake whose
/// answer names none of its offers.
pub const PROTOCOL: &str = "redis-ws-bridge";

/// Prefix of the subprotocol that carries the publish token.
pub const TOKEN_PROTOCOL_PREFIX: &str = "publish-token.";

/// What every request handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Handed to each upgraded connection (its `publish` is decided per connection).
    pub client: ClientContext,
    /// Browser origins allowed to connect.
    pub allowed_origins: AllowedOrigins,
    /// The publish token; `None` makes the bridge read-only.
    pub publish_token: Option<Secret>,
}

/// The `/healthz` body.
#[derive(Debug, Clone, Copy, Serialize)]
struct Health {
    /// `"ok"` while the Redis subscription is up, `"degraded"` while it is reconnecting.
    status: &'static str,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

/// The bridge's routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(upgrade))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Upgrades `GET /` to a WebSocket, after the Origin check and the publish token check.
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.allowed_origins.allows(headers.get(header::ORIGIN)) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "refused a WebSocket from a non-allowed origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let publish = match publish_access(state.publish_token.as_ref(), &headers) {
        Ok(publish) => publish,
        Err(reason) => {
            tracing::info!(reason, "refused a WebSocket presenting a bad publish token");
            return (StatusCode::UNAUTHORIZED, format!("{reason}\n")).into_response();
        }
    };
    let limit = state.client.max_message_bytes;
    let context = ClientContext {
        publish,
        ..state.client.clone()
    };
    ws.protocols([PROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite zero-fills its whole read buffer on every read: its 128 KiB default would
        // cost 128 KiB of resident memory per client. A larger message grows it as needed.
        .read_buffer_size(4 * 1024)
        // Frames of one drained batch coalesce up to this size before a write system call.
        .write_buffer_size(16 * 1024)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| client::serve(socket, context))
}

/// The tokens an upgrade request presents: its bearer token and any `publish-token.`
/// subprotocols.
fn presented_tokens(headers: &HeaderMap) -> Vec<&[u8]> {
    let mut tokens: Vec<&[u8]> = secret::bearer_token(headers).into_iter().collect();
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    tokens.extend(offers.filter_map(|offer| offer.strip_prefix(TOKEN_PROTOCOL_PREFIX.as_bytes())));
    tokens
}

/// Whether the connection may publish. A client presenting no token connects read-only; one
/// presenting a token that is not the bridge's (or to a bridge without one) is refused, so a
/// misconfigured publisher learns it at once rather than at its first message.
fn publish_access(token: Option<&Secret>, headers: &HeaderMap) -> Result<Publish, &'static str> {
    let presented = presented_tokens(headers);
    match token {
        None if presented.is_empty() => Ok(Publish::ReadOnlyBridge),
        None => Err("this bridge is read-only: it takes no publish token"),
        Some(_) if presented.is_empty() => Ok(Publish::NeedsToken),
        // Every presented token is compared (in constant time), so none can hide a wrong one.
        Some(token) if presented.iter().all(|p| token.matches(p)) => Ok(Publish::Allowed),
        Some(_) => Err("invalid publish token"),
    }
}

/// `GET /healthz`: always HTTP 200 while the bridge runs (it reconnects to Redis by itself, so
/// restarting it would not help); the body says whether Redis is connected.
async fn healthz(State(state): State<AppState>) -> Json<Health> {
    let stats = state.client.hub.snapshot();
    Json(Health {
        status: if stats.redis_connected {
            "ok"
        } else {
            "degraded"
        },
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123";

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tokens_are_found_in_the_bearer_header_and_the_subprotocols() {
        let map = headers(&[
            (header::AUTHORIZATION, "Bearer abc"),
            (
                header::SEC_WEBSOCKET_PROTOCOL,
                "redis-ws-bridge, publish-token.def",
            ),
            (header::SEC_WEBSOCKET_PROTOCOL, "publish-token.ghi"),
        ]);
        assert_eq!(presented_tokens(&map), [&b"abc"[..], b"def", b"ghi"]);
        assert!(presented_tokens(&headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "chat")])).is_empty());
    }

    #[test]
    fn access_follows_the_token() {
        let token = Secret::new(TOKEN, "test").unwrap();
        let none = HeaderMap::new();
        let right = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef0123")]);
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef0124")]);
        let right_and_wrong = headers(&[
            (header::AUTHORIZATION, "Bearer 0123456789abcdef0123"),
            (header::SEC_WEBSOCKET_PROTOCOL, "publish-token.nope"),
        ]);
        assert_eq!(publish_access(Some(&token), &none), Ok(Publish::NeedsToken));
        assert_eq!(publish_access(Some(&token), &right), Ok(Publish::Allowed));
        assert!(publish_access(Some(&token), &wrong).is_err());
        assert!(publish_access(Some(&token), &right_and_wrong).is_err());
        assert_eq!(publish_access(None, &none), Ok(Publish::ReadOnlyBridge));
        assert!(publish_access(None, &right).is_err());
    }
}
