//! The HTTP side of the one port: WebSocket upgrades (`/ws`, and `/` when the request asks to
//! upgrade), the dashboard's static files, `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use service_kit::ShutdownSignal;
use tokio::sync::mpsc;
use tower_http::services::ServeDir;

use crate::ServerContext;

/// What every request handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The server's shared state.
    pub ctx: Arc<ServerContext>,
    /// Passed to each session so it closes at shutdown.
    pub shutdown: ShutdownSignal,
    /// Held by each session; the server waits until every clone is gone.
    pub sessions_done: mpsc::Sender<()>,
    /// The dashboard files.
    pub static_files: ServeDir,
}

/// Builds the router for one server.
pub(crate) fn router(state: AppState) -> Router {
    let static_files = state.static_files.clone();
    Router::new()
        .route("/", get(root))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback_service(static_files)
        .with_state(state)
}

/// Initial read buffer per WebSocket connection.
const READ_BUFFER_BYTES: usize = 1024;

fn upgrade(state: AppState, upgrade: WebSocketUpgrade) -> Response {
    let transport_limit = state.ctx.config.transport_max_message_bytes();
    upgrade
        .max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        // tungstenite zero-fills its whole read buffer on every read, so its 128 KiB default
        // costs 128 KiB of resident memory per connection; client requests are small, and a
        // large one grows the buffer as needed.
        .read_buffer_size(READ_BUFFER_BYTES)
        // The writer already packs messages into frames and flushes once per batch, so frames
        // go straight to the socket instead of collecting in a second buffer.
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            crate::session::run(socket, state.ctx, state.shutdown, state.sessions_done)
        })
}

async fn websocket(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    upgrade(state, ws)
}

fn wants_websocket(request: &Request) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `/`: a WebSocket upgrade when asked for (so `ws://host:8080` works), else the dashboard.
async fn root(State(state): State<AppState>, request: Request) -> Response {
    if wants_websocket(&request) {
        let (mut parts, _body) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => upgrade(state, ws),
            Err(rejection) => rejection.into_response(),
        };
    }
    let mut files = state.static_files.clone();
    match files.try_call(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => {
            tracing::warn!(%error, "serving the dashboard index failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Measured on demand: keeping a gauge current on every push would cost the hot path.
    let queued = state.ctx.engine.queue_stats().queued_bytes;
    state.ctx.metrics.queued_bytes.set(queued as f64);
    let mut response = crate::metrics::render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
