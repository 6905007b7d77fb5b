//! The HTTP side of the one port: WebSocket upgrades (`/ws`, and `/` when the request asks to
//! upgrade), the dashboard's static files and `/healthz`; and the separate metrics listener's
//! `/metrics`.
//!
//! A WebSocket upgrade is refused (403) when a browser page of a foreign origin asks for it
//! (`--allowed-origins`; by default only pages this server serves), and — without a security
//! store, where every session may do everything — when it comes from beyond loopback, unless
//! `--insecure-open` says so.
//!
//! Only the files the dashboard page loads are served (its HTML, its own CSS and JavaScript,
//! and the two library files it uses from `node_modules`), never whatever else sits in the web
//! directory (`package.json`, tests, the rest of `node_modules`), and every dashboard response
//! carries the usual security headers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

use crate::ServerContext;
use crate::upgrade::WsUpgrade;

/// What every request handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The server's shared state.
    pub ctx: Arc<ServerContext>,
    /// Passed to each session so it closes at shutdown.
    pub shutdown: CancellationToken,
    /// Held by each session; the server waits until every clone is gone.
    pub sessions_done: mpsc::Sender<()>,
    /// The dashboard files.
    pub static_files: ServeDir,
}

/// Builds the router for one server.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .fallback(dashboard_file)
        .with_state(state)
}

/// The metrics listener's router: `/metrics` only.
pub(crate) fn metrics_router(ctx: Arc<ServerContext>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// Why an upgrade is refused, if it is.
fn refusal(ctx: &ServerContext, peer: SocketAddr, headers: &HeaderMap) -> Option<&'static str> {
    if ctx.security.is_open()
        && !ctx.config.insecure_open
        && !peer.ip().to_canonical().is_loopback()
    {
        return Some(
            "this topic server runs without a security file, so it accepts clients from loopback only (start it with --security FILE, or --insecure-open)\n",
        );
    }
    let origin = headers.get(header::ORIGIN)?;
    // Pages this server serves (the Origin names the Host the browser sent the request to)
    // are always allowed; `--allowed-origins` adds others.
    let same_origin = match (
        origin.to_str(),
        headers.get(header::HOST).map(HeaderValue::to_str),
    ) {
        (Ok(origin), Some(Ok(host))) => {
            let origin = service_kit::origins::normalize(origin);
            let host = host.to_ascii_lowercase();
            (origin == format!("http://{host}") || origin == format!("https://{host}"))
                // In protected mode (no security store, not --insecure-open) a page must also
                // be on a loopback name: otherwise a site whose name an attacker points at
                // 127.0.0.1 (DNS rebinding) would be "this server's own page" and could drive
                // a server where everyone may do everything.
                && (!ctx.security.is_open() || ctx.config.insecure_open || is_loopback_host(&host))
        }
        _ => false,
    };
    let allowed = same_origin
        || match &ctx.allowed_origins {
            None => true,
            Some(list) => !list.list().is_empty() && list.allows(Some(origin)),
        };
    (!allowed).then_some(
        "WebSocket sessions from this page's origin are not allowed (--allowed-origins)\n",
    )
}

/// Whether a `Host` value (`name[:port]`, `[v6]:port`) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Initial read buffer per WebSocket connection.
const READ_BUFFER_BYTES: usize = 1024;

/// Library files the dashboard page loads from `node_modules` (everything else there stays
/// private).
const LIBRARY_FILES: &[&str] = &[
    "node_modules/uplot/dist/uPlot.min.css",
    "node_modules/uplot/dist/uPlot.iife.min.js",
    "node_modules/fossil-delta/fossil-delta.js",
];

