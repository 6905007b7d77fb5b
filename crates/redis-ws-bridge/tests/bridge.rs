//! End-to-end tests: a real redis-server, the bridge on 127.0.0.1:0, real WebSocket clients.

// Test helpers outside `#[test]` functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use redis_ws_bridge::Config;
use service_kit::testing::{RedisServer, wait_until};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn client_text_is_published_to_the_channel() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(CHANNEL).await.unwrap();

    let mut ws = bridge.connect().await;
    ws.send(Message::text(r#"{"price":42}"#)).await.unwrap();

    let mut messages = pubsub.on_message();
    let message = timeout(STEP, messages.next()).await.unwrap().unwrap();
    assert_eq!(message.get_channel_name(), CHANNEL);
    assert_eq!(message.get_payload_bytes(), br#"{"price":42}"#);
    drop(messages);
    // The bridge fans the channel back out, including to the sender.
    assert_eq!(next_data(&mut ws).await, Message::text(r#"{"price":42}"#));
    assert_eq!(bridge.stats.snapshot().published, 1);
    bridge.stop([ws]).await;
}

#[tokio::test]
async fn a_burst_of_client_messages_is_published_completely_and_in_order() {
    const BURST: usize = 2000;
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(CHANNEL).await.unwrap();

    let mut ws = bridge.connect().await;
    for i in 0..BURST {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();

    let mut messages = pubsub.on_message();
    for i in 0..BURST {
        let message = timeout(STEP, messages.next()).await.unwrap().unwrap();
        assert_eq!(message.get_payload_bytes(), format!("m{i}").as_bytes());
    }
    drop(messages);
    assert_eq!(bridge.stats.snapshot().published, BURST as u64);
    // The sender reads its own messages back from the channel.
    for i in 0..BURST {
        assert_eq!(next_data(&mut ws).await, Message::text(format!("m{i}")));
    }
    bridge.stop([ws]).await;
}

#[tokio::test]
async fn redis_messages_reach_every_client_identically_in_order() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let mut clients = bridge.connect_many(3).await;

    let mut sent = Vec::new();
    for i in 0..20 {
        let text = format!(r#"{{"seq":{i}}}"#);
        assert_eq!(
            publish(&redis, &text).await,
            1,
            "exactly one subscriber: the bridge"
        );
        sent.push(Message::text(text));
    }
    // A payload that is not UTF-8 goes out as a binary frame, bytes unchanged.
    let raw: &[u8] = &[0xff, 0xfe, 0x00, 0x01];
    publish(&redis, raw).await;
    sent.push(Message::Binary(Bytes::from_static(raw)));

    for ws in &mut clients {
        for expected in &sent {
            assert_eq!(&next_data(ws).await, expected);
        }
    }
    let stats = bridge.stats.snapshot();
    assert_eq!(stats.received, 21);
    assert_eq!(stats.delivered, 63);
    bridge.stop(clients).await;
}

#[tokio::test]
async fn one_redis_subscription_serves_all_clients() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let clients = bridge.connect_many(5).await;

    let mut conn = redis.connection().await.unwrap();
    let (channel, count): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(CHANNEL)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(channel, CHANNEL);
    assert_eq!(count, 1);
    bridge.stop(clients).await;
}

#[tokio::test]
async fn delivery_resumes_after_redis_restarts() {
    let mut redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let mut clients = bridge.connect_many(2).await;

    redis.kill().await.unwrap();
    bridge.wait_redis(false).await;
    let health = healthz(bridge.addr).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["redis_connected"], false);
    assert_eq!(health["clients"], 2);

    redis.restart().await.unwrap();
    // Keep publishing until the bridge has resubscribed and a message comes through.
    let publisher = redis.connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    let first = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery within 5 s of the restart"
        );
        n += 1;
        let _: u64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(format!("after-restart-{n}"))
            .query_async(&mut publisher.clone())
            .await
            .unwrap();
        if let Ok(Some(Ok(msg))) = timeout(Duration::from_millis(100), clients[0].next()).await {
            break msg;
        }
    };
    let Message::Text(first) = first else {
        panic!("expected text, got {first:?}")
    };
    assert!(first.starts_with("after-restart-"), "{first}");
    // The other client gets the same message.
    assert_eq!(next_data(&mut clients[1]).await, Message::Text(first));
    assert_eq!(healthz(bridge.addr).await["status"], "ok");
    // And publishing through the bridge works again over the shared connection.
    clients[0].send(Message::text("hello again")).await.unwrap();
    let stats = bridge.stats.clone();
    wait_until(STEP, move || {
        let stats = stats.clone();
        async move { stats.snapshot().published == 1 }
    })
    .await
    .unwrap();
    bridge.stop(clients).await;
}

#[tokio::test]
async fn publishing_while_redis_is_down_closes_that_client_with_1013() {
    let mut redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let mut clients = bridge.connect_many(2).await;
    redis.kill().await.unwrap();

    clients[0].send(Message::text("lost?")).await.unwrap();
    let (code, reason, _) = expect_close(&mut clients[0]).await;
    assert_eq!(code, 1013);
    assert_eq!(reason, redis_ws_bridge::close::REDIS_UNAVAILABLE.1);
    assert_eq!(bridge.stats.snapshot().publish_failures, 1);

    // The bridge is still up, and the other client is still connected.
    bridge.wait_clients(1).await;
    assert_eq!(healthz(bridge.addr).await["clients"], 1);
    redis.restart().await.unwrap();
    bridge.wait_redis(true).await;
    publish(&redis, "back").await;
    assert_eq!(next_data(&mut clients[1]).await, Message::text("back"));
    bridge.stop(clients.split_off(1)).await;
}

#[tokio::test]
async fn bridge_starts_while_redis_is_down_and_connects_later() {
    let mut redis = RedisServer::start().await.unwrap();
    redis.kill().await.unwrap();
    let bridge = Running::start(test_config(&redis)).await;
    assert_eq!(healthz(bridge.addr).await["redis_connected"], false);
    let mut ws = bridge.connect().await;
    redis.restart().await.unwrap();
    bridge.wait_redis(true).await;
    publish(&redis, "hi").await;
    assert_eq!(next_data(&mut ws).await, Message::text("hi"));
    bridge.stop([ws]).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_others_get_everything() {
    const MESSAGES: usize = 300;
    const SIZE: usize = 128 * 1024;
    /// Fast clients are never allowed to fall further behind than this, so only the client
    /// that stops reading can overflow its queue.
    const LAG: usize = 4;

    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| c.client_queue = 16).await;
    let mut clients = bridge.connect_many(3).await;
    let mut slow = clients.remove(0);

    // The fast clients count what they receive, checking order.
    let mut counters = Vec::new();
    let mut readers = Vec::new();
    for mut ws in clients {
        let (tx, rx) = tokio::sync::watch::channel(0usize);
        counters.push(rx);
        readers.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                let Message::Text(text) = next_data(&mut ws).await else {
                    panic!("expected text");
                };
                assert_eq!(text.len(), SIZE);
                assert!(
                    text.starts_with(&format!("{i:08}")),
                    "message {i} out of order"
                );
                tx.send_replace(i + 1);
            }
            ws
        }));
    }

    let mut conn = redis.connection().await.unwrap();
    let filler = "x".repeat(SIZE - 8);
    let publishing = async {
        for i in 0..MESSAGES {
            let payload = format!("{i:08}{filler}");
            let _: u64 = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(payload)
                .query_async(&mut conn)
                .await
                .unwrap();
            for counter in &mut counters {
                counter
                    .wait_for(|received| *received + LAG > i)
                    .await
                    .unwrap();
            }
        }
    };
    timeout(Duration::from_secs(20), publishing)
        .await
        .expect("fast clients keep up");
    for reader in readers {
        let ws = timeout(STEP, reader).await.unwrap().unwrap();
        drop(ws);
    }
    assert_eq!(bridge.stats.snapshot().slow_clients_closed, 1);

    // The slow client finds, after what its socket buffers held, the close frame saying why.
    let (code, reason, received) = expect_close(&mut slow).await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "send queue full: client too slow");
    assert!(received < MESSAGES, "received {received} of {MESSAGES}");
    bridge.stop(Vec::new()).await;
}

