//! Runs split the way the cluster benchmark splits them, against in-process topic servers on
//! loopback: subscribers spread over several servers, and observer runs that count what another
//! run publishes (shared `--seq-base`, `--ready-file`), merged into one result.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use std::path::Path;
use std::time::Duration;

use loadgen::{Config, Mode, Report, System};
use tokio_util::sync::CancellationToken;

mod support;

/// A topic server on a free loopback port; its URL, and the token that stops it.
async fn topic_server() -> (String, CancellationToken) {
    let (url, shutdown, _task) = support::topic_server().await;
    (url, shutdown)
}

fn config(urls: &[&str]) -> Config {
    let mut config = Config::new(System::TopicServer, urls[0]);
    config.url = urls.iter().map(|u| (*u).to_owned()).collect();
    config.per_source = 10;
    config.rate = 20.0;
    config.duration = 0.5;
    config.settle = 0.0;
    config.no_progress = true;
    config
}

async fn run(config: Config, shutdown: CancellationToken) -> Report {
    tokio::time::timeout(Duration::from_secs(30), loadgen::run(config, shutdown))
        .await
        .expect("run finished in time")
        .expect("run succeeded")
}

async fn wait_for(path: &Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_take_the_servers_in_turn() {
    // Two independent servers (no cluster): the publisher's topic lives on the first only, so
    // exactly the subscribers connected to it (every other one) receive.
    let (first, stop_first) = topic_server().await;
    let (second, stop_second) = topic_server().await;
    let mut config = config(&[&first, &second]);
    config.connections = 6;
    config.drain = 0.5;
    let report = run(config, CancellationToken::new()).await;

    assert_eq!(report.url, format!("{first},{second}"));
    assert_eq!(report.connect.connected, 6);
    let phase = &report.runs[0];
    assert!(phase.published > 0, "{phase:?}");
    assert_eq!(phase.latency_samples, phase.published * 3, "{phase:?}");
    assert!(
        !phase.drained,
        "half the subscribers never catch up: {phase:?}"
    );
    stop_first.cancel();
    stop_second.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_count_what_another_run_publishes() {
    let (url, stop_server) = topic_server().await;
    let dir = std::env::temp_dir().join(format!("loadgen-observers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seq_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    // Two observers with subscribers from their own source addresses, as separate processes
    // would be; each says when it is ready and observes until told to stop.
    let stop_observers = CancellationToken::new();
    let mut observers = Vec::new();
    for (i, source) in ["127.0.0.2", "127.0.1.2"].into_iter().enumerate() {
        let mut observer = config(&[&url]);
        observer.connections = 5 + i;
        observer.modes = vec![Mode::Observe];
        observer.duration = 30.0;
        observer.seq_base = Some(seq_base);
        observer.source_base = source.parse().unwrap();
        let ready = dir.join(format!("ready-{i}.json"));
        let _ = std::fs::remove_file(&ready);
        observer.ready_file = Some(ready.clone());
        observers.push((tokio::spawn(run(observer, stop_observers.clone())), ready));
    }
    for (_, ready) in &observers {
        wait_for(ready).await;
        let connect: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ready).unwrap()).unwrap();
        assert!(connect["connected"].as_u64().unwrap() >= 5, "{connect}");
    }

    // The primary publishes, holds no subscribers, and samples the "server" (this process).
    let mut primary = config(&[&url]);
    primary.connections = 0;
    primary.modes = vec![Mode::FixedRate];
    primary.seq_base = Some(seq_base);
    primary.drain = 0.0;
    primary.server_pid = vec![std::process::id()];
    let primary = run(primary, CancellationToken::new()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_observers.cancel();
    let mut reports = vec![primary];
    for (task, _) in observers {
        reports.push(task.await.unwrap());
    }

    let merged = loadgen::merge::merge(&reports).unwrap();
    assert_eq!(merged.processes, 3);
    assert_eq!(merged.connect.connected, 11);
    let phase = &merged.runs[0];
    assert_eq!(phase.mode, "fixed-rate");
    assert_eq!(phase.subscribers, 11);
    assert!(phase.published >= 5, "{phase:?}");
    // Nothing merged at this rate: every message reached every observer's subscriber once.
    assert_eq!(phase.expected_deliveries, phase.published * 11, "{phase:?}");
    assert_eq!(phase.deliveries, phase.expected_deliveries, "{phase:?}");
    assert_eq!(phase.latency_samples, phase.deliveries, "{phase:?}");
    assert_eq!(phase.decode_errors, 0, "{phase:?}");
    assert!(
        phase.p50_ms > 0.0 && phase.p50_ms <= phase.p99_ms,
        "{phase:?}"
    );
    assert_eq!(phase.server_processes.len(), 1, "{phase:?}");
    assert_eq!(phase.server_processes[0].pid, std::process::id());
    assert!(!phase.server_processes[0].name.is_empty(), "{phase:?}");
    assert!(phase.server_cpu_us_per_delivery > 0.0, "{phase:?}");
    // The merged result reads back as a report (what loadgen-merge writes).
    let json = serde_json::to_string(&merged).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.runs[0].deliveries, phase.deliveries);

    stop_server.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_publishers_take_turns() {
    let (url, stop_server) = topic_server().await;
    let mut config = config(&[&url]);
    config.connections = 4;
    config.publishers = 3;
    config.drain = 2.0;
    let report = run(config, CancellationToken::new()).await;
    let phase = &report.runs[0];
    assert!(phase.published >= 5, "{phase:?}");
    assert_eq!(phase.publish_rejections, 0, "{phase:?}");
    assert!(phase.drained, "{phase:?}");
    assert_eq!(phase.latency_samples, phase.published * 4, "{phase:?}");
    stop_server.cancel();
}
