//! Delta streaming over real WebSockets: who gets a `delta`, who gets full values, and that
//! applying a delta to the held canonical bytes yields exactly the new value.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use base64::Engine as _;
use common::{Client, Held, TestServer, canonical_json, subscribed_id, value_of};
use diffusion_core::protocol::ServerMessage;
use serde_json::{Value, json};

const SAMPLE: &str = include_str!("../testdata/coindesk-bpi-sample.json");

fn sample() -> Value {
    serde_json::from_str(SAMPLE).unwrap()
}

/// The sample with the USD price changed, as one feed tick would.
fn tick(price: f64) -> Value {
    let mut v = sample();
    v["bpi"]["USD"]["rate_float"] = json!(price);
    v["bpi"]["USD"]["rate"] = json!(format!("{price:.4}"));
    v
}

/// Subscribes `client` to `path` and returns the topic id, taking the notice and value.
async fn subscribe(client: &mut Client, held: &mut Held, path: &str) -> u64 {
    client
        .ok(json!({"type":"subscribe","selector":format!(">{path}")}))
        .await;
    let notice = client.next().await;
    let id = subscribed_id(&notice, path);
    held.apply(&notice);
    let value = client.next().await;
    value_of(&value, id);
    held.apply(&value);
    id
}

fn delta_text(message: &ServerMessage, expected_id: u64) -> String {
    match message {
        ServerMessage::Delta { id, delta } => {
            assert_eq!(*id, expected_id);
            delta.clone()
        }
        other => panic!("expected a delta for topic {expected_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn small_change_of_a_large_json_value_arrives_as_a_delta() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    publisher
        .ok(json!({"type":"add","path":"redis/bitcoin","topicType":"JSON","value":sample()}))
        .await;
    let (mut held_a, mut held_b) = (Held::default(), Held::default());
    let id = subscribe(&mut a, &mut held_a, "redis/bitcoin").await;
    subscribe(&mut b, &mut held_b, "redis/bitcoin").await;
    assert_eq!(
        held_a.canonical(id).unwrap(),
        canonical_json(&sample()),
        "JSON values travel in canonical form"
    );

    for (n, price) in [56201.0042, 56199.5, 57000.25].into_iter().enumerate() {
        let new = tick(price);
        publisher
            .ok(json!({"type":"set","path":"redis/bitcoin","value":new}))
            .await;
        let (ma, mb) = (a.next().await, b.next().await);
        let (da, db) = (delta_text(&ma, id), delta_text(&mb, id));
        // Two in-step subscribers receive the same shared message.
        assert_eq!(da, db, "update {n}");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&da)
            .unwrap();
        assert!(
            raw.len() < 80,
            "delta of {} bytes for a 677-byte value",
            raw.len()
        );
        // Applying the delta to the held canonical bytes gives exactly the new value's.
        let applied =
            diffusion_core::delta::apply(held_a.canonical(id).unwrap(), &raw, 64 << 20).unwrap();
        assert_eq!(&applied[..], &canonical_json(&new)[..]);
        held_a.apply(&ma);
        held_b.apply(&mb);
        assert_eq!(held_a.value(id).unwrap(), new);
        assert_eq!(held_b.value(id).unwrap(), new);
    }
    // A subscriber joining now starts from the full current value, then gets deltas.
    let mut late = server.client().await;
    let mut held_late = Held::default();
    subscribe(&mut late, &mut held_late, "redis/bitcoin").await;
    assert_eq!(held_late.value(id).unwrap(), tick(57000.25));
    publisher
        .ok(json!({"type":"set","path":"redis/bitcoin","value":tick(1.5)}))
        .await;
    let m = late.next().await;
    delta_text(&m, id);
    held_late.apply(&m);
    assert_eq!(held_late.value(id).unwrap(), tick(1.5));
    server.stop().await;
}

#[tokio::test]
async fn string_and_binary_topics_send_deltas_over_their_canonical_bytes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = |word: &str| format!("\"quoted\" ünïcode {word} {}", "x".repeat(400));
    let bytes = |last: u8| {
        let mut v: Vec<u8> = (0..=255u8).cycle().take(600).collect();
        v.push(last);
        base64::engine::general_purpose::STANDARD.encode(v)
    };
    c.ok(json!({"type":"add","path":"s","topicType":"STRING","value":text("one")}))
        .await;
    c.ok(json!({"type":"add","path":"b","topicType":"BINARY","value":bytes(1)}))
        .await;
    let mut held = Held::default();
    let s = subscribe(&mut c, &mut held, "s").await;
    let b = subscribe(&mut c, &mut held, "b").await;
    c.ok(json!({"type":"set","path":"s","value":text("two")}))
        .await;
    c.ok(json!({"type":"set","path":"b","value":bytes(2)}))
        .await;
    for id in [s, b] {
        let m = c.next().await;
        delta_text(&m, id);
        held.apply(&m);
    }
    assert_eq!(held.value(s).unwrap(), json!(text("two")));
    assert_eq!(held.value(b).unwrap(), json!(bytes(2)));
    server.stop().await;
}

