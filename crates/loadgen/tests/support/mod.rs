//! What loadgen's integration tests share: an in-process topic server on loopback, and the
//! bounded stop of an in-process server.
#![allow(clippy::unwrap_used)]
// test helpers panic on purpose
// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A topic server on a free loopback port without a request-rate limit (a saturating
/// publisher sends as fast as the server answers): its WebSocket URL, the token that stops it
/// and its task.
pub async fn topic_server() -> (String, CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let server = topic_server::bind(topic_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_requests_per_second: 0,
        ..topic_server::Config::default()
    })
    .await
    .unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    (url, shutdown, task)
}

/// Stops an in-process server (topic or limit) and waits, at most ten seconds, for its task to
/// end cleanly.
pub async fn stop(shutdown: CancellationToken, task: JoinHandle<anyhow::Result<()>>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}