#[tokio::test]
async fn origin_allow_list_refuses_other_browser_origins() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| {
        c.allowed_origins = vec!["http://good.example".into(), "http://localhost:8080".into()];
    })
    .await;

    let with_origin = |origin: &'static str| {
        let mut request = bridge.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_static(origin));
        request
    };

    let refused = tokio_tungstenite::connect_async(with_origin("http://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected HTTP 403, got {other:?}"),
    }

    let (ws, response) = tokio_tungstenite::connect_async(with_origin("http://good.example"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    // No Origin header: a non-browser client, allowed.
    let cli = bridge.connect().await;
    bridge.wait_clients(2).await;
    bridge.stop([ws, cli]).await;
}

#[tokio::test]
async fn oversize_client_message_closes_only_that_client() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |c| c.max_message_bytes = 1024).await;
    let mut clients = bridge.connect_many(2).await;

    clients[0]
        .send(Message::text("x".repeat(4096)))
        .await
        .unwrap();
    let (code, reason, _) = expect_close(&mut clients[0]).await;
    assert_eq!(code, 1009);
    assert!(reason.starts_with("message too big"), "{reason}");
    assert!(reason.contains("1024"), "{reason}");

    bridge.wait_clients(1).await;
    assert_eq!(bridge.stats.snapshot().published, 0);
    // A message within the limit from the other client still goes through and fans out.
    clients[1]
        .send(Message::text("x".repeat(1000)))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut clients[1]).await,
        Message::text("x".repeat(1000))
    );
    bridge.stop(clients.split_off(1)).await;
}

