//! The whole pipeline on a real redis-server: feeder → bridge → Redis → backend-app →
//! topic-server → subscribers.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pipeline_tests::{BackendSource, Pipeline, PipelineOptions};
use serde_json::Value;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use topic_client::{ConnectOptions, TopicClient, TopicEvent};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn bridge_client(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Next text frame from a bridge client, parsed as JSON.
async fn next_bridge_json(socket: &mut Socket, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = timeout(left, socket.next())
            .await
            .expect("bridge frame in time");
        if let Some(Ok(Message::Text(text))) = frame {
            return serde_json::from_str(&text).expect("bridge payload is JSON");
        }
        assert!(frame.is_some(), "bridge closed the connection");
    }
}

async fn subscriber(pipeline: &Pipeline) -> TopicClient {
    let client = TopicClient::connect(&pipeline.topic_server_url(), ConnectOptions::default())
        .await
        .unwrap();
    client.subscribe(pipeline.topic()).await.unwrap();
    client
}

/// Next value event, skipping notices.
async fn next_value(client: &TopicClient, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, client.next_event())
            .await
            .expect("value in time")
        {
            Some(TopicEvent::Value { value, .. }) => return value,
            Some(_) => continue,
            None => panic!("topic client closed"),
        }
    }
}

async fn publish(redis: &mut redis::aio::MultiplexedConnection, channel: &str, payload: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(redis)
        .await
        .unwrap();
}

