//! The HTTP side: the WebSocket endpoint at `/` (with the optional Origin allow-list) and the
//! `/healthz` probe.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::client::{self, ClientContext};
use crate::config::normalize_origin;
use crate::hub::StatsSnapshot;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Handed to each upgraded connection.
    pub client: ClientContext,
    /// Normalized allowed origins; empty allows every origin.
    pub allowed_origins: Arc<[String]>,
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

/// Upgrades `GET /` to a WebSocket, after the Origin check.
async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&state.allowed_origins, headers.get(header::ORIGIN)) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "refused a WebSocket from a non-allowed origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let limit = state.client.max_message_bytes;
    let context = state.client.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite zero-fills its whole read buffer on every read: its 128 KiB default would
        // cost 128 KiB of resident memory per client. A larger message grows it as needed.
        .read_buffer_size(4 * 1024)
        // Frames of one drained batch coalesce up to this size before a write system call.
        .write_buffer_size(16 * 1024)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| client::serve(socket, context))
}

/// Whether a WebSocket from `origin` may connect. An empty allow-list allows everyone. A request
/// without an `Origin` header is allowed: browsers always send one, so its absence means a
/// non-browser client, which the allow-list (a defence against cross-site pages) is not about.
fn origin_allowed(allowed: &[String], origin: Option<&HeaderValue>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = normalize_origin(origin);
    allowed.contains(&origin)
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

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_list_allows_everything() {
        assert!(origin_allowed(
            &[],
            Some(&HeaderValue::from_static("http://evil"))
        ));
    }

    #[test]
    fn listed_origin_is_allowed_case_insensitively() {
        let allowed = list(&["http://localhost:8080"]);
        assert!(origin_allowed(
            &allowed,
            Some(&HeaderValue::from_static("HTTP://LocalHost:8080"))
        ));
        assert!(!origin_allowed(
            &allowed,
            Some(&HeaderValue::from_static("http://localhost:8081"))
        ));
        assert!(origin_allowed(&allowed, None));
    }

    #[test]
    fn non_ascii_origin_is_refused() {
        let allowed = list(&["http://localhost:8080"]);
        let weird = HeaderValue::from_bytes(b"http://\xffhost").unwrap();
        assert!(!origin_allowed(&allowed, Some(&weird)));
    }
}
