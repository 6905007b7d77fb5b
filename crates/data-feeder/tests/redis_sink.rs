//! The feeder publishing straight to a real Redis channel.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use common::{Feeder, Subscriber, WAIT, assert_coindesk_shape, config, redis_sink};
use data_feeder::SourceSpec;
use service_kit::testing::{RedisServer, wait_until};

#[tokio::test]
async fn synthetic_payloads_reach_the_channel() {
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let feeder = Feeder::start(config(SourceSpec::Synthetic, redis_sink(&redis.url()))).await;

    let mut payloads = Vec::new();
    for _ in 0..5 {
        let payload = subscriber.next().await;
        assert_coindesk_shape(&payload);
        payloads.push(payload);
    }
    // A new price on every poll (probability 1): consecutive payloads differ.
    for pair in payloads.windows(2) {
        assert_ne!(pair[0], pair[1]);
    }
    let status = feeder.status().await;
    assert!(status["published"].as_u64().unwrap() >= 5, "{status}");
    assert_eq!(status["failures"], 0, "{status}");
    assert!(status["last_payload"]["bpi"]["USD"]["rate_float"].is_number());
    assert!(status["last_published_at"].as_str().unwrap().ends_with('Z'));
    feeder.shut_down().await;
}

#[tokio::test]
async fn polls_without_a_new_price_republish_identical_bytes() {
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "prices").await;
    let mut config = config(SourceSpec::Synthetic, redis_sink(&redis.url()));
    config.channel = "prices".to_owned();
    config.synthetic_change_probability = 0.0;
    let feeder = Feeder::start(config).await;

    let first = subscriber.next().await;
    assert_coindesk_shape(&first);
    for _ in 0..4 {
        assert_eq!(subscriber.next().await, first);
    }
    feeder.shut_down().await;
}

#[tokio::test]
async fn publishing_resumes_after_a_redis_restart() {
    let mut redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let feeder = Feeder::start(config(SourceSpec::Synthetic, redis_sink(&redis.url()))).await;
    subscriber.next().await;

    redis.kill().await.unwrap();
    feeder.wait_for_counter("failures", 1).await;
    let polls = feeder.counter("polls").await;
    // Polling goes on while the sink is down.
    feeder.wait_for_counter("polls", polls + 3).await;

    redis.restart().await.unwrap();
    let published = feeder.counter("published").await;
    let payload = subscriber.next().await;
    assert_coindesk_shape(&payload);
    feeder.wait_for_counter("published", published + 1).await;
    feeder.shut_down().await;
}

#[tokio::test]
async fn a_redis_sink_that_is_down_at_start_connects_later() {
    let mut redis = RedisServer::start().await.unwrap();
    redis.kill().await.unwrap();
    let feeder = Feeder::start(config(SourceSpec::Synthetic, redis_sink(&redis.url()))).await;
    feeder.wait_for_counter("failures", 1).await;
    assert_eq!(feeder.counter("published").await, 0);

    redis.restart().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    assert_coindesk_shape(&subscriber.next().await);
    wait_until(WAIT, || async { feeder.counter("published").await > 0 })
        .await
        .unwrap();
    feeder.shut_down().await;
}
