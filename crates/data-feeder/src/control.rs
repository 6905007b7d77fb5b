//! The HTTP control API, so the dashboard (served from another origin) can watch and steer the
//! feeder: `GET /status`, `POST /start`, `POST /stop`, `POST /interval`, `GET /healthz`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, extract::DefaultBodyLimit};
use serde::Deserialize;
use service_kit::http_server::ServeLimits;
use tower_http::cors::{Any, CorsLayer};

use crate::config::{MAX_INTERVAL, MIN_API_INTERVAL, check_interval};
use crate::state::Shared;

/// The control API serves a dashboard or two and an operator's scripts: a handful of
/// connections, never thousands.
pub(crate) const SERVE_LIMITS: ServeLimits = ServeLimits {
    max_connections: 64,
    max_connections_per_address: 16,
    request_head_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(10),
};

/// How long `POST /stop` waits for an in-flight poll to be abandoned before answering anyway.
const STOP_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `POST /interval`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntervalRequest {
    interval_ms: u64,
}

/// The router, with CORS open to any origin (the API changes nothing but this feeder's pace).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any);
    Router::new()
        .route("/status", get(status))
        .route("/start", post(start))
        .route("/stop", post(stop))
        .route("/interval", post(set_interval))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(4096))
        .layer(cors)
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status()).into_response()
}

async fn start(State(shared): State<Arc<Shared>>) -> Response {
    shared.running.send_replace(true);
    Json(shared.status()).into_response()
}

/// Pauses polling and answers once the poller has parked: after the answer no new payload is
/// handed to the sink (one already handed over may still be in delivery).
async fn stop(State(shared): State<Arc<Shared>>) -> Response {
    shared.running.send_replace(false);
    let mut idle = shared.idle.subscribe();
    if tokio::time::timeout(STOP_ACK_TIMEOUT, idle.wait_for(|idle| *idle))
        .await
        .is_err()
    {
        tracing::warn!("poller did not park within {STOP_ACK_TIMEOUT:?}");
    }
    Json(shared.status()).into_response()
}

async fn set_interval(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: IntervalRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return bad_request(format!(
                "expected a JSON body like {{\"interval_ms\": 5000}}: {error}"
            ));
        }
    };
    let interval = Duration::from_millis(request.interval_ms);
    if check_interval(interval, MIN_API_INTERVAL).is_err() {
        return bad_request(format!(
            "interval_ms must be between {} and {} (got {})",
            MIN_API_INTERVAL.as_millis(),
            MAX_INTERVAL.as_millis(),
            request.interval_ms
        ));
    }
    shared.interval.send_replace(interval);
    tracing::info!(interval_ms = request.interval_ms, "poll interval changed");
    Json(shared.status()).into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