#[tokio::test]
async fn binary_client_frames_are_refused_with_1003_and_not_published() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let mut clients = bridge.connect_many(2).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(CHANNEL).await.unwrap();

    // Text before the binary frame is published (in order); nothing after it is.
    clients[0].feed(Message::text("before-1")).await.unwrap();
    clients[0].feed(Message::text("before-2")).await.unwrap();
    clients[0]
        .feed(Message::binary(Bytes::from_static(b"\x00\x01")))
        .await
        .unwrap();
    clients[0].feed(Message::text("after")).await.unwrap();
    clients[0].flush().await.unwrap();
    let (code, reason, _) = expect_close(&mut clients[0]).await;
    assert_eq!(code, 1003);
    assert_eq!(reason, "binary frames are not supported: send text");
    bridge.wait_clients(1).await;
    assert_eq!(bridge.stats.snapshot().published, 2);

    // Redis saw exactly the two texts, then the test's own message: not "after".
    publish(&redis, "still here").await;
    let mut messages = pubsub.on_message();
    for expected in ["before-1", "before-2", "still here"] {
        let message = timeout(STEP, messages.next()).await.unwrap().unwrap();
        assert_eq!(message.get_payload_bytes(), expected.as_bytes());
    }
    drop(messages);
    for expected in ["before-1", "before-2", "still here"] {
        assert_eq!(next_data(&mut clients[1]).await, Message::text(expected));
    }
    bridge.stop(clients.split_off(1)).await;
}

#[tokio::test]
async fn healthz_reports_redis_and_clients() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let health = healthz(bridge.addr).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["redis_connected"], true);
    assert_eq!(health["clients"], 0);

    let clients = bridge.connect_many(2).await;
    assert_eq!(healthz(bridge.addr).await["clients"], 2);

    // A plain GET of the WebSocket endpoint is refused, and unknown paths are 404.
    let (status, _) = http_get(bridge.addr, "/").await;
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(http_get(bridge.addr, "/nope").await.0, 404);
    bridge.stop(clients).await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_returns() {
    let redis = RedisServer::start().await.unwrap();
    let bridge = Running::start_subscribed(&redis, |_| {}).await;
    let mut clients = bridge.connect_many(2).await;
    let shutdown = bridge.shutdown.clone();
    let task = bridge.task;
    shutdown.cancel();
    for ws in &mut clients {
        let (code, reason, _) = expect_close(ws).await;
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(bridge.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn bind_refuses_a_malformed_redis_url() {
    let mut config = Config::new("definitely not a url");
    config.listen = "127.0.0.1:0".parse().unwrap();
    let error = redis_ws_bridge::bind(config).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("invalid Redis URL"),
        "{error:#}"
    );
}
