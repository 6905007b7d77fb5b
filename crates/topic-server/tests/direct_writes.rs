//! Direct writes (src/direct.rs): the flush threads write each session's frames straight onto
//! its socket, share a large fan-out between them, and leave to the writer task only what a
//! socket does not take. Whatever path the bytes take, every
//! subscriber gets every update once, in order, in intact frames.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, TestServer, subscribed_id, value_of};
use diffusion_core::protocol::ServerMessage;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The value of `topic_server_socket_writes_total{path="PATH"}` (0 when absent).
async fn socket_writes(metrics: SocketAddr, path: &str) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(metrics).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let prefix = format!("topic_server_socket_writes_total{{path=\"{path}\"}} ");
    response
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_large_fan_out_reaches_every_subscriber_in_order() {
    // Over the size at which a fan-out is shared with the flush threads.
    const SUBSCRIBERS: usize = 1_100;
    const UPDATES: i64 = 40;
    let server = TestServer::start_with(|c| {
        c.queue_limit_bytes = 8 * 1024 * 1024;
        c.max_connections_per_address = 0;
        c.max_connections = 0;
    })
    .await;
    let mut publisher = server.client().await;
    publisher
        .ok(
            json!({"type":"add","path":"fan","topicType":"INT64","value":0,
                   "properties":{"CONFLATION":"off"}}),
        )
        .await;
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let mut client = server.client().await;
        client
            .ok(json!({"type":"subscribe","selector":"fan"}))
            .await;
        let id = subscribed_id(&client.next().await, "fan");
        assert_eq!(value_of(&client.next().await, id), json!(0));
        subscribers.push((client, id));
    }
    let direct_before = socket_writes(server.metrics_addr, "direct").await;
    for value in 1..=UPDATES {
        publisher
            .ok(json!({"type":"set","path":"fan","value":value}))
            .await;
    }
    let check = async {
        for (client, id) in &mut subscribers {
            for expected in 1..=UPDATES {
                assert_eq!(value_of(&client.next().await, *id), json!(expected));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), check)
        .await
        .expect("subscribers did not get every update in time");
    let direct = socket_writes(server.metrics_addr, "direct").await - direct_before;
    // Updates that queue while the flush threads are busy go out together, so there may be
    // fewer writes than deliveries; but every subscriber was written to directly.
    assert!(
        direct >= SUBSCRIBERS as f64,
        "only {direct} direct writes for {SUBSCRIBERS} subscribers × {UPDATES} updates"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_stalls_gets_the_rest_intact_once_it_reads_again() {
    const UPDATES: usize = 200;
    const VALUE_BYTES: usize = 16 * 1024;
    let server = TestServer::start_with(|c| c.queue_limit_bytes = 64 * 1024 * 1024).await;
    let mut publisher = server.client().await;
    // A small receive buffer: the socket stops taking bytes after a few updates, so the rest
    // goes partly written, then through the writer task.
    let mut slow = Client::open_with_recv_buffer(&server.ws_url(), Some(8 * 1024)).await;
    slow.handshake().await;
    publisher
        .ok(
            json!({"type":"add","path":"big","topicType":"STRING","value":"start",
                   "properties":{"CONFLATION":"off","PUBLISH_VALUES_ONLY":"true"}}),
        )
        .await;
    slow.ok(json!({"type":"subscribe","selector":"big"})).await;
    let id = subscribed_id(&slow.next().await, "big");
    assert_eq!(value_of(&slow.next().await, id), json!("start"));

    let writer_before = socket_writes(server.metrics_addr, "writer").await;
    let filler = "v".repeat(VALUE_BYTES);
    for i in 0..UPDATES {
        publisher
            .ok(json!({"type":"set","path":"big","value":format!("{i:06}{filler}")}))
            .await;
    }
    // The WebSocket layer's own answer (a pong) must slot in between whole frames.
    slow.send_raw(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await;
    let drain = async {
        for i in 0..UPDATES {
            let ServerMessage::Value { value, .. } = slow.next().await else {
                panic!("expected value {i}");
            };
            let text = value.as_str().unwrap();
            assert_eq!(text.len(), 6 + VALUE_BYTES, "value {i} is not whole");
            assert_eq!(&text[..6], format!("{i:06}"), "values out of order");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .expect("the stalled reader did not get its backlog");
    let writer = socket_writes(server.metrics_addr, "writer").await - writer_before;
    assert!(
        writer > 0.0,
        "the writer task never wrote: the socket took everything at once"
    );
    // Once the backlog is gone, later updates still flow (the pong's flush did not leave the
    // writer task waiting for a wake-up that went to the reader).
    let more = async {
        for i in UPDATES..UPDATES + 20 {
            publisher
                .ok(json!({"type":"set","path":"big","value":format!("{i:06}{filler}")}))
                .await;
            let ServerMessage::Value { value, .. } = slow.next().await else {
                panic!("expected value {i}");
            };
            assert_eq!(&value.as_str().unwrap()[..6], format!("{i:06}"));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), more)
        .await
        .expect("updates after the backlog did not arrive");
    slow.ping().await;
    publisher.ping().await;
    server.stop().await;
}
