//! loadgen against an in-process topic server on loopback: the handshake (offering versions 2
//! and 1, following the server's pick), the publisher's `add`/`set`, and subscribers that
//! decode values and apply deltas.

use std::time::Duration;

use loadgen::{Config, Mode, System};

mod support;

use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_server_fan_out_is_measured() {
    let (url, shutdown, task) = support::topic_server().await;

    let mut config = Config::new(System::TopicServer, url);
    config.connections = 20;
    config.per_source = 10;
    config.modes = vec![Mode::FixedRate, Mode::Saturate];
    config.rate = 200.0;
    config.duration = 0.5;
    config.drain = 2.0;
    config.settle = 0.0;
    config.no_progress = true;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        loadgen::run(config, CancellationToken::new().clone()),
    )
    .await
    .expect("run finished in time")
    .expect("run succeeded");

    assert_eq!(report.connect.connected, 20);
    for run in &report.runs {
        assert_eq!(run.subscribers, 20, "{run:?}");
        assert!(run.deliveries > 0, "{run:?}");
        assert_eq!(run.decode_errors, 0, "{run:?}");
        assert_eq!(run.publish_rejections, 0, "{run:?}");
        assert!(run.drained, "{run:?}");
        assert!(run.latency_samples > 0, "{run:?}");
        // Every published message reached every subscriber, or was merged into a later one.
        assert!(run.deliveries <= run.expected_deliveries, "{run:?}");
    }
    // At a gentle fixed rate nothing is merged: every message reached every subscriber (some
    // during the drain, after the phase's delivery count was taken) and was timed.
    let fixed = &report.runs[0];
    assert_eq!(
        fixed.latency_samples, fixed.expected_deliveries,
        "{fixed:?}"
    );

    support::stop(shutdown, task).await;
}

/// The market scenario: many topics, each subscriber on a few of them through one selector set;
/// loadgen owes each subscriber only its topics' messages, so a gentle fixed rate is delivered
/// and timed exactly, and the saturating phase drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_subscribers_are_owed_their_topics_only() {
    let (url, shutdown, task) = support::topic_server().await;

    let mut config = Config::new(System::TopicServer, url);
    config.connections = 30;
    config.per_source = 10;
    config.topics = 12;
    config.topics_per_subscriber = 3;
    // Every topic holds a value before the subscribers arrive; those values are never counted.
    config.prime = true;
    config.modes = vec![Mode::FixedRate, Mode::Saturate];
    config.rate = 240.0;
    config.duration = 0.5;
    config.drain = 3.0;
    config.settle = 0.0;
    config.no_progress = true;
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        loadgen::run(config, CancellationToken::new()),
    )
    .await
    .expect("run finished in time")
    .expect("run succeeded");

    assert_eq!(report.connect.connected, 30);
    for run in &report.runs {
        assert_eq!(run.decode_errors, 0, "{run:?}");
        assert_eq!(run.publish_rejections, 0, "{run:?}");
        assert!(run.drained, "{run:?}");
        // 30 subscribers × 3 topics over 12 topics: each message is owed to 7.5 on average.
        let per_message = run.expected_deliveries as f64 / run.published as f64;
        assert!((7.0..=8.0).contains(&per_message), "{run:?}");
    }
    let fixed = &report.runs[0];
    assert_eq!(
        fixed.latency_samples, fixed.expected_deliveries,
        "{fixed:?}"
    );

    support::stop(shutdown, task).await;
}

/// A value published before a subscriber connected reaches it as the topic's current value: its
/// age is not a publish→receive latency (a reconnecting subscriber would otherwise record the
/// topic's whole quiet time), while the next update is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_value_sent_on_subscribing_is_not_timed() {
    use std::sync::Arc;

    use loadgen::payload::{PayloadBuilder, now_ns};
    use loadgen::publisher::Publisher;
    use loadgen::stats::Stats;
    use loadgen::subscriber::{Subscriber, SubscriberSpec};

    let (url, shutdown, task) = support::topic_server().await;
    let config = Config::new(System::TopicServer, url.clone());
    let plan = config.plan().unwrap();
    let mut publisher = Publisher::connect(&config, &plan).await.unwrap();
    let mut payloads = PayloadBuilder::new(100, false);
    let ten_seconds_ago = now_ns() - 10_000_000_000;
    publisher
        .publish(0, &payloads.build(1, ten_seconds_ago))
        .await
        .unwrap();

    let stats = Arc::new(Stats::new(1).unwrap());
    stats.set_recording(true);
    let spec = SubscriberSpec::new(
        System::TopicServer,
        &[url],
        &config.topic,
        "",
        "",
        Duration::from_secs(10),
    )
    .unwrap();
    let subscriber = Subscriber::open(&spec, 0, "127.0.0.1".parse().unwrap(), Arc::clone(&stats))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let reading = tokio::spawn(subscriber.run(stop.clone()));
    let delivered = |n: u64| {
        let stats = Arc::clone(&stats);
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while stats.snapshot().deliveries < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("delivered in time");
        }
    };
    delivered(1).await;
    publisher
        .publish(0, &payloads.build(2, now_ns()))
        .await
        .unwrap();
    delivered(2).await;
    // A frame is counted before its latencies are recorded: collect until the fresh update's
    // is in. The stale value was processed before it, so had it been timed it would be too.
    let mut timed = stats.take_histogram();
    tokio::time::timeout(Duration::from_secs(10), async {
        while timed.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            timed.add(stats.take_histogram()).unwrap();
        }
    })
    .await
    .expect("the fresh update timed");
    assert_eq!(timed.len(), 1, "only the fresh update is timed");
    assert!(
        timed.max() < 5_000_000,
        "a fresh update is timed: {} µs",
        timed.max()
    );

    stop.cancel();
    reading.await.unwrap();
    support::stop(shutdown, task).await;
}
