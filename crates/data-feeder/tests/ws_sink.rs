//! The WebSocket sink, talking to a stand-in for the redis-ws-bridge.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use common::{Feeder, assert_coindesk_shape, config, fake_bridge, next_frame, serve_http};
use data_feeder::{SinkSpec, SourceSpec};
use service_kit::testing::free_port;
use tokio::net::TcpListener;

/// A JSON source answering `{"n":N}`, N counting requests from 1.
async fn counting_source() -> SourceSpec {
    let count = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        "/n",
        get(move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("{{\"n\":{n}}}") }
        }),
    );
    format!("{}/n", serve_http(router).await).parse().unwrap()
}

fn n_of(text: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    value["n"].as_u64().unwrap()
}

fn ws_sink(port: u16) -> SinkSpec {
    format!("ws://127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test]
async fn each_payload_is_one_text_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut frames = fake_bridge(listener, None);
    let feeder = Feeder::start(config(SourceSpec::Synthetic, ws_sink(port))).await;

    let mut texts = Vec::new();
    for _ in 0..4 {
        let (connection, text) = next_frame(&mut frames).await;
        assert_eq!(connection, 0);
        assert_coindesk_shape(text.as_bytes());
        texts.push(text);
    }
    for pair in texts.windows(2) {
        assert_ne!(pair[0], pair[1]);
    }
    // The echoes the bridge sends back are read and ignored without trouble.
    let status = feeder.status().await;
    assert!(status["published"].as_u64().unwrap() >= 4, "{status}");
    assert_eq!(status["failures"], 0, "{status}");
    feeder.shut_down().await;
}

#[tokio::test]
async fn a_bridge_that_comes_up_late_gets_only_the_latest_payload() {
    let port = free_port().unwrap();
    let feeder = Feeder::start(config(counting_source().await, ws_sink(port))).await;
    // Five polls made while nothing listens; the outage is counted.
    feeder.wait_for_counter("polls", 5).await;
    feeder.wait_for_counter("failures", 1).await;
    assert_eq!(feeder.counter("published").await, 0);

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let mut frames = fake_bridge(listener, None);
    let (_, first) = next_frame(&mut frames).await;
    // Payloads 1..4 were superseded while disconnected and never sent.
    let mut previous = n_of(&first);
    assert!(previous >= 5, "stale payload sent first: {first}");
    for _ in 0..3 {
        let (_, text) = next_frame(&mut frames).await;
        let n = n_of(&text);
        assert!(n > previous, "{n} after {previous}");
        previous = n;
    }
    feeder.shut_down().await;
}

#[tokio::test]
async fn the_sink_reconnects_when_the_bridge_drops_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut frames = fake_bridge(listener, Some(2));
    let feeder = Feeder::start(config(counting_source().await, ws_sink(port))).await;

    assert_eq!(next_frame(&mut frames).await.0, 0);
    assert_eq!(next_frame(&mut frames).await.0, 0);
    // Connection 0 is dropped now; frames continue on a new connection, in order.
    let (connection, text) = next_frame(&mut frames).await;
    assert_eq!(connection, 1, "{text}");
    let mut previous = n_of(&text);
    for _ in 0..2 {
        let (connection, text) = next_frame(&mut frames).await;
        assert_eq!(connection, 1);
        assert!(n_of(&text) > previous);
        previous = n_of(&text);
    }
    feeder.shut_down().await;
}
