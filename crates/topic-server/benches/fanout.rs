//! Fan-out of one update to 10k in-process subscribers: 10k sessions registered with the topic
//! engine (real outbound queues, no sockets), each subscribed to a JSON topic holding the
//! CoinDesk sample. One `set` with a changed price is measured per iteration; the queues are
//! drained between iterations, as the writers would.
//!
//! `json_delta_secured` repeats `json_delta` with a security store in force (the cost of
//! permission checks on fan-out).
//!
//! Run with `cargo bench -p topic-server --features bench --bench fanout -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use diffusion_core::TopicType;
use serde_json::{Value, json};
use topic_server::bench_support::BenchEngine;

const SAMPLE: &str = include_str!("../testdata/coindesk-bpi-sample.json");
const SUBSCRIBERS: usize = 10_000;

fn tick(price: f64) -> Value {
    let mut v: Value = serde_json::from_str(SAMPLE).unwrap_or(Value::Null);
    v["bpi"]["USD"]["rate_float"] = json!(price);
    v["bpi"]["USD"]["rate"] = json!(format!("{price:.4}"));
    v
}

/// An engine with `SUBSCRIBERS` version-2 sessions subscribed to `path`, queues drained.
fn engine(path: &str, properties: &[(&str, &str)]) -> BenchEngine {
    engine_with(BenchEngine::new(1024 * 1024), path, properties)
}

fn engine_with(mut bench: BenchEngine, path: &str, properties: &[(&str, &str)]) -> BenchEngine {
    let properties: BTreeMap<String, String> = properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Err(e) = bench.add(path, TopicType::Json, &properties, Some(&tick(56189.3483))) {
        panic!("add failed: {e}");
    }
    for _ in 0..SUBSCRIBERS {
        let session = bench.add_session();
        if let Err(e) = bench.subscribe(session, &format!(">{path}")) {
            panic!("subscribe failed: {e}");
        }
    }
    bench.drain_all();
    bench
}

/// Bytes one subscriber receives for one update, measured on a fresh update.
fn bytes_per_subscriber(bench: &BenchEngine, path: &str, price: f64) -> (usize, String) {
    if let Err(e) = bench.set(path, &tick(price)) {
        panic!("set failed: {e}");
    }
    let one = bench.drain_session(1);
    let drained = bench.drain_all();
    let total = drained.bytes + one.iter().map(String::len).sum::<usize>();
    let kind = one
        .first()
        .map(|m| {
            if m.starts_with(r#"{"i":"#) && m.contains(r#","d":""#) {
                "delta"
            } else {
                "value"
            }
        })
        .unwrap_or("nothing")
        .to_owned();
    (total / bench.session_count(), kind)
}

/// Measures one `set` with a new price per iteration (the queues the previous one filled are
/// emptied untimed); with `frame_bytes`, every session's batch is also taken and framed, timed.
fn measure_sets(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    bench: &BenchEngine,
    path: &str,
    frame_bytes: Option<usize>,
) {
    let mut price = 56201.0042;
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                bench.drain_all();
                price += 0.0001;
                tick(price)
            },
            |value| {
                if let Err(e) = bench.set(path, black_box(&value)) {
                    panic!("set failed: {e}");
                }
                if let Some(limit) = frame_bytes {
                    black_box(bench.frame_all(limit));
                }
            },
            BatchSize::PerIteration,
        );
    });
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for (name, properties) in [
        ("json_delta", &[][..]),
        (
            "json_publish_values_only",
            &[("PUBLISH_VALUES_ONLY", "true")][..],
        ),
    ] {
        let path = format!("redis/{name}");
        let bench = engine(&path, properties);
        let (bytes, kind) = bytes_per_subscriber(&bench, &path, 56201.0042);
        eprintln!("{name}: {bytes} bytes per subscriber per update ({kind} messages)");
        measure_sets(&mut group, name, &bench, &path, None);
    }
    // The whole server-side path of one update short of the socket: fan-out into 10k queues,
    // then every writer's batch taken (numbered and kept for recovery on version 2, then
    // acknowledged) and framed. The version-1 variant is the baseline for the cost of recovery.
    for (name, version_1) in [("json_delta_framed", false), ("json_delta_framed_v1", true)] {
        let path = format!("redis/{name}");
        let sessions = if version_1 {
            BenchEngine::new_version_1(1024 * 1024)
        } else {
            BenchEngine::new(1024 * 1024)
        };
        let bench = engine_with(sessions, &path, &[]);
        measure_sets(&mut group, name, &bench, &path, Some(64 * 1024));
    }
    // The same fan-out with a security store: every subscriber is a session whose roles
    // (with inclusion, path assignments and an isolated path) allow reading `redis`. Compare
    // with `json_delta`: READ_TOPIC is checked when a session subscribes, never per delivery.
    let secured = match BenchEngine::new_secured(1024 * 1024, SECURITY, &["CLIENT"]) {
        Ok(bench) => bench,
        Err(e) => panic!("security store refused: {e}"),
    };
    let path = "redis/json_delta_secured";
    let bench = engine_with(secured, path, &[]);
    measure_sets(&mut group, "json_delta_secured", &bench, path, None);
    group.finish();
}

/// The security store of the `json_delta_secured` variant.
const SECURITY: &str = r#"
anonymous = ["CLIENT"]

[roles.READER]
paths = { "redis" = ["SELECT_TOPIC", "READ_TOPIC"], "redis/private" = [] }
isolated = ["internal"]

[roles.CLIENT]
includes = ["READER"]
default_path = ["SELECT_TOPIC"]
paths = { "market" = ["READ_TOPIC"], "market/fx" = ["READ_TOPIC", "SELECT_TOPIC"] }
"#;

/// One bitcoin tick set on `redis/bitcoin` with the demo's two views (deploy/views.txt): the
/// value's way through the engine, views included, with one subscriber on every view topic.
fn views(c: &mut Criterion) {
    let mut group = c.benchmark_group("bitcoin_tick");
    group.throughput(Throughput::Elements(1));
    let mut bench = BenchEngine::new(1024 * 1024);
    let views = include_str!("../../../deploy/views.txt");
    for (name, spec) in
        diffusion_core::view::parse_views_file("views.txt", views).unwrap_or_default()
    {
        if let Err(e) = bench.create_view(&name, spec.as_str()) {
            panic!("view {name}: {e}");
        }
    }
    if let Err(e) = bench.add(
        "redis/bitcoin",
        TopicType::Json,
        &BTreeMap::new(),
        Some(&tick(56189.3483)),
    ) {
        panic!("add failed: {e}");
    }
    let session = bench.add_session();
    if let Err(e) = bench.subscribe(session, "?redis//") {
        panic!("subscribe failed: {e}");
    }
    bench.drain_all();
    let mut price = 56201.0042;
    group.bench_function("set_through_demo_views", |b| {
        b.iter_batched(
            || {
                bench.drain_all();
                price += 0.0001;
                tick(price)
            },
            |value| {
                if let Err(e) = bench.set("redis/bitcoin", black_box(&value)) {
                    panic!("set failed: {e}");
                }
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, fanout, views);
criterion_main!(benches);
