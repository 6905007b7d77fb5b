//! A value's meaning never changes on its way through: random doubles and integers of any size
//! (64-bit limits, ±2^53 ± 1, tens of digits) set through the Rust client come back exactly —
//! from a subscription (as full values and as deltas applied by the client), from `fetch`, and
//! through a topic view's reference topic.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use topic_client::{ConnectOptions, TopicClient, TopicEvent, TopicType};

/// Number literals to send: random doubles (every bit pattern that is finite), integers at and
/// around the edges of i64, u64 and 2^53, and random integers and decimals far past 64 bits.
fn literals(rng: &mut StdRng, count: usize) -> Vec<String> {
    let mut out: Vec<String> = [
        "930192.7818915497",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740993",
        "-9007199254740993",
        "123456789012345678901234567890",
        "-0.000000000000000000000000000001",
        "5e-324",
        "1.7976931348623157e308",
    ]
    .map(str::to_owned)
    .to_vec();
    while out.len() < count {
        let before = out.len();
        match rng.random_range(0..3) {
            0 => {
                let f = f64::from_bits(rng.random());
                if f.is_finite() {
                    // Written without the exponent's `+`, as people usually do.
                    out.push(serde_json::to_string(&f).unwrap().replace("e+", "e"));
                }
            }
            1 => {
                let digits = rng.random_range(1..40);
                let mut n: String = (0..digits)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                n = n.trim_start_matches('0').to_owned();
                if n.is_empty() {
                    n.push('0');
                }
                if rng.random_bool(0.5) && n != "0" {
                    n.insert(0, '-');
                }
                out.push(n);
            }
            _ => out.push(format!(
                "{}.{}",
                rng.random::<i64>(),
                rng.random_range(1..u64::MAX)
            )),
        }
        // Setting the value a topic already has delivers nothing: never repeat the last one.
        if out.len() > before && out.len() > 1 && out[out.len() - 1] == out[out.len() - 2] {
            out.pop();
        }
    }
    out
}

async fn client(server: &TestServer) -> TopicClient {
    TopicClient::connect(&server.ws_url(), ConnectOptions::default())
        .await
        .unwrap()
}

/// The JSON value `{"n": LITERAL, "pad": …}`: the padding makes later values travel as deltas.
fn payload(literal: &str) -> Value {
    let text = format!(r#"{{"n":{literal},"pad":"{}"}}"#, "p".repeat(200));
    serde_json::from_str(&text).unwrap()
}

/// The text of `value["n"]`, exactly as it was written — except that a positive exponent comes
/// back with its sign (`1e308` as `1e+308`: the same number, in serde_json's spelling).
fn n_text(value: &Value) -> String {
    number_text(&value["n"])
}

fn number_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap().replace("e+", "e")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_keep_their_exact_value_through_topics_deltas_views_and_fetch() {
    let server = TestServer::start().await;
    let mut rng = StdRng::seed_from_u64(0x5eed_2026);
    let numbers = literals(&mut rng, 300);
    let publisher = client(&server).await;
    publisher
        .add_topic("exact/json", TopicType::Json, BTreeMap::new())
        .await
        .unwrap();
    publisher
        .add_topic("exact/double", TopicType::Double, BTreeMap::new())
        .await
        .unwrap();
    publisher
        .create_view("n", "map exact/json to exact/view/n as <value(/n)>")
        .await
        .unwrap();
    let subscriber = client(&server).await;
    subscriber.subscribe("?exact//").await.unwrap();
    let mut deltas_possible = 0;
    for literal in &numbers {
        let value = payload(literal);
        publisher.set("exact/json", value.clone()).await.unwrap();
        let fetched = publisher.fetch("exact/json").await.unwrap();
        assert_eq!(
            n_text(fetched[0].value.as_ref().unwrap()),
            *literal,
            "fetch"
        );
        let via_view = publisher.fetch("exact/view/n").await.unwrap();
        assert_eq!(
            number_text(via_view[0].value.as_ref().unwrap()),
            *literal,
            "view"
        );
        let as_double: Option<f64> = literal.parse().ok().filter(|f: &f64| f.is_finite());
        if let Some(f) = as_double {
            publisher
                .set("exact/double", serde_json::from_str(literal).unwrap())
                .await
                .unwrap();
            let fetched = publisher.fetch("exact/double").await.unwrap();
            let back: f64 = serde_json::to_string(fetched[0].value.as_ref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "DOUBLE topic: {literal}");
        }
        // The subscriber sees the JSON topic's value, and the view's.
        let mut saw_json = false;
        let mut saw_view = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(saw_json && saw_view) {
            let event = tokio::time::timeout_at(deadline, subscriber.next_event())
                .await
                .unwrap_or_else(|_| panic!("no update for {literal}"))
                .unwrap();
            if let TopicEvent::Value { path, value, .. } = event {
                match path.as_str() {
                    "exact/json" if n_text(&value) == *literal => saw_json = true,
                    "exact/view/n" if number_text(&value) == *literal => saw_view = true,
                    "exact/json" | "exact/view/n" => {
                        // An earlier value still arriving is fine; a changed number is not.
                        let text = if path == "exact/json" {
                            n_text(&value)
                        } else {
                            number_text(&value)
                        };
                        assert!(numbers.contains(&text), "{path}: {text} was never set");
                    }
                    _ => {}
                }
            }
        }
        deltas_possible += 1;
    }
    assert_eq!(deltas_possible, numbers.len());
    server.stop().await;
}
