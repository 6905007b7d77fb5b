//! The relay against a real redis-server and a real topic server that is not there at first.

#![allow(clippy::unwrap_used)] // a test: failures should stop it

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backend_app::{Config, Relay, SourceUrl};
use serde_json::json;
use service_kit::testing::{RedisServer, free_port, wait_until};
use tokio_util::sync::CancellationToken;
use topic_client::{ConnectOptions, TopicClient, TopicEvent};

const WAIT: Duration = Duration::from_secs(10);
const CHANNEL: &str = "prices";
const TOPIC: &str = "relay/latest";

/// PUBLISHes `payload`; returns how many subscribers received it.
async fn publish(redis: &RedisServer, payload: &str) -> i64 {
    let mut connection = redis.connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(payload)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_latest_message_waits_for_an_absent_topic_server() {
    let redis = RedisServer::start().await.unwrap();
    let port = free_port().unwrap();
    let relay = Relay::new(Config {
        from: SourceUrl::Redis(redis.url()),
        channel: CHANNEL.to_owned(),
        topic_server: format!("ws://127.0.0.1:{port}"),
        topic: TOPIC.to_owned(),
        identity: Default::default(),
        redis_ca_file: None,
        max_message_bytes: 1024,
    });
    let stats = relay.stats();
    let shutdown = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));

    // The relay's Redis subscription is live once a PUBLISH reaches a subscriber.
    wait_until(WAIT, || async { publish(&redis, r#"{"n":0}"#).await > 0 })
        .await
        .unwrap();
    for n in 1..=3 {
        publish(&redis, &format!(r#"{{"n":{n}}}"#)).await;
    }
    publish(&redis, "not json").await;
    publish(&redis, &format!(r#"{{"n":"{}"}}"#, "x".repeat(2000))).await;
    // The skipped ones were published last: once both are counted, everything was received.
    wait_until(WAIT, || async {
        stats.skipped_invalid.load(Ordering::Relaxed) == 1
            && stats.skipped_oversize.load(Ordering::Relaxed) == 1
    })
    .await
    .unwrap();
    // Every JSON message but the newest was superseded; nothing reached a topic server.
    let received = stats.received.load(Ordering::Relaxed);
    assert_eq!(stats.superseded.load(Ordering::Relaxed), received - 3);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 0);
    assert!(!stats.topic_server_connected.load(Ordering::Relaxed));

    // The topic server comes up: the relay finds it and sets the one message it kept.
    let server = topic_server::bind(topic_server::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..topic_server::Config::default()
    })
    .await
    .unwrap();
    let server_shutdown = CancellationToken::new();
    let server_task = tokio::spawn(server.run(server_shutdown.clone()));
    wait_until(WAIT, || async {
        stats.relayed.load(Ordering::Relaxed) == 1
    })
    .await
    .unwrap();
    let client = TopicClient::connect(&format!("ws://127.0.0.1:{port}"), ConnectOptions::default())
        .await
        .unwrap();
    client.subscribe(TOPIC).await.unwrap();
    let value = loop {
        match tokio::time::timeout(WAIT, client.next_event())
            .await
            .unwrap()
        {
            Some(TopicEvent::Value { value, .. }) => break value,
            Some(_) => continue,
            None => panic!("the topic client closed"),
        }
    };
    assert_eq!(value, json!({"n": 3}));
    client.close().await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, relay_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server_shutdown.cancel();
    tokio::time::timeout(WAIT, server_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
