//! The reconnecting Redis subscription against a real redis-server that dies and comes back.

#![allow(clippy::unwrap_used)] // a test: failures should stop it

use std::time::Duration;

use bytes::Bytes;
use service_kit::redis_subscription::{self, SubscriptionEvent};
use service_kit::testing::RedisServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn next(events: &mut mpsc::Receiver<SubscriptionEvent>) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the subscription is running")
}

async fn publish(redis: &RedisServer, payload: &str) {
    let mut connection = redis.connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("c")
        .arg(payload)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_subscription_reports_an_outage_and_resumes_after_it() {
    let mut redis = RedisServer::start().await.unwrap();
    let (sender, mut events) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(redis_subscription::run(
        redis.url(),
        "c".to_owned(),
        sender,
        shutdown.clone(),
    ));
    assert_eq!(next(&mut events).await, SubscriptionEvent::Connected);
    publish(&redis, "one").await;
    assert_eq!(
        next(&mut events).await,
        SubscriptionEvent::Message(Bytes::from_static(b"one"))
    );

    redis.kill().await.unwrap();
    assert_eq!(next(&mut events).await, SubscriptionEvent::Disconnected);
    redis.restart().await.unwrap();
    // Failed attempts while Redis was away each report Disconnected; then it is back.
    loop {
        match next(&mut events).await {
            SubscriptionEvent::Disconnected => continue,
            SubscriptionEvent::Connected => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    publish(&redis, "two").await;
    assert_eq!(
        next(&mut events).await,
        SubscriptionEvent::Message(Bytes::from_static(b"two"))
    );

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_subscription_stops_when_its_receiver_is_dropped() {
    let redis = RedisServer::start().await.unwrap();
    let (sender, mut events) = mpsc::channel(16);
    let task = tokio::spawn(redis_subscription::run(
        redis.url(),
        "c".to_owned(),
        sender,
        CancellationToken::new(),
    ));
    assert_eq!(next(&mut events).await, SubscriptionEvent::Connected);
    drop(events);
    publish(&redis, "nobody listens").await;
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