#[tokio::test]
async fn tiny_values_int64_and_publish_values_only_get_full_values() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let topics = [
        (
            "tiny/int",
            json!({"type":"add","path":"tiny/int","topicType":"INT64","value":1}),
        ),
        (
            "tiny/str",
            json!({"type":"add","path":"tiny/str","topicType":"STRING","value":"abcde"}),
        ),
        (
            "big/values-only",
            json!({"type":"add","path":"big/values-only","topicType":"JSON",
                   "properties":{"PUBLISH_VALUES_ONLY":"true"},"value":sample()}),
        ),
        (
            "big/double",
            json!({"type":"add","path":"big/double","topicType":"DOUBLE","value":1.5}),
        ),
    ];
    let mut held = Held::default();
    let mut ids = Vec::new();
    for (path, add) in &topics {
        c.ok(add.clone()).await;
        ids.push(subscribe(&mut c, &mut held, path).await);
    }
    let updates = [json!(2), json!("abcdf"), tick(56201.0042), json!(2.5)];
    for round in 0..3 {
        for ((path, _), value) in topics.iter().zip(&updates) {
            let mut value = value.clone();
            if round % 2 == 1 {
                // Alternate so every set is a change.
                value = match *path {
                    "tiny/int" => json!(3),
                    "tiny/str" => json!("abcdg"),
                    "big/double" => json!(3.5),
                    _ => tick(1.0),
                };
            }
            c.ok(json!({"type":"set","path":path,"value":value})).await;
            let m = c.next().await;
            let id = held.apply(&m).unwrap();
            assert!(
                matches!(m, ServerMessage::Value { .. }),
                "{path}: expected a full value, got {m:?}"
            );
            assert_eq!(held.value(id).unwrap(), value);
        }
    }
    assert!(held.deltas.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn equal_value_sends_no_delta_and_a_cleared_value_restarts_with_a_full_value() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let text = |n: u32| format!("{n} {}", "y".repeat(300));
    c.ok(json!({"type":"add","path":"t","topicType":"STRING","value":text(1)}))
        .await;
    let mut held = Held::default();
    let id = subscribe(&mut c, &mut held, "t").await;
    c.ok(json!({"type":"set","path":"t","value":text(1)})).await;
    assert_eq!(c.pending(), 0, "an equal value delivers nothing");
    c.ok(json!({"type":"set","path":"t","value":null})).await;
    let cleared = c.next().await;
    assert!(matches!(&cleared, ServerMessage::Value { value, .. } if value.is_null()));
    held.apply(&cleared);
    // No previous value: the next one is whole.
    c.ok(json!({"type":"set","path":"t","value":text(2)})).await;
    let m = c.next().await;
    assert_eq!(value_of(&m, id), json!(text(2)));
    held.apply(&m);
    c.ok(json!({"type":"set","path":"t","value":text(3)})).await;
    let m = c.next().await;
    delta_text(&m, id);
    held.apply(&m);
    assert_eq!(held.value(id).unwrap(), json!(text(3)));
    server.stop().await;
}
