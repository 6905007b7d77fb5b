//! loadgen against an in-process limit server, on loopback: subscribers connect from
//! 127.0.0.2/127.0.0.3, the publisher publishes, deliveries and latencies come back as JSON.

mod support;

use std::time::Duration;

use loadgen::limit::{LimitConfig, bind};
use loadgen::{Config, Mode, System};
use tokio_util::sync::CancellationToken;

async fn limit_server() -> anyhow::Result<(
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    String,
)> {
    let server = bind(LimitConfig {
        listen: "127.0.0.1:0".parse()?,
        ..LimitConfig::default()
    })
    .await?;
    let url = format!("ws://{}/", server.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Ok((shutdown, task, url))
}

fn quick_config(url: &str) -> Config {
    let mut config = Config::new(System::Limit, url);
    config.connections = 20;
    config.per_source = 10; // two source addresses
    config.modes = vec![Mode::FixedRate, Mode::Saturate];
    config.rate = 200.0;
    config.duration = 0.5;
    config.drain = 1.0;
    config.settle = 0.0;
    config.no_progress = true;
    config.server_pid = vec![std::process::id()];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_server_delivers_to_every_subscriber() {
    let (shutdown, server, url) = limit_server().await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        loadgen::run(quick_config(&url), CancellationToken::new().clone()),
    )
    .await
    .expect("run finished in time")
    .expect("run succeeded");

    assert_eq!(report.connect.connected, 20);
    assert_eq!(report.connect.source_addresses, 2);
    assert!(report.connect.connections_per_s > 0.0);
    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        assert_eq!(run.subscribers, 20, "{run:?}");
        assert!(run.published > 0, "{run:?}");
        assert!(run.deliveries > 0, "{run:?}");
        assert!(run.drained, "{run:?}");
        assert_eq!(run.decode_errors, 0, "{run:?}");
        assert!(run.latency_samples > 0, "{run:?}");
        assert!(run.p50_ms > 0.0 && run.p50_ms <= run.p99_ms, "{run:?}");
        assert!(run.bytes_per_delivery >= 90.0, "{run:?}");
        assert!(run.server_rss_bytes > 0, "{run:?}");
    }
    // Every published message reached every subscriber (the limit server drops nothing).
    let total_published: u64 = report.runs.iter().map(|r| r.published).sum();
    let total: u64 = report.runs.iter().map(|r| r.deliveries).sum();
    assert!(total <= total_published * 20);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["system"], "limit");
    assert_eq!(json["runs"][0]["mode"], "fixed-rate");
    assert_eq!(json["runs"][1]["mode"], "saturate");
    assert!(json["runs"][1]["deliveries_per_s"].as_f64().unwrap() > 0.0);

    support::stop(shutdown, server).await;
}

#[tokio::test]
async fn nothing_listening_is_a_clear_error() {
    let port = service_kit::testing::free_port().unwrap();
    let mut config = quick_config(&format!("ws://127.0.0.1:{port}/"));
    config.modes = vec![Mode::Idle];
    config.connections = 3;
    config.connect_timeout = 2.0;
    let error = loadgen::run(config, CancellationToken::new().clone())
        .await
        .expect_err("no server");
    let text = format!("{error:#}");
    assert!(text.contains("no subscriber could connect"), "{text}");
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let mut config = quick_config("ws://127.0.0.1:1/");
    config.rate = 0.0;
    let error = loadgen::run(config, CancellationToken::new().clone())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--rate"), "{error}");
    for (field, value) in [
        ("drain", -1.0),
        ("settle", f64::INFINITY),
        ("duration", f64::NAN),
    ] {
        let mut config = quick_config("ws://127.0.0.1:1/");
        match field {
            "drain" => config.drain = value,
            "settle" => config.settle = value,
            _ => config.duration = value,
        }
        let error = loadgen::run(config, CancellationToken::new().clone())
            .await
            .unwrap_err();
        assert!(error.to_string().contains(field), "{field}: {error}");
    }
    let mut config = quick_config("not a url");
    config.modes = vec![Mode::Idle];
    assert!(
        loadgen::run(config, CancellationToken::new().clone())
            .await
            .is_err()
    );
}
