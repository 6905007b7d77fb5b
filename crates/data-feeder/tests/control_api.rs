//! The HTTP control API: status, pause/resume, live interval changes, validation, CORS.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::time::Duration;

use common::{Feeder, Subscriber, WAIT, config, redis_sink};
use data_feeder::SourceSpec;
use service_kit::testing::RedisServer;

/// Longer than many 50 ms intervals: long enough for a feeder that ignored a pause to publish
/// several times.
const QUIET_WINDOW: Duration = Duration::from_millis(500);

async fn feeder_with_subscriber(start_paused: bool) -> (RedisServer, Subscriber, Feeder) {
    let redis = RedisServer::start().await.unwrap();
    let subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let mut config = config(SourceSpec::Synthetic, redis_sink(&redis.url()));
    config.start_paused = start_paused;
    let feeder = Feeder::start(config).await;
    (redis, subscriber, feeder)
}

#[tokio::test]
async fn status_reports_configuration_and_counters() {
    let (redis, mut subscriber, feeder) = feeder_with_subscriber(false).await;
    subscriber.next().await;
    let status = feeder.status().await;
    let keys = [
        "running",
        "source",
        "sink",
        "interval_ms",
        "polls",
        "published",
        "failures",
        "last_payload",
        "last_published_at",
    ];
    let object = status.as_object().unwrap();
    assert_eq!(object.len(), keys.len(), "{status}");
    for key in keys {
        assert!(object.contains_key(key), "{key} missing: {status}");
    }
    assert_eq!(status["running"], true);
    assert_eq!(status["source"], "synthetic");
    assert_eq!(status["sink"], redis.url());
    assert_eq!(status["interval_ms"], 50);
    assert!(status["polls"].as_u64().unwrap() >= 1);
    assert_eq!(status["last_payload"]["chartName"], "Bitcoin");

    let health = feeder
        .http()
        .get(feeder.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    feeder.shut_down().await;
}

#[tokio::test]
async fn stop_pauses_publishing_and_start_resumes_it() {
    let (_redis, mut subscriber, feeder) = feeder_with_subscriber(false).await;
    subscriber.next().await;

    let (code, status) = feeder.post("/stop", "").await;
    assert_eq!(code, 200);
    assert_eq!(status["running"], false);
    let polls = feeder.counter("polls").await;
    // A payload handed to the sink before the stop may still arrive; nothing after it.
    let late = subscriber.count_within(QUIET_WINDOW).await;
    assert!(late <= 1, "{late} payloads published after /stop");
    assert_eq!(feeder.counter("polls").await, polls);
    // Stopping twice is harmless.
    assert_eq!(feeder.post("/stop", "").await.0, 200);

    let (code, status) = feeder.post("/start", "").await;
    assert_eq!(code, 200);
    assert_eq!(status["running"], true);
    subscriber.next().await;
    assert!(feeder.counter("polls").await > polls);
    feeder.shut_down().await;
}

#[tokio::test]
async fn a_feeder_started_paused_waits_for_start() {
    let (_redis, mut subscriber, feeder) = feeder_with_subscriber(true).await;
    let status = feeder.status().await;
    assert_eq!(status["running"], false);
    assert_eq!(subscriber.count_within(QUIET_WINDOW).await, 0);
    assert_eq!(feeder.counter("polls").await, 0);
    assert!(feeder.status().await["last_payload"].is_null());

    assert_eq!(feeder.post("/start", "").await.0, 200);
    common::assert_coindesk_shape(&subscriber.next().await);
    feeder.shut_down().await;
}

#[tokio::test]
async fn interval_changes_take_effect_at_once() {
    let (_redis, mut subscriber, feeder) = feeder_with_subscriber(false).await;
    subscriber.next().await;

    // An hour between polls: publishing all but stops (one poll may be under way).
    let (code, status) = feeder
        .post("/interval", r#"{"interval_ms": 3600000}"#)
        .await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["interval_ms"], 3_600_000);
    assert_eq!(feeder.status().await["interval_ms"], 3_600_000);
    subscriber.count_within(Duration::from_millis(100)).await;
    assert_eq!(subscriber.count_within(QUIET_WINDOW).await, 0);

    // Back to fast polls: the next poll is due at once, not an hour later.
    let (code, _) = feeder.post("/interval", r#"{"interval_ms": 100}"#).await;
    assert_eq!(code, 200);
    assert_eq!(feeder.status().await["interval_ms"], 100);
    subscriber.next().await;
    feeder.shut_down().await;
}

#[tokio::test]
async fn bad_interval_requests_get_a_400_and_change_nothing() {
    let (_redis, _subscriber, feeder) = feeder_with_subscriber(false).await;
    let cases = [
        (r#"{"interval_ms": 99}"#, "between 100 and 3600000"),
        (r#"{"interval_ms": 0}"#, "between 100 and 3600000"),
        (r#"{"interval_ms": 3600001}"#, "between 100 and 3600000"),
        (r#"{"interval_ms": -5}"#, "interval_ms"),
        (r#"{"interval_ms": 1.5}"#, "interval_ms"),
        (r#"{"interval_ms": "5000"}"#, "interval_ms"),
        (r#"{"interval": 5000}"#, "interval_ms"),
        (r#"{"interval_ms": 5000, "extra": 1}"#, "interval_ms"),
        (r#"{}"#, "interval_ms"),
        ("not json", "interval_ms"),
        ("", "interval_ms"),
    ];
    for (body, hint) in cases {
        let (code, answer) = feeder.post("/interval", body).await;
        assert_eq!(code, 400, "{body:?} -> {answer}");
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(message.contains(hint), "{body:?} -> {message}");
    }
    let status = feeder.status().await;
    assert_eq!(status["interval_ms"], 50);
    assert_eq!(status["running"], true);
    feeder.shut_down().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    let (_redis, _subscriber, feeder) = feeder_with_subscriber(true).await;
    let missing = feeder.http().get(feeder.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let wrong = feeder.http().get(feeder.url("/stop")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    // A refused request changes nothing.
    assert_eq!(feeder.status().await["running"], false);
    tokio::time::timeout(WAIT, feeder.shut_down())
        .await
        .unwrap();
}
