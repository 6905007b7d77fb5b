//! One soak run: the feed, the subscribers, churn every second, a sample every interval, then
//! everyone leaves and the verdict is drawn.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use loadgen::payload::now_ns;
use loadgen::procfs;
use loadgen::stats::Stats;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::feed::{Feed, FeedCounters};
use crate::population::{Population, PopulationCounters};
use crate::record::{CsvLog, LoadColumns, Phase, Row, Totals};
use crate::report::{Ending, ProcessVerdict, Summary};
use crate::sample::{Reading, Sampler};
use crate::verdict;

/// How long the first connections may take, all together.
const CONNECT_ALL_LIMIT: Duration = Duration::from_secs(600);

/// How long descriptors may take to come back once every subscriber has gone (a server sees a
/// dropped connection end when its next read or write fails, or its heartbeat times out).
const FDS_BACK_LIMIT: Duration = Duration::from_secs(90);

/// Latency histogram shards (the timed subscribers record into them by index).
const HISTOGRAM_SHARDS: usize = 16;

/// Runs the soak described by `config` until its time is up or `shutdown` fires, writing
/// `samples.csv`, `summary.json` and `summary.md` into `config.out`; the summary says whether
/// it passed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    config.validate()?;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let sampler = Sampler::new(config.watched.clone())?;
    let seq_base = now_ns() / 1_000_000;
    let feed_url = config.url.first().context("no --url")?;
    let feed = Feed::prepare(feed_url, config.topics, seq_base).await?;
    let before = sampler.read_all().await;
    for (w, reading) in sampler.watched().iter().zip(&before) {
        anyhow::ensure!(
            reading.is_some(),
            "cannot read process {} ({})",
            w.pid,
            w.name
        );
    }

    let timed = Arc::new(Stats::new(HISTOGRAM_SHARDS)?);
    let untimed = Arc::new(Stats::new(1)?);
    for stats in [&timed, &untimed] {
        stats.set_seq_base(seq_base);
    }
    timed.set_recording(true);
    let mut population = Population::start(&config, Arc::clone(&timed), Arc::clone(&untimed));
    let load = population.counters();
    eprintln!(
        "soak: opening {} subscribers ({} stalled) on {}",
        config.subscribers,
        Population::stalled(&config),
        config.url.join(", ")
    );
    let alive = || timed.snapshot().alive + untimed.snapshot().alive;
    let connected = wait_for(CONNECT_ALL_LIMIT, &shutdown, || {
        alive() >= config.subscribers as u64
    })
    .await;
    anyhow::ensure!(
        connected,
        "only {} of {} subscribers connected within {:?} ({} failed attempts)",
        alive(),
        config.subscribers,
        CONNECT_ALL_LIMIT,
        load.connect_failures.load(Ordering::Relaxed)
    );

    let feed_counters = Arc::new(FeedCounters::default());
    let stop_feed = CancellationToken::new();
    let feeding =
        tokio::spawn(feed.run(config.rate, Arc::clone(&feed_counters), stop_feed.clone()));
    let mut csv = CsvLog::create(&config.out.join("samples.csv"), sampler.watched())?;
    let history = measure(
        &config,
        &sampler,
        &mut population,
        &mut csv,
        Meters {
            load: &load,
            feed: &feed_counters,
            timed: &timed,
            untimed: &untimed,
        },
        &shutdown,
    )
    .await?;
    stop_feed.cancel();
    let feed = feeding.await.context("the feed task failed")?;

    eprintln!("soak: closing every subscriber; waiting for the servers' descriptors to come back");
    let closed = population.close(Duration::from_secs(30)).await;
    let before_fds: Vec<u64> = before.iter().map(|r| r.map_or(0, |r| r.fds)).collect();
    let mut after = sampler.read_all().await;
    let deadline = Instant::now() + FDS_BACK_LIMIT;
    // Until every descriptor is back, the time is up, a process has gone or Ctrl-C.
    while Instant::now() < deadline
        && !shutdown.is_cancelled()
        && after.iter().all(Option::is_some)
        && !fds_back(&before_fds, &after)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = sampler.read_all().await;
    }

    feed.close().await;
    let measured = history.iter().filter(|s| s.at >= config.warmup()).count();
    let window = verdict::window(config.sample_interval(), measured);
    let processes = sampler
        .watched()
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let rss: Vec<(Duration, u64)> = history
                .iter()
                .filter_map(|s| s.readings[i].map(|r| (s.at, r.rss_bytes)))
                .collect();
            ProcessVerdict {
                name: w.name.clone(),
                memory: verdict::memory_growth(&rss, config.warmup(), window),
                fds_before: before_fds[i],
                fds_after: after[i].map(|r| r.fds),
                survived: after[i].is_some(),
            }
        })
        .collect();
    let flow: Vec<(Duration, bool)> = history.iter().map(|s| (s.at, s.flowed)).collect();
    let summary = Summary::new(
        &config,
        processes,
        &load,
        &feed_counters,
        Ending {
            measured: history.last().map_or(Duration::ZERO, |s| s.at),
            longest_silence: verdict::longest_silence(&flow, config.warmup()),
            subscribers_closed: closed,
            interrupted: shutdown.is_cancelled(),
        },
    );
    summary.write(&config.out)?;
    Ok(summary)
}

