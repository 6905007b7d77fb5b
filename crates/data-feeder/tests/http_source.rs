//! An HTTP(S) JSON source: bodies pass through unchanged; failures are retried, never fatal.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Feeder, Subscriber, config, redis_sink, serve_http};
use data_feeder::SourceSpec;
use service_kit::testing::{RedisServer, free_port};

fn source(url: &str) -> SourceSpec {
    url.parse().unwrap()
}

/// A source whose n-th request (from 1) is answered by `answer(n)`.
async fn numbered_source<F>(answer: F) -> String
where
    F: Fn(usize) -> (StatusCode, String) + Clone + Send + Sync + 'static,
{
    let count = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        "/feed.json",
        get(move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let answer = answer.clone();
            async move { answer(n) }
        }),
    );
    format!("{}/feed.json", serve_http(router).await)
}

#[tokio::test]
async fn bodies_are_published_byte_for_byte() {
    // Odd spacing, key order, a trailing newline, non-ASCII text and a 2.50: none of it may change.
    const BODY: &str =
        "{ \"zeta\" : 1,\n  \"alpha\": [1, 2.50, \"caf\u{e9}\", 1e3],\t\"k\": {\"n\": null} }\n";
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let url = numbered_source(|_| (StatusCode::OK, BODY.to_owned())).await;
    let feeder = Feeder::start(config(source(&url), redis_sink(&redis.url()))).await;

    for _ in 0..3 {
        assert_eq!(subscriber.next().await, BODY.as_bytes());
    }
    let status = feeder.status().await;
    assert_eq!(status["source"], url);
    assert_eq!(status["last_payload"]["alpha"][2], "caf\u{e9}");
    feeder.shut_down().await;
}

#[tokio::test]
async fn a_failing_source_is_retried_until_it_recovers() {
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let url = numbered_source(|n| {
        if n <= 3 {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "{\"error\":\"boom\"}".to_owned(),
            )
        } else {
            (StatusCode::OK, format!("{{\"n\":{n}}}"))
        }
    })
    .await;
    let feeder = Feeder::start(config(source(&url), redis_sink(&redis.url()))).await;

    // The 500 answers (JSON though they are) are never published; the first good body is.
    assert_eq!(subscriber.next().await, "{\"n\":4}".as_bytes());
    assert_eq!(subscriber.next().await, "{\"n\":5}".as_bytes());
    let status = feeder.status().await;
    assert_eq!(status["failures"], 3, "{status}");
    assert!(status["polls"].as_u64().unwrap() >= 5, "{status}");
    feeder.shut_down().await;
}

#[tokio::test]
async fn non_json_bodies_are_not_published() {
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let url = numbered_source(|n| match n {
        1 => (StatusCode::OK, "<html>maintenance</html>".to_owned()),
        2 => (StatusCode::OK, "{\"truncated\": [1, 2".to_owned()),
        3 => (StatusCode::OK, String::new()),
        _ => (StatusCode::OK, format!("{{\"n\":{n}}}")),
    })
    .await;
    let feeder = Feeder::start(config(source(&url), redis_sink(&redis.url()))).await;

    assert_eq!(subscriber.next().await, "{\"n\":4}".as_bytes());
    assert_eq!(feeder.counter("failures").await, 3);
    feeder.shut_down().await;
}

#[tokio::test]
async fn a_slow_source_times_out_and_is_retried() {
    let redis = RedisServer::start().await.unwrap();
    let mut subscriber = Subscriber::start(&redis.url(), "app:notifications").await;
    let count = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        "/slow",
        get(move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                format!("{{\"n\":{n}}}")
            }
        }),
    );
    let url = format!("{}/slow", serve_http(router).await);
    let mut config = config(source(&url), redis_sink(&redis.url()));
    config.http_timeout = Duration::from_millis(200);
    let feeder = Feeder::start(config).await;

    assert_eq!(subscriber.next().await, "{\"n\":2}".as_bytes());
    assert_eq!(feeder.counter("failures").await, 1);
    feeder.shut_down().await;
}

#[tokio::test]
async fn an_unreachable_source_keeps_being_polled() {
    let redis = RedisServer::start().await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/nothing-listens-here",
        free_port().unwrap()
    );
    let feeder = Feeder::start(config(source(&url), redis_sink(&redis.url()))).await;
    feeder.wait_for_counter("failures", 4).await;
    let status = feeder.status().await;
    assert_eq!(status["running"], true);
    assert_eq!(status["published"], 0);
    assert!(status["last_payload"].is_null());
    feeder.shut_down().await;
}
