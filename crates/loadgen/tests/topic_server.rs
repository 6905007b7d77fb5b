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

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}
