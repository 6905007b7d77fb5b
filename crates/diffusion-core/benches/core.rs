//! Benchmarks of the pure hot paths: selector matching for a new topic, and delta encode/apply.
//! Run with `cargo bench -p diffusion-core` (or scripts/bench.sh); numbers go in
//! docs/performance.md.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use diffusion_core::selector_index::SelectorIndex;
use diffusion_core::view::ViewSpec;
use diffusion_core::{Selector, delta};

const BITCOIN: &str = include_str!("../testdata/coindesk-bpi-sample.json");

/// 10k retained selectors of mixed kinds, as 10k sessions would hold them.
fn ten_thousand_selectors() -> SelectorIndex<u32> {
    let mut index = SelectorIndex::new();
    for i in 0..10_000u32 {
        let text = match i % 4 {
            0 => format!(">feeds/{}/price", i % 500),
            1 => format!("?feeds/{}/.*", i % 500),
            2 => format!("*feeds/{}/p.*//", i % 500),
            _ => format!("?users/{i}/inbox//"),
        };
        if let Ok(selector) = Selector::parse(&text) {
            index.insert(i, selector);
        }
    }
    index.insert(
        10_000,
        Selector::parse("?redis/.*").expect("valid selector"),
    );
    index
}

fn linear_scan(selectors: &[(u32, Selector)], path: &str) -> usize {
    selectors.iter().filter(|(_, s)| s.matches(path)).count()
}

fn selector_matching(c: &mut Criterion) {
    let index = ten_thousand_selectors();
    let mut group = c.benchmark_group("match new topic against 10k selectors");
    group.bench_function("indexed", |b| {
        b.iter(|| index.owners_matching(black_box("feeds/42/price")).len())
    });
    let flat: Vec<(u32, Selector)> = (0..10_000u32)
        .filter_map(|i| {
            let text = match i % 4 {
                0 => format!(">feeds/{}/price", i % 500),
                1 => format!("?feeds/{}/.*", i % 500),
                2 => format!("*feeds/{}/p.*//", i % 500),
                _ => format!("?users/{i}/inbox//"),
            };
            Selector::parse(&text).ok().map(|s| (i, s))
        })
        .collect();
    group.bench_function("linear scan (baseline)", |b| {
        b.iter(|| linear_scan(&flat, black_box("feeds/42/price")))
    });
    group.finish();
}

fn large_document() -> (Vec<u8>, Vec<u8>) {
    let items: Vec<serde_json::Value> = (0..280)
        .map(|i| serde_json::json!({"id": i, "name": format!("instrument-{i}"), "bid": 100.0 + i as f64, "ask": 100.5 + i as f64}))
        .collect();
    let mut doc = serde_json::json!({"items": items, "seq": 1});
    let old = serde_json::to_vec(&doc).expect("serialisable");
    doc["items"][140]["bid"] = serde_json::json!(181.25);
    doc["seq"] = serde_json::json!(2);
    let new = serde_json::to_vec(&doc).expect("serialisable");
    (old, new)
}

fn deltas(c: &mut Criterion) {
    let old = BITCOIN.trim().as_bytes().to_vec();
    let new = BITCOIN
        .trim()
        .replace("56,189.3483", "56,201.0042")
        .replace("56189.3483", "56201.0042")
        .into_bytes();
    let (big_old, big_new) = large_document();
    for (name, old, new) in [
        ("bitcoin 677 B", &old, &new),
        ("json 16 KB", &big_old, &big_new),
    ] {
        let d = delta::diff(old, new).expect("a delta exists");
        eprintln!("{name}: value {} bytes, delta {} bytes", new.len(), d.len());
        let mut group = c.benchmark_group(format!("delta {name}"));
        group.throughput(Throughput::Bytes(new.len() as u64));
        group.bench_function("encode", |b| {
            b.iter(|| delta::diff(black_box(old), black_box(new)))
        });
        group.bench_function("apply", |b| {
            b.iter(|| delta::apply(black_box(old), black_box(&d), 1 << 20))
        });
        group.finish();
    }
}

/// Source updates per second through three kinds of view, on the bitcoin payload.
fn view_evaluation(c: &mut Criterion) {
    let value: serde_json::Value = serde_json::from_str(BITCOIN).expect("sample is JSON");
    let lookup = |_: &str| None;
    let views = [
        (
            "as <value(/ptr)>",
            "map redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>",
        ),
        (
            "<expand(/bpi)>",
            "map redis/bitcoin to redis/views/bitcoin/<expand(/bpi)>",
        ),
        (
            "process",
            "map redis/bitcoin to redis/views/tiered process {if '/bpi/USD/rate_float gt 50000' set(/tier, 2) else set(/tier, 1); remove(/disclaimer)}",
        ),
    ];
    let mut group = c.benchmark_group("view evaluation (one source update)");
    group.throughput(Throughput::Elements(1));
    for (name, text) in views {
        let spec = ViewSpec::parse(text).expect("valid view");
        let limits = diffusion_core::view::EvalLimits::default();
        let produced = spec
            .evaluate("redis/bitcoin", &value, &lookup, &limits)
            .expect("within the limits")
            .len();
        assert!(produced > 0, "{name} produced nothing");
        group.bench_function(name, |b| {
            b.iter(|| {
                spec.evaluate(
                    black_box("redis/bitcoin"),
                    black_box(&value),
                    &lookup,
                    &limits,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, selector_matching, deltas, view_evaluation);
criterion_main!(benches);