/// Waits until the relay path is live and idle: publishes `{"sync":N}` markers until the
/// subscriber receives the newest one. Redis keeps a channel's order and the relay handles
/// messages one at a time, so afterwards no older message can still arrive.
async fn sync_relay(
    redis: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    topics: &TopicClient,
) {
    for marker in 0..50 {
        publish(redis, channel, &format!("{{\"sync\":{marker}}}")).await;
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(event)) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            topics.next_event(),
        )
        .await
        {
            if let TopicEvent::Value { value, .. } = event
                && value == serde_json::json!({ "sync": marker })
            {
                return;
            }
        }
    }
    panic!("relay never delivered a sync marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_tick_reaches_bridge_and_topic_subscribers_identically() {
    let pipeline = Pipeline::start(PipelineOptions::default()).await.unwrap();
    let mut bridge = bridge_client(&pipeline.bridge_url()).await;
    // The bridge client is live once it has seen one payload.
    next_bridge_json(&mut bridge, Duration::from_secs(5)).await;
    let topics = subscriber(&pipeline).await;
    // The first value is the retained one (possibly older than the bridge client); the next
    // was published while both clients were connected, so the bridge client must see it too.
    next_value(&topics, Duration::from_secs(5)).await;
    let value = next_value(&topics, Duration::from_secs(5)).await;
    assert!(value["bpi"]["USD"]["rate_float"].is_number(), "{value}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if next_bridge_json(&mut bridge, left).await == value {
            break;
        }
    }
    topics.close().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_gets_the_current_value_at_once() {
    let mut pipeline = Pipeline::start(PipelineOptions::default()).await.unwrap();
    let early = subscriber(&pipeline).await;
    next_value(&early, Duration::from_secs(5)).await;
    // Stop the feed: from now on nothing new is published, so whatever a late subscriber gets
    // can only be the retained value.
    pipeline.stop_tier("data-feeder").await.unwrap();
    let fetcher = TopicClient::connect(&pipeline.topic_server_url(), ConnectOptions::default())
        .await
        .unwrap();
    // Let the relay drain: the fetched value stops changing.
    let mut current = fetcher.fetch(pipeline.topic()).await.unwrap()[0]
        .value
        .clone();
    service_kit::testing::wait_until(Duration::from_secs(5), || {
        let fetcher = fetcher.clone();
        let before = current.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fetcher.fetch("redis/bitcoin").await.unwrap()[0].value == before
        }
    })
    .await
    .unwrap();
    current = fetcher.fetch(pipeline.topic()).await.unwrap()[0]
        .value
        .clone();

    let late = subscriber(&pipeline).await;
    let started = Instant::now();
    let value = next_value(&late, Duration::from_secs(2)).await;
    assert_eq!(Some(value), current);
    assert!(started.elapsed() < Duration::from_secs(1));
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_resumes_by_itself_after_redis_restarts() {
    let mut pipeline = Pipeline::start(PipelineOptions::default()).await.unwrap();
    let topics = subscriber(&pipeline).await;
    next_value(&topics, Duration::from_secs(5)).await;

    pipeline.redis.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // a real outage, not a blip
    pipeline.redis.restart().await.unwrap();
    let restarted = Instant::now();

    // Drain what was queued before the outage, then require fresh values.
    while timeout(Duration::from_millis(50), topics.next_event())
        .await
        .is_ok()
    {}
    let mut fresh = HashSet::new();
    while fresh.len() < 2 {
        let left = Duration::from_secs(5).saturating_sub(restarted.elapsed());
        assert!(
            !left.is_zero(),
            "flow did not resume within 5 s of the restart"
        );
        let value = next_value(&topics, left).await;
        fresh.insert(value.to_string());
    }
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_message_is_skipped_and_relaying_continues() {
    let pipeline = Pipeline::start(PipelineOptions {
        feeder_interval: None,
        backend_source: BackendSource::Redis,
    })
    .await
    .unwrap();
    let stats = pipeline.relay_stats.clone();
    service_kit::testing::wait_until(Duration::from_secs(5), || {
        let stats = stats.clone();
        async move {
            stats
                .topic_server_connected
                .load(std::sync::atomic::Ordering::Relaxed)
        }
    })
    .await
    .unwrap();
    let topics = subscriber(&pipeline).await;
    let mut redis = pipeline.redis.connection().await.unwrap();

    sync_relay(&mut redis, pipeline.channel(), &topics).await;

    for bad in ["not json", "{\"unterminated\": ", "\u{1F600} plain text"] {
        publish(&mut redis, pipeline.channel(), bad).await;
    }
    publish(&mut redis, pipeline.channel(), r#"{"after":"bad"}"#).await;
    let value = next_value(&topics, Duration::from_secs(5)).await;
    assert_eq!(value, serde_json::json!({"after": "bad"}));
    assert_eq!(
        pipeline
            .relay_stats
            .skipped_invalid
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    pipeline.stop().await.unwrap();
}

/// A pipeline reading Redis directly, with the relay connected.
async fn redis_pipeline() -> Pipeline {
    connected_pipeline(BackendSource::Redis).await
}

/// A pipeline without a feeder whose relay reads from `backend_source` and is connected.
async fn connected_pipeline(backend_source: BackendSource) -> Pipeline {
    let pipeline = Pipeline::start(PipelineOptions {
        feeder_interval: None,
        backend_source,
    })
    .await
    .unwrap();
    let stats = pipeline.relay_stats.clone();
    service_kit::testing::wait_until(Duration::from_secs(5), || {
        let stats = stats.clone();
        async move {
            stats
                .topic_server_connected
                .load(std::sync::atomic::Ordering::Relaxed)
        }
    })
    .await
    .unwrap();
    pipeline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_skipped_and_relaying_continues() {
    let pipeline = redis_pipeline().await;
    let topics = subscriber(&pipeline).await;
    let mut redis = pipeline.redis.connection().await.unwrap();
    sync_relay(&mut redis, pipeline.channel(), &topics).await;
    let big = format!(
        "{{\"big\":\"{}\"}}",
        "x".repeat(pipeline.max_relayed_bytes())
    );
    publish(&mut redis, pipeline.channel(), &big).await;
    publish(&mut redis, pipeline.channel(), r#"{"after":"big"}"#).await;
    let value = next_value(&topics, Duration::from_secs(5)).await;
    assert_eq!(value, serde_json::json!({"after": "big"}));
    let skipped = pipeline
        .relay_stats
        .skipped_oversize
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(skipped, 1);
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_topic_is_put_back_by_the_relay() {
    let pipeline = redis_pipeline().await;
    let topics = subscriber(&pipeline).await;
    let mut redis = pipeline.redis.connection().await.unwrap();
    sync_relay(&mut redis, pipeline.channel(), &topics).await;
    publish(&mut redis, pipeline.channel(), r#"{"n":1}"#).await;
    assert_eq!(
        next_value(&topics, Duration::from_secs(5)).await,
        serde_json::json!({"n": 1})
    );
    // Someone removes the relay's topic: it comes back at once, with the last value, without
    // waiting for the next message; the subscriber's selector picks it up again.
    let vandal = TopicClient::connect(&pipeline.topic_server_url(), ConnectOptions::default())
        .await
        .unwrap();
    vandal.remove(pipeline.topic()).await.unwrap();
    let mut removed = false;
    let value = loop {
        match timeout(Duration::from_secs(5), topics.next_event())
            .await
            .expect("event in time")
            .expect("client open")
        {
            TopicEvent::Unsubscribed { reason, .. } => {
                assert_eq!(reason, "removed");
                removed = true;
            }
            TopicEvent::Value { value, .. } if removed => break value,
            _ => {}
        }
    };
    assert_eq!(value, serde_json::json!({"n": 1}));
    // Subscribers see the topic back before the relay has read the server's reply.
    let stats = pipeline.relay_stats.clone();
    service_kit::testing::wait_until(Duration::from_secs(5), || {
        let stats = stats.clone();
        async move { stats.restored.load(std::sync::atomic::Ordering::Relaxed) == 1 }
    })
    .await
    .unwrap();
    // And relaying goes on into the restored topic.
    publish(&mut redis, pipeline.channel(), r#"{"n":2}"#).await;
    assert_eq!(
        next_value(&topics, Duration::from_secs(5)).await,
        serde_json::json!({"n": 2})
    );
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_value_is_not_resent() {
    let pipeline = Pipeline::start(PipelineOptions {
        feeder_interval: None,
        backend_source: BackendSource::Redis,
    })
    .await
    .unwrap();
    let topics = subscriber(&pipeline).await;
    let mut redis = pipeline.redis.connection().await.unwrap();
    sync_relay(&mut redis, pipeline.channel(), &topics).await;
    // Every message received so far has been set: count from here.
    let stats = pipeline.relay_stats.clone();
    let settled = |extra: u64| {
        let stats = stats.clone();
        move || {
            let stats = stats.clone();
            async move {
                let received = stats.received.load(std::sync::atomic::Ordering::Relaxed);
                let relayed = stats.relayed.load(std::sync::atomic::Ordering::Relaxed);
                received >= extra && relayed == received
            }
        }
    };
    service_kit::testing::wait_until(Duration::from_secs(5), settled(0))
        .await
        .unwrap();
    let relayed_before = stats.relayed.load(std::sync::atomic::Ordering::Relaxed);
    publish(&mut redis, pipeline.channel(), r#"{"price":1}"#).await;
    assert_eq!(
        next_value(&topics, Duration::from_secs(5)).await,
        serde_json::json!({"price": 1})
    );
    for _ in 0..3 {
        publish(&mut redis, pipeline.channel(), r#"{"price":1}"#).await;
    }
    publish(&mut redis, pipeline.channel(), r#"{"price":2}"#).await;
    // The very next value must be the changed one: the three repeats delivered nothing.
    let value = next_value(&topics, Duration::from_secs(5)).await;
    assert_eq!(value, serde_json::json!({"price": 2}));
    // Yet all five were set on the server (relayed), the repeats just not delivered.
    service_kit::testing::wait_until(Duration::from_secs(5), settled(relayed_before + 5))
        .await
        .unwrap();
    assert_eq!(
        stats.relayed.load(std::sync::atomic::Ordering::Relaxed),
        relayed_before + 5
    );
    pipeline.stop().await.unwrap();
}

/// A double that needs all 17 significant digits and an integer far beyond 64 bits: the relay
/// forwards the published bytes, so neither may be rounded on the way. Keys are in sorted order,
/// so a value holding them serialises back to the same text.
const EXACT_NUMBERS: &str =
    r#"{"big":123456789012345678901234567890,"rate_float":930192.7818915497}"#;

/// A connected pipeline reading from `source` whose relay has just set [`EXACT_NUMBERS`]; the
/// subscriber it returns has received that value, checked to be exact.
async fn relay_exact_numbers(source: BackendSource) -> (Pipeline, TopicClient) {
    let pipeline = connected_pipeline(source).await;
    let topics = subscriber(&pipeline).await;
    let mut redis = pipeline.redis.connection().await.unwrap();
    sync_relay(&mut redis, pipeline.channel(), &topics).await;
    publish(&mut redis, pipeline.channel(), EXACT_NUMBERS).await;
    let delivered = next_value(&topics, Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::to_string(&delivered).unwrap(),
        EXACT_NUMBERS,
        "{source:?}"
    );
    (pipeline, topics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_reach_topic_subscribers_exactly_as_published() {
    for source in [BackendSource::Redis, BackendSource::Bridge] {
        let (pipeline, topics) = relay_exact_numbers(source).await;
        topics.close().await;
        pipeline.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_fetched_from_the_topic_server_are_exactly_as_published() {
    for source in [BackendSource::Redis, BackendSource::Bridge] {
        let (pipeline, topics) = relay_exact_numbers(source).await;
        let fetcher = TopicClient::connect(&pipeline.topic_server_url(), ConnectOptions::default())
            .await
            .unwrap();
        let fetched = fetcher.fetch(pipeline.topic()).await.unwrap();
        assert_eq!(fetched.len(), 1, "{fetched:?}");
        let value = fetched[0].value.as_ref().expect("the topic has a value");
        assert_eq!(
            serde_json::to_string(value).unwrap(),
            EXACT_NUMBERS,
            "{source:?}"
        );
        fetcher.close().await;
        topics.close().await;
        pipeline.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bridge_client_is_dropped_without_slowing_the_others() {
    let pipeline = Pipeline::start(PipelineOptions {
        feeder_interval: None,
        backend_source: BackendSource::Redis,
    })
    .await
    .unwrap();
    // A client that never reads, and one that does.
    let stalled = bridge_client(&pipeline.bridge_url()).await;
    let mut healthy = bridge_client(&pipeline.bridge_url()).await;
    let mut redis = pipeline.redis.connection().await.unwrap();

    // Wait until the bridge's subscription is live.
    let mut attempts = 0;
    loop {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(pipeline.channel())
            .arg("{\"warmup\":true}")
            .query_async(&mut redis)
            .await
            .unwrap();
        if timeout(Duration::from_millis(200), healthy.next())
            .await
            .is_ok()
        {
            break;
        }
        attempts += 1;
        assert!(attempts < 50, "bridge never delivered");
    }
    while timeout(Duration::from_millis(50), healthy.next())
        .await
        .is_ok()
    {}

    // 64 KiB messages: the stalled client's socket buffers and its bounded queue fill up.
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(64 * 1024));
    let count = 400;
    let reader = tokio::spawn(async move {
        let mut received = 0;
        let started = Instant::now();
        while received < count {
            match timeout(Duration::from_secs(10), healthy.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => received += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("healthy client lost its stream: {other:?}"),
            }
        }
        started.elapsed()
    });
    for _ in 0..count {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(pipeline.channel())
            .arg(&big)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let elapsed = timeout(Duration::from_secs(20), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        elapsed < Duration::from_secs(15),
        "healthy client took {elapsed:?}"
    );

    // The stalled client was closed by the bridge: reading it now ends in a close.
    let mut stalled = stalled;
    let closed = timeout(Duration::from_secs(10), async {
        while let Some(frame) = stalled.next().await {
            match frame {
                Ok(Message::Close(_)) | Err(_) => return true,
                Ok(_) => {}
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(closed);
    pipeline.stop().await.unwrap();
}