/// The page talks to this server, the Redis bridge and the feeder's control API, whose
/// addresses it may be told in its query string: connections may go anywhere over HTTP(S) and
/// WebSocket; everything else comes from this origin only, and no other page may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss: http: https:; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` (without its leading `/`) is a file the dashboard page needs.
fn is_dashboard_file(path: &str) -> bool {
    let own = |dir: &str, extension: &str| {
        path.strip_prefix(dir)
            .and_then(|rest| rest.strip_suffix(extension))
            .is_some_and(|name| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    path == "index.html"
        || LIBRARY_FILES.contains(&path)
        || own("css/", ".css")
        || own("js/", ".js")
}

/// Adds the dashboard's security headers to a response.
fn secure(mut response: Response) -> Response {
    let headers: &mut HeaderMap = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    response
}

fn not_found() -> Response {
    secure((StatusCode::NOT_FOUND, "not found\n").into_response())
}

/// Serves one dashboard file from the web directory.
async fn serve_file(state: &AppState, request: Request) -> Response {
    let mut files = state.static_files.clone();
    match files.try_call(request).await {
        Ok(response) => secure(response.map(Body::new)),
        Err(error) => {
            tracing::warn!(%error, "serving a dashboard file failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Any other path: a dashboard file if it is one, else 404.
async fn dashboard_file(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    if !is_dashboard_file(path) {
        return not_found();
    }
    serve_file(&state, request).await
}

fn upgrade(state: AppState, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(why) = refusal(&state.ctx, peer, &parts.headers) {
        tracing::info!(%peer, why = why.trim_end(), "WebSocket upgrade refused");
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let upgrade = match WsUpgrade::from_parts(&mut parts) {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let config = &state.ctx.config;
    let transport_limit = config.transport_max_message_bytes();
    let websocket = WebSocketConfig::default()
        .max_message_size(Some(transport_limit))
        .max_frame_size(Some(transport_limit))
        // tungstenite zero-fills its whole read buffer on every read, so its 128 KiB default
        // costs 128 KiB of resident memory per connection; client requests are small, and a
        // large one grows the buffer as needed.
        .read_buffer_size(READ_BUFFER_BYTES)
        // The writer already packs messages into frames and flushes once per batch, so frames
        // go straight to the socket instead of collecting in a second buffer.
        .write_buffer_size(0)
        // Bounds what waits unsent, pongs to a ping flood included (see Config).
        .max_write_buffer_size(config.max_write_buffer_bytes());
    upgrade.respond(websocket, move |socket, direct| {
        crate::session::run(
            socket,
            direct,
            state.ctx,
            state.shutdown,
            state.sessions_done,
            peer.ip().to_canonical(),
        )
    })
}

async fn websocket(State(state): State<AppState>, request: Request) -> Response {
    upgrade(state, request)
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
        return upgrade(state, request);
    }
    serve_file(&state, request).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(ctx): State<Arc<ServerContext>>) -> Response {
    // Measured on demand: keeping a gauge current on every push would cost the hot path.
    let queues = ctx.engine.queue_stats();
    ctx.metrics.queued_bytes.set(queues.queued_bytes as f64);
    ctx.metrics.sessions.set(queues.sessions as f64);
    let (tree_bytes, held) = ctx.engine.tree_gauges();
    ctx.metrics.tree_value_bytes.set(tree_bytes as f64);
    ctx.metrics.view_held_results.set(held as f64);
    let mut response = crate::metrics::render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page loads (from index.html and the imports of its modules) passes the
    /// allow-list: a new library or module must be added there too.
    #[test]
    fn everything_the_page_loads_is_served() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let html = std::fs::read_to_string(web.join("index.html")).unwrap();
        let mut wanted: Vec<String> = Vec::new();
        for attribute in ["href=\"", "src=\""] {
            for piece in html.split(attribute).skip(1) {
                let target = piece.split('"').next().unwrap_or_default();
                if !target.contains(':') {
                    wanted.push(target.to_owned());
                }
            }
        }
        for entry in std::fs::read_dir(web.join("js")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split(" from '").skip(1) {
                let target = piece.split('\'').next().unwrap_or_default();
                // Resolve `./x.js` and `../node_modules/…` against js/.
                let resolved = match target.strip_prefix("./") {
                    Some(rest) => format!("js/{rest}"),
                    None => target.trim_start_matches("../").to_owned(),
                };
                wanted.push(resolved);
            }
        }
        assert!(wanted.len() > 10, "found only {wanted:?}");
        for file in &wanted {
            assert!(
                is_dashboard_file(file),
                "the page loads {file}, which is not served"
            );
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for yes in [
            "localhost:8080",
            "127.0.0.1:8080",
            "127.3.4.5",
            "[::1]:8080",
            "app.localhost:1",
        ] {
            assert!(is_loopback_host(yes), "{yes}");
        }
        for no in [
            "evil.example:8080",
            "192.0.2.1:8080",
            "[2001:db8::1]:80",
            "localhost.evil.example:80",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }

    #[test]
    fn only_the_pages_own_files_are_dashboard_files() {
        for ok in [
            "index.html",
            "css/style.css",
            "js/main.js",
            "js/topic-client.js",
            "node_modules/uplot/dist/uPlot.iife.min.js",
            "node_modules/fossil-delta/fossil-delta.js",
        ] {
            assert!(is_dashboard_file(ok), "{ok}");
        }
        for no in [
            "package.json",
            "package-lock.json",
            "README.md",
            "test/page.test.mjs",
            "node_modules/.package-lock.json",
            "node_modules/uplot/package.json",
            "js/../package.json",
            "js/sub/x.js",
            "js/.js",
            "js/main.js.map",
            "css/style.css/x",
            "",
        ] {
            assert!(!is_dashboard_file(no), "{no}");
        }
    }
}
