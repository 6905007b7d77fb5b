//! The hostile-input suite: the platform's real processes (topic-server, redis-ws-bridge,
//! data-feeder, backend-app, topic-cli and a real redis-server) attacked over loopback the way
//! a hostile client would. Every case asserts the attacker's documented error or clean close;
//! after every case the harness checks that `/healthz` answers, that a concurrent subscriber
//! kept receiving (its worst publish→receive latency during the case is within
//! `CANARY_BOUND`), that the processes still run and that the topic server's memory stayed
//! under `RSS_CAP`. The table of cases is written to `hostile-report.md` beside the binaries
//! (docs/reliability.md reproduces it). `scripts/test.sh` runs it against the release build
//! (`HOSTILE_BIN_DIR=target/release`).

#![allow(clippy::unwrap_used)] // a test: failures should stop it

mod cases;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hostile_tests::{
    CANARY_ADDRESS, Canary, Ready, Row, Service, bounded, http_get, markdown, service,
};
use service_kit::testing::RedisServer;

/// The canary's worst publish→receive latency allowed during any case.
const CANARY_BOUND: Duration = Duration::from_millis(200);
/// The topic server's resident memory may not pass this (its limits are far below).
const RSS_CAP: u64 = 384 * 1024 * 1024;
/// The other tiers' cap.
const TIER_RSS_CAP: u64 = 192 * 1024 * 1024;

/// The topic server's limits in this suite: small enough to reach quickly.
const MAX_TOPICS: usize = 1_500;
const MAX_TREE_BYTES: usize = 32 * 1024 * 1024;
const MAX_VIEWS: usize = 20;
const MAX_VIEW_SPEC_BYTES: usize = 8_192;
const MAX_VIEW_RESULTS: usize = 1_000;
const MAX_VIEW_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
const MAX_DELAYED: usize = 1_000;
const MAX_SELECTORS: usize = 500;
const MAX_SELECTOR_BYTES: usize = 4 * 1024 * 1024;
const MAX_FETCH_BYTES: usize = 256 * 1024;
const MAX_CONNECTIONS: usize = 300;
const MAX_PER_ADDRESS: usize = 100;
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
const QUEUE_LIMIT: usize = 1024 * 1024;
const RATE: u32 = 1_000;
const BRIDGE_PER_ADDRESS: usize = 50;
const BRIDGE_MAX_MESSAGE: usize = 1024 * 1024;

/// Everything the cases can reach.
struct Ctx {
    redis: RedisServer,
    topic_server: Service,
    bridge: Service,
    feeder: Service,
    backend: Service,
}

impl Ctx {
    /// The topic server's WebSocket URL.
    fn ws(&self) -> String {
        format!("ws://{}/ws", self.topic_server.addr)
    }

    /// The bridge's WebSocket URL.
    fn bridge_ws(&self) -> String {
        format!("ws://{}/", self.bridge.addr)
    }
}

async fn start() -> anyhow::Result<Ctx> {
    let redis = RedisServer::start().await?;
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let n = |v: usize| v.to_string();
    let topic_server = service(
        "topic-server",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--web-dir".into(),
            web.display().to_string(),
            "--max-topics".into(),
            n(MAX_TOPICS),
            "--max-tree-bytes".into(),
            n(MAX_TREE_BYTES),
            "--max-views".into(),
            n(MAX_VIEWS),
            "--max-view-spec-bytes".into(),
            n(MAX_VIEW_SPEC_BYTES),
            "--max-view-results".into(),
            n(MAX_VIEW_RESULTS),
            "--max-view-output-bytes".into(),
            n(MAX_VIEW_OUTPUT_BYTES),
            "--max-delayed-results".into(),
            n(MAX_DELAYED),
            "--max-selectors-per-session".into(),
            n(MAX_SELECTORS),
            "--max-selector-bytes-per-session".into(),
            n(MAX_SELECTOR_BYTES),
            "--max-fetch-reply-bytes".into(),
            n(MAX_FETCH_BYTES),
            "--max-connections".into(),
            n(MAX_CONNECTIONS),
            "--max-connections-per-address".into(),
            n(MAX_PER_ADDRESS),
            "--max-message-bytes".into(),
            n(MAX_MESSAGE_BYTES),
            "--queue-limit-bytes".into(),
            n(QUEUE_LIMIT),
            "--max-requests-per-second".into(),
            RATE.to_string(),
            "--handshake-timeout".into(),
            "2s".into(),
            "--request-head-timeout".into(),
            "2s".into(),
        ],
        Ready::LogAddress("addr".into()),
    )
    .await?;
    let bridge = service(
        "redis-ws-bridge",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--redis-url".into(),
            redis.url(),
            "--allowed-origins".into(),
            "http://localhost:8080".into(),
            "--max-connections-per-address".into(),
            n(BRIDGE_PER_ADDRESS),
            "--max-message-bytes".into(),
            n(BRIDGE_MAX_MESSAGE),
            "--client-queue-bytes".into(),
            n(4 * 1024 * 1024),
        ],
        Ready::LogAddress("local_addr".into()),
    )
    .await?;
    let feeder = service(
        "data-feeder",
        &[
            "--source".into(),
            "synthetic".into(),
            "--sink".into(),
            redis.url(),
            "--interval".into(),
            "1s".into(),
            "--control-listen".into(),
            "127.0.0.1:0".into(),
        ],
        Ready::LogAddress("control".into()),
    )
    .await?;
    let backend = service(
        "backend-app",
        &[
            "--from".into(),
            redis.url(),
            "--topic-server".into(),
            format!("ws://{}", topic_server.addr),
            "--topic".into(),
            "redis/bitcoin".into(),
        ],
        Ready::LogMessage("topic server ready".into()),
    )
    .await?;
    Ok(Ctx {
        redis,
        topic_server,
        bridge,
        feeder,
        backend,
    })
}