/// The counters a sample reads.
struct Meters<'a> {
    load: &'a PopulationCounters,
    feed: &'a FeedCounters,
    timed: &'a Stats,
    untimed: &'a Stats,
}

/// What the verdict needs of one sample.
struct Sampled {
    at: Duration,
    /// Updates were published, and subscribers received updates published after they had
    /// subscribed (not only the current values every new subscription is sent).
    flowed: bool,
    readings: Vec<Option<Reading>>,
}

/// The measured part: churn every second, a row every sample interval, until the run's time is
/// up (or shutdown).
async fn measure(
    config: &Config,
    sampler: &Sampler,
    population: &mut Population,
    csv: &mut CsvLog,
    meters: Meters<'_>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<Sampled>> {
    let start = Instant::now();
    let churn_per_second =
        config.subscribers as f64 * config.churn_percent_per_minute / 100.0 / 60.0;
    let mut churn_owed = 0.0;
    // A slow sample (a server slow to answer /metrics) delays the next; it never bunches them.
    let mut churn_ticks = tokio::time::interval(Duration::from_secs(1));
    churn_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample_ticks = tokio::time::interval(config.sample_interval());
    sample_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sample_ticks.tick().await;
    let mut previous = sampler.read_all().await;
    let mut previous_at = Instant::now();
    let mut previous_delivered = delivered(&meters);
    let mut previous_published = meters.feed.published.load(Ordering::Relaxed);
    let mut history = Vec::new();
    while start.elapsed() < config.duration() {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = churn_ticks.tick() => {
                churn_owed += churn_per_second;
                let now = churn_owed.floor();
                churn_owed -= now;
                population.churn(now as usize);
            }
            _ = sample_ticks.tick() => {
                let readings = sampler.read_all().await;
                let seconds = previous_at.elapsed().as_secs_f64();
                previous_at = Instant::now();
                let total = delivered(&meters);
                let row = row(
                    start.elapsed(),
                    config.warmup(),
                    &meters,
                    (total - previous_delivered) as f64 / seconds.max(0.001),
                    &previous,
                    &readings,
                    seconds,
                );
                csv.append(&row)?;
                eprintln!(
                    "soak: {:>6.0} s  {:>6} subscribers  {:>8.0} deliveries/s  p99 {:>7.2} ms  rss {}",
                    row.elapsed_s,
                    row.load.alive,
                    row.load.deliveries_per_s,
                    row.load.p99_ms,
                    readings
                        .iter()
                        .zip(sampler.watched())
                        .map(|(r, w)| format!("{} {} MiB", w.name, r.map_or(0, |r| r.rss_bytes) >> 20))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                history.push(Sampled {
                    at: start.elapsed(),
                    flowed: row.load.fresh_deliveries > 0 && row.load.totals.published > previous_published,
                    readings: readings.clone(),
                });
                previous_delivered = total;
                previous_published = row.load.totals.published;
                previous = readings;
            }
        }
    }
    Ok(history)
}

fn delivered(meters: &Meters<'_>) -> u64 {
    meters.timed.snapshot().deliveries + meters.untimed.snapshot().deliveries
}

fn row(
    elapsed: Duration,
    warmup: Duration,
    meters: &Meters<'_>,
    deliveries_per_s: f64,
    previous: &[Option<Reading>],
    readings: &[Option<Reading>],
    seconds: f64,
) -> Row {
    let latencies = meters.timed.take_histogram();
    let ms = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    let load = LoadColumns {
        alive: meters.timed.snapshot().alive + meters.untimed.snapshot().alive,
        stalled_open: meters.load.stalled_open.load(Ordering::Relaxed),
        totals: Totals::read(meters.load, meters.feed),
        deliveries_per_s,
        fresh_deliveries: latencies.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: latencies.max() as f64 / 1000.0,
        soak_rss_bytes: procfs::sample_self().map_or(0, |s| s.rss_bytes),
    };
    let processes = readings
        .iter()
        .zip(previous)
        .map(|(now, before)| {
            let cpu = match (now, before) {
                (Some(now), Some(before)) => {
                    procfs::cpu_percent(before.proc_sample(), now.proc_sample(), seconds)
                }
                _ => 0.0,
            };
            (*now, cpu)
        })
        .collect();
    Row {
        elapsed_s: elapsed.as_secs_f64(),
        phase: if elapsed < warmup {
            Phase::Warmup
        } else {
            Phase::Measure
        },
        load,
        processes,
    }
}

/// Whether every process holds no more descriptors than before the subscribers came.
fn fds_back(before: &[u64], after: &[Option<Reading>]) -> bool {
    before
        .iter()
        .zip(after)
        .all(|(&b, a)| a.is_some_and(|a| verdict::leaked_fds(b, a.fds) == 0))
}

/// Polls `done` every 100 ms until it holds, `limit` passes or `shutdown` fires.
async fn wait_for(limit: Duration, shutdown: &CancellationToken, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}
