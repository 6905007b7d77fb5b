//! A server that stops reading its publisher must not hold a run for ever: the publish in
//! flight is cut off shortly after the phase's end, the phase says so, and the run ends.
#![allow(clippy::unwrap_used)] // a test panics on purpose

use std::time::{Duration, Instant};

use loadgen::{Config, Mode, System};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_the_server_stops_reading_is_cut_off() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts the publisher's WebSocket, then never reads from it again.
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    });

    let mut config = Config::new(System::Limit, format!("ws://127.0.0.1:{port}/"));
    config.connections = 0;
    config.modes = vec![Mode::Flood, Mode::Flood];
    config.duration = 0.3;
    config.drain = 0.0;
    config.settle = 0.0;
    config.payload_bytes = 16 * 1024;
    config.no_progress = true;
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        loadgen::run(config, CancellationToken::new()),
    )
    .await
    .expect("the run ends although the server reads nothing")
    .expect("run succeeded");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(report.runs[0].publish_stalled, "{:?}", report.runs[0]);
    assert!(report.runs[0].published > 0);
    // A WebSocket publisher goes on with the next phase (its frames are queued whole).
    assert!(report.runs[1].publish_stalled, "{:?}", report.runs[1]);
    server.abort();
}
