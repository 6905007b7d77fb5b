//! The HTTP control API, so the dashboard (served from another origin) can watch and steer the
//! feeder: `GET /status`, `POST /start`, `POST /stop`, `POST /interval`, `GET /healthz`.
//!
//! Guarded in layers (outermost first): a request whose `Origin` is not allowed is refused with
//! 403 before anything else — preflights included, and also simple cross-site POSTs, which a
//! browser would send (and the API would act on) even though CORS keeps the page from reading
//! the answer; then CORS answers preflights for the allowed origins; then, when a control token
//! is configured, every route but `/healthz` needs `Authorization: Bearer TOKEN` (else 401).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, extract::DefaultBodyLimit};
use serde::Deserialize;
use service_kit::http_server::ServeLimits;
use service_kit::origins::AllowedOrigins;
use service_kit::secret::{self, Secret};
use tower_http::cors::{AllowOrigin, CorsLayer};

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

/// Who may call the control API.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Browser origins allowed (an empty list allows none).
    pub origins: AllowedOrigins,
    /// The bearer token every route but `/healthz` needs, when configured.
    pub token: Option<Secret>,
}

/// The router, guarded by `access` (see the module documentation).
pub(crate) fn router(shared: Arc<Shared>, access: Access) -> Router {
    let allowed: Vec<HeaderValue> = access
        .origins
        .list()
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
    let access = Arc::new(access);
    Router::new()
        .route("/status", get(status))
        .route("/start", post(start))
        .route("/stop", post(stop))
        .route("/interval", post(set_interval))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(4096))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&access),
            require_token,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(
            access,
            require_allowed_origin,
        ))
        .with_state(shared)
}

/// Refuses (403) a request from a browser origin that is not allowed.
async fn require_allowed_origin(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN);
    if !access.origins.allows(origin) {
        tracing::info!(
            ?origin,
            "control API: refused a request from a non-allowed origin"
        );
        return error(StatusCode::FORBIDDEN, "origin not allowed".to_owned());
    }
    next.run(request).await
}

/// Refuses (401) a request without the right bearer token, when one is configured. `/healthz`
/// stays open for health checks; it tells nothing but "ok".
async fn require_token(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &access.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    match secret::bearer_token(request.headers()) {
        Some(presented) if token.matches(presented) => next.run(request).await,
        presented => {
            let reason = if presented.is_some() {
                "invalid bearer token"
            } else {
                "this API needs Authorization: Bearer TOKEN"
            };
            tracing::info!(reason, "control API: refused a request");
            let mut response = error(StatusCode::UNAUTHORIZED, reason.to_owned());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
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
    error(StatusCode::BAD_REQUEST, message)
}

/// An error answer: `{"error": message}` with `status`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