/// Runs every case against one set of processes and checks, after each, what the suite
/// promises; writes the report; fails listing every case that did not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs() {
    if std::env::var_os("HOSTILE_BIN_DIR").is_none() {
        // The suite measures the product: it needs the release binaries, which a plain
        // `cargo test` does not build. scripts/test.sh builds them and runs it.
        eprintln!(
            "hostile-input suite not run: build the release binaries (cargo build --release --bins) and set HOSTILE_BIN_DIR=target/release, as scripts/test.sh does"
        );
        return;
    }
    let ctx = Arc::new(start().await.unwrap());
    let canary = Canary::start(&ctx.ws()).await.unwrap();
    let cases = cases::all();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for (number, case) in cases.into_iter().enumerate() {
        canary.reset();
        let began = Instant::now();
        let result = bounded((case.run)(Arc::clone(&ctx))).await;
        let mut problems = Vec::new();
        let observed = match result {
            Ok(observed) => observed,
            Err(error) => {
                problems.push(format!("{error:#}"));
                String::new()
            }
        };
        let canary_ms = match canary.worst_latency().await {
            Ok(worst) => {
                if worst > CANARY_BOUND {
                    problems.push(format!(
                        "the canary waited {} ms for an update (bound {} ms)",
                        worst.as_millis(),
                        CANARY_BOUND.as_millis()
                    ));
                }
                worst.as_millis()
            }
            Err(error) => {
                problems.push(format!("{error:#}"));
                0
            }
        };
        match tokio::time::timeout(
            Duration::from_secs(1),
            http_get(ctx.topic_server.addr, CANARY_ADDRESS, "/healthz"),
        )
        .await
        {
            Ok(Ok((200, _, body))) if body == "ok" => {}
            other => problems.push(format!("/healthz did not answer ok: {other:?}")),
        }
        for service in [&ctx.topic_server, &ctx.bridge, &ctx.feeder, &ctx.backend] {
            if !service.alive() {
                problems.push(format!(
                    "{} is not running; its last log lines:\n{}",
                    service.name,
                    service.log_tail()
                ));
            }
            let cap = if service.name == "topic-server" {
                RSS_CAP
            } else {
                TIER_RSS_CAP
            };
            let rss = service.rss_bytes();
            if rss > cap {
                problems.push(format!(
                    "{} uses {} MiB (cap {} MiB)",
                    service.name,
                    rss >> 20,
                    cap >> 20
                ));
            }
        }
        let passed = problems.is_empty();
        let row = Row {
            case: format!("{} {}", number + 1, case.name),
            surface: case.surface,
            input: case.input.clone(),
            expected: case.expected.to_owned(),
            observed: if passed {
                observed
            } else {
                format!("{observed} — {}", problems.join("; "))
            },
            canary_ms,
            rss_mib: ctx.topic_server.rss_bytes() as f64 / (1024.0 * 1024.0),
            passed,
        };
        eprintln!(
            "{} {} ({} ms): {}",
            if passed { "pass" } else { "FAIL" },
            row.case,
            began.elapsed().as_millis(),
            row.observed
        );
        if !passed {
            failures.push(row.case.clone());
        }
        rows.push(row);
    }
    let table = markdown(&rows);
    let report = hostile_tests::bin_dir().unwrap().join("hostile-report.md");
    std::fs::write(&report, &table).unwrap();
    eprintln!(
        "{} cases in {:.0} s; report: {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        report.display()
    );
    assert!(failures.is_empty(), "failed cases: {failures:?}\n\n{table}");
}
