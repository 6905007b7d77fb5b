//! Session recovery end to end: the Rust client subscribes through a TCP proxy that cuts or
//! black-holes its connection while a publisher sets values at a steady rate; the client
//! reconnects and resumes by itself.
//!
//! - conflation off: every value arrives exactly once, in order, across five 2 s cuts;
//! - conflation on: values never go backwards and end at the latest;
//! - past the reconnect window: the client is told recovery failed, subscribes again and
//!   still ends at the latest value;
//! - a black-holed connection is noticed by the heartbeat and resumed without loss.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns panic on purpose

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use topic_client::testing::CutProxy;
use topic_client::{ClientConfig, ConnectOptions, TopicClient, TopicEvent, TopicType};
use topic_server::Config;

const PATH: &str = "counter";
/// How long a whole scenario may take before the test fails.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

fn tune(config: &mut Config) {
    config.heartbeat_interval = Duration::from_millis(500);
    config.heartbeat_timeout = Duration::from_millis(500);
}

fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    }
}

/// What the subscriber saw.
#[derive(Default)]
struct Seen {
    values: Vec<u64>,
    recoveries: Vec<bool>,
}

/// Subscribes through `proxy` and records every value and reconnection until `last` arrives.
async fn subscriber(
    proxy: &CutProxy,
    last: u64,
) -> (Arc<Mutex<Seen>>, Arc<AtomicUsize>, JoinHandle<()>) {
    let client =
        TopicClient::connect_with(&proxy.url(), ConnectOptions::default(), client_config())
            .await
            .unwrap();
    client.subscribe(PATH).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let task = {
        let seen = Arc::clone(&seen);
        let reconnects = Arc::clone(&reconnects);
        tokio::spawn(async move {
            while let Some(event) = client.next_event().await {
                match event {
                    TopicEvent::Value { value, .. } => {
                        let n = value.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
                        seen.lock().await.values.push(n);
                        if n == last {
                            break;
                        }
                    }
                    TopicEvent::Reconnected { recovered } => {
                        seen.lock().await.recoveries.push(recovered);
                        reconnects.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            client.close().await;
        })
    };
    (seen, reconnects, task)
}

/// Sets 1..=last on the topic, one every `every`, straight to the server.
async fn publisher(server: &TestServer, last: u64, every: Duration) -> JoinHandle<()> {
    let client = TopicClient::connect(&server.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 1..=last {
            tick.tick().await;
            client.set(PATH, json!(n.to_string())).await.unwrap();
        }
        client.close().await;
    })
}

async fn add_topic(server: &TestServer, conflation: &str) {
    let client = TopicClient::connect(&server.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    let properties = BTreeMap::from([("CONFLATION".to_owned(), conflation.to_owned())]);
    client
        .add_topic_with_value(PATH, TopicType::String, properties, json!("0"))
        .await
        .unwrap();
    client.close().await;
}

/// Waits until the subscriber has reconnected `count` times.
async fn reconnected(reconnects: &AtomicUsize, count: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while reconnects.load(Ordering::SeqCst) < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client did not reconnect (#{count}) in time"));
}

/// Runs `faults` while 1..=last are published, then returns what the subscriber saw.
async fn scenario<F, Fut>(
    tweak: impl FnOnce(&mut Config),
    conflation: &str,
    last: u64,
    every: Duration,
    faults: F,
) -> Seen
where
    F: FnOnce(Arc<CutProxy>, Arc<AtomicUsize>) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = TestServer::start_with(|c| {
        tune(c);
        tweak(c);
    })
    .await;
    add_topic(&server, conflation).await;
    let proxy = Arc::new(CutProxy::start(server.addr).await);
    let (seen, reconnects, subscriber) = subscriber(&proxy, last).await;
    let publisher = publisher(&server, last, every).await;
    tokio::time::timeout(SCENARIO_LIMIT, async {
        faults(Arc::clone(&proxy), reconnects).await;
        publisher.await.unwrap();
        subscriber.await.unwrap();
    })
    .await
    .expect("scenario did not finish in time");
    server.stop().await;
    Arc::try_unwrap(seen).ok().map(Mutex::into_inner).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_conflation_every_value_arrives_exactly_once_in_order_across_cuts() {
    const LAST: u64 = 5_000;
    const CUTS: usize = 5;
    let seen = scenario(
        |_| {},
        "off",
        LAST,
        Duration::from_millis(4),
        |proxy, reconnects| async move {
            for cut in 1..=CUTS {
                tokio::time::sleep(Duration::from_millis(700)).await;
                proxy.cut(Duration::from_secs(2));
                reconnected(&reconnects, cut).await;
            }
        },
    )
    .await;
    assert_eq!(seen.recoveries, vec![true; CUTS], "every cut was resumed");
    assert_exactly_once(&seen.values, LAST);
}

/// Checks `values` is exactly 0..=last, saying what is wrong briefly when it is not.
fn assert_exactly_once(values: &[u64], last: u64) {
    let expected: Vec<u64> = (0..=last).collect();
    if values != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|n| !values.contains(n))
            .take(10)
            .collect();
        let repeated = values.windows(2).filter(|w| w[0] >= w[1]).count();
        panic!(
            "{} values received, expected {}; first missing: {missing:?}; out of order or repeated: {repeated}",
            values.len(),
            expected.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_conflation_values_never_go_backwards_and_end_at_the_latest() {
    const LAST: u64 = 3_000;
    let seen = scenario(
        |_| {},
        "conflate",
        LAST,
        Duration::from_millis(2),
        |proxy, reconnects| async move {
            for cut in 1..=2 {
                tokio::time::sleep(Duration::from_millis(700)).await;
                proxy.cut(Duration::from_secs(2));
                reconnected(&reconnects, cut).await;
            }
        },
    )
    .await;
    assert_eq!(seen.recoveries, [true, true]);
    assert!(
        seen.values.windows(2).all(|w| w[0] < w[1]),
        "values went backwards or repeated"
    );
    assert_eq!(seen.values.last(), Some(&LAST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_reconnect_window_recovery_fails_openly_and_the_client_catches_up() {
    const LAST: u64 = 1_500;
    let seen = scenario(
        |c| c.reconnect_window = Duration::from_millis(300),
        "off",
        LAST,
        Duration::from_millis(2),
        |proxy, reconnects| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.cut(Duration::from_secs(2));
            reconnected(&reconnects, 1).await;
        },
    )
    .await;
    assert_eq!(
        seen.recoveries,
        [false],
        "the client was told recovery failed"
    );
    assert!(
        seen.values.windows(2).all(|w| w[0] <= w[1]),
        "values went backwards"
    );
    assert_eq!(seen.values.last(), Some(&LAST));
    assert!(
        (seen.values.len() as u64) < LAST,
        "updates made while away are not replayed after a failed recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_noticed_by_the_heartbeat_and_resumed() {
    const LAST: u64 = 1_500;
    let seen = scenario(
        |_| {},
        "off",
        LAST,
        Duration::from_millis(2),
        |proxy, reconnects| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.black_hole();
            reconnected(&reconnects, 1).await;
        },
    )
    .await;
    assert_eq!(seen.recoveries, [true]);
    assert_exactly_once(&seen.values, LAST);
}

/// The value printed by the subscriber task at the start (`"0"`) parses to 0; make sure a
/// value that is not a number would fail the comparisons above instead of hiding.
#[test]
fn non_numbers_do_not_pass_as_counters() {
    let value = Value::String("x".to_owned());
    assert_eq!(value.as_str().and_then(|s| s.parse::<u64>().ok()), None);
}
