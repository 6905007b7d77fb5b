//! One loadgen run: open and subscribe the connections, then run each phase on them and
//! collect the results.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Mode, System};
use crate::payload::{PayloadBuilder, Payloads, TickBuilder, now_ns};
use crate::plan::TopicPlan;
use crate::publisher::Publishers;
use crate::report::{ConnectReport, Report, RunReport, ServerProcess};
use crate::stats::{Counters, Stats, encode_histogram};
use crate::subscriber::{AttemptCounters, RetryPolicy, Subscriber, SubscriberSpec};
use service_kit::procfs::{self, ProcSample};

/// Latency histogram shards (each guarded by its own mutex).
const HISTOGRAM_SHARDS: usize = 16;
/// How long past a phase's end one publish may take before it is cut off: the server stopped
/// reading the publisher (the phase is marked `publish_stalled`).
const STALL_GRACE: Duration = Duration::from_secs(3);
/// How often the saturating publisher re-checks how far subscribers have got.
const WINDOW_POLL: Duration = Duration::from_millis(1);

fn progress_bar(hidden: bool, len: u64, template: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn server_sample(config: &Config) -> Option<ProcSample> {
    procfs::sample_all(&config.server_pid)
}

/// The set-up figures, written to --ready-file before the first phase.
fn write_ready_file(path: &Path, connect: &ConnectReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(connect)?;
    // Written whole under another name, then renamed: a script polling for the file never
    // reads half of it.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, json + "\n")
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing {}", path.display()))
}

fn to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs `config` to completion (or until `shutdown`) and returns the results.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Report> {
    if config.url.is_empty() {
        bail!("--url needs at least one URL");
    }
    if config.per_source == 0 || config.connect_concurrency == 0 || config.publishers == 0 {
        bail!("--per-source, --connect-concurrency and --publishers must be at least 1");
    }
    if config.modes.is_empty() {
        bail!("--modes needs at least one phase");
    }
    if config.modes.contains(&Mode::FixedRate) && !(config.rate > 0.0 && config.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if config.topics > 0 && !config.system.subscribes_per_topic() {
        bail!(
            "--topics: {} fans one channel out to every client and cannot subscribe per topic",
            config.system.name()
        );
    }
    if !config.view_selectors.is_empty()
        && (config.system != System::TopicServer || config.topics == 0)
    {
        bail!("--view-selectors needs --system topic-server and --topics");
    }
    if !config.view_selectors.is_empty() && config.modes.contains(&Mode::Saturate) {
        bail!(
            "--view-selectors: what views deliver is not owed in advance; use fixed-rate or flood, not saturate"
        );
    }
    let plan = Arc::new(config.plan()?);
    for (flag, seconds) in [
        ("--duration", config.duration),
        ("--idle-duration", config.idle_duration.unwrap_or(0.0)),
        ("--drain", config.drain),
        ("--settle", config.settle),
        ("--connect-timeout", config.connect_timeout),
    ] {
        if !(seconds >= 0.0 && seconds.is_finite() && seconds < 1e9) {
            bail!("{flag} must be a non-negative number of seconds, not {seconds}");
        }
    }
    let started_at_unix_s = now_ns() / 1_000_000_000;
    let stats = Arc::new(Stats::with_topics(HISTOGRAM_SHARDS, plan.len())?);
    // Sequence numbers start at the current time in milliseconds, so they grow across runs
    // against the same server and a value retained from an earlier run is never counted.
    let seq_base = config.seq_base.unwrap_or_else(|| now_ns() / 1_000_000);
    stats.set_seq_base(seq_base);
    let mut publisher = if config.modes.iter().any(|m| m.publishes()) {
        Some(
            Publishers::connect(&config, &plan)
                .await
                .context("connecting the publisher")?,
        )
    } else {
        None
    };

    let mut payloads = if plan.is_single() {
        Payloads::Padded(PayloadBuilder::new(config.payload_bytes, config.random_pad))
    } else {
        Payloads::Ticks(TickBuilder::new(plan.len()))
    };
    if config.prime
        && let Some(publisher) = publisher.as_mut()
    {
        prime(&plan, publisher, &mut payloads, seq_base).await?;
    }

    let cancel = CancellationToken::new();
    let (mut connect, handles) =
        open_connections(&config, &plan, &stats, &cancel, &shutdown).await?;
    if connect.connected == 0 && config.connections > 0 {
        cancel.cancel();
        bail!(
            "no subscriber could connect: {}",
            connect.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    if config.settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(config.settle)).await;
    }
    if let Some(after) = server_sample(&config) {
        connect.server_rss_connected_bytes = after.rss_bytes;
        if connect.connected > 0 {
            connect.rss_per_connection_bytes = after
                .rss_bytes
                .saturating_sub(connect.server_rss_before_bytes)
                as f64
                / connect.connected as f64;
        }
    }
    connect.loadgen_rss_bytes = procfs::sample_self().map(|s| s.rss_bytes).unwrap_or(0);
    if let Some(path) = &config.ready_file {
        write_ready_file(path, &connect)?;
    }

    let mut seq = seq_base;
    let mut runs = Vec::new();
    for &mode in &config.modes {
        if shutdown.is_cancelled() {
            break;
        }
        let report = run_phase(
            &config,
            &plan,
            mode,
            &stats,
            publisher.as_mut(),
            &mut payloads,
            &mut seq,
            &shutdown,
        )
        .await?;
        runs.push(report);
    }

    cancel.cancel();
    for handle in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    }
    Ok(Report {
        loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_unix_s,
        system: config.system.name().to_owned(),
        scenario: config.scenario.clone(),
        url: config.url.join(","),
        processes: 1,
        topic: if plan.is_single() {
            plan.name(0).to_owned()
        } else {
            format!(
                "{} topics {}/… ({} per subscriber)",
                plan.len(),
                config.topic_prefix,
                plan.per_subscriber()
            )
        },
        payload_bytes: config.payload_bytes,
        random_pad: config.random_pad,
        connect,
        runs,
    })
}

/// Publishes one message on every topic of `plan`, numbered `seq_base − len + 1 ..= seq_base`
/// (at or below the run's base: subscribers never count them).
async fn prime(
    plan: &TopicPlan,
    publisher: &mut Publishers,
    payloads: &mut Payloads,
    seq_base: u64,
) -> anyhow::Result<()> {
    let first = seq_base.saturating_sub(plan.len() as u64);
    for topic in 0..plan.len() {
        let seq = first + topic as u64 + 1;
        let payload = payloads.build(topic, seq, now_ns());
        publisher
            .publish(topic, &payload)
            .await
            .context("priming the topics")?;
    }
    Ok(())
}

/// Opens and subscribes every connection; returns the set-up figures and the subscriber tasks.
async fn open_connections(
    config: &Config,
    plan: &Arc<TopicPlan>,
    stats: &Arc<Stats>,
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<(ConnectReport, Vec<JoinHandle<()>>)> {
    let spec = Arc::new(
        SubscriberSpec::new(
            config.system,
            &config.url,
            &config.topic,
            &config.subject,
            &config.channel,
            Duration::from_secs_f64(config.connect_timeout.max(0.1)),
        )
        .context("subscriber URL")?
        .with_plan(plan.clone())
        .with_view_selectors(config.view_selectors.clone()),
    );
    let mut report = ConnectReport {
        requested: config.connections,
        server_rss_before_bytes: server_sample(config).map(|s| s.rss_bytes).unwrap_or(0),
        ..ConnectReport::default()
    };
    let bar = progress_bar(
        config.no_progress,
        config.connections as u64,
        "connecting [{bar:40}] {pos}/{len} ({per_sec}) {msg}",
    );
    let failures = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AttemptCounters::default());
    let policy = RetryPolicy {
        retries: config.connect_retries,
        backoff: Duration::from_millis(config.retry_backoff_ms),
    };
    let spawned = Arc::new(AtomicUsize::new(0));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(1024);
    let started = Instant::now();
    let spawner = {
        let config = config.clone();
        let stats = stats.clone();
        let cancel = cancel.clone();
        let shutdown = shutdown.clone();
        let failures = failures.clone();
        let spawned = spawned.clone();
        let attempts = attempts.clone();
        let gate = Arc::new(Semaphore::new(config.connect_concurrency));
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(config.connections);
            for index in 0..config.connections {
                if shutdown.is_cancelled()
                    || failures.load(Ordering::Relaxed) >= config.max_failures
                {
                    break;
                }
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                spawned.fetch_add(1, Ordering::Relaxed);
                let source = config.source_for(index);
                let (spec, stats, cancel, ready, failures) = (
                    spec.clone(),
                    stats.clone(),
                    cancel.clone(),
                    ready_tx.clone(),
                    failures.clone(),
                );
                let attempts = attempts.clone();
                handles.push(tokio::spawn(async move {
                    let opened = Subscriber::open_with_retries(
                        &spec, index, source, stats, policy, &attempts,
                    )
                    .await;
                    match opened {
                        Ok(subscriber) => {
                            drop(permit);
                            let _ = ready.send(Ok(())).await;
                            subscriber.run(cancel).await;
                        }
                        Err(error) => {
                            drop(permit);
                            failures.fetch_add(1, Ordering::Relaxed);
                            let _ = ready
                                .send(Err(format!("{index} from {source}: {error}")))
                                .await;
                        }
                    }
                }));
            }
            handles
        })
    };
    let mut reported = 0usize;
    let mut last_ready = started;
    let mut last_report = started;
    let attempt_timeout =
        policy.worst_case(Duration::from_secs_f64(config.connect_timeout.max(0.1)));
    let mut spawner = Some(spawner);
    let mut handles = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            outcome = ready_rx.recv() => {
                let Some(outcome) = outcome else { break };
                reported += 1;
                last_report = Instant::now();
                bar.inc(1);
                match outcome {
                    Ok(()) => { report.connected += 1; last_ready = Instant::now(); }
                    Err(error) => {
                        report.failed += 1;
                        bar.set_message(format!("{} failed", report.failed));
                        report.first_error.get_or_insert(error);
                    }
                }
            }
            _ = tick.tick() => {}
        }
        if spawner.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(task) = spawner.take()
        {
            handles = task.await.context("connection spawner")?;
        }
        if spawner.is_none() && reported >= spawned.load(Ordering::Relaxed) {
            break;
        }
        // Every attempt reports within its timeout; should one never report, stop waiting.
        if spawner.is_none() && last_report.elapsed() > attempt_timeout + Duration::from_secs(5) {
            tracing::warn!(
                reported,
                "some connection attempts never reported; going on"
            );
            break;
        }
    }
    bar.finish_and_clear();
    report.seconds = last_ready.duration_since(started).as_secs_f64();
    if report.seconds > 0.0 {
        report.connections_per_s = report.connected as f64 / report.seconds;
    }
    report.attempts = attempts.report();
    report.source_addresses = config.connections.div_ceil(config.per_source.max(1)).max(1);
    Ok((report, handles))
}

/// Runs one phase and measures it.
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    config: &Config,
    plan: &TopicPlan,
    mode: Mode,
    stats: &Arc<Stats>,
    mut publisher: Option<&mut Publishers>,
    payloads: &mut Payloads,
    seq: &mut u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<RunReport> {
    let duration = Duration::from_secs_f64(config.phase_seconds(mode));
    let bar = progress_bar(
        config.no_progress,
        duration.as_millis() as u64,
        &format!("{:<10} [{{bar:40}}] {{msg}}", mode.name()),
    );
    let seq_start = *seq;
    let base = stats.seq_base();
    let _ = stats.take_histogram();
    stats.set_recording(true);
    let server_before = procfs::sample_each(&config.server_pid);
    let self_before = procfs::sample_self().ok();
    let machine_before = procfs::sample_machine();
    let before = stats.snapshot();
    let started = Instant::now();
    let end = tokio::time::Instant::now() + duration;
    let mut last_bar = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate.max(1e-3)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let shutdown_signal = shutdown.clone();
    let mut stalled = false;
    loop {
        if tokio::time::Instant::now() >= end || shutdown.is_cancelled() {
            break;
        }
        if last_bar.elapsed() >= Duration::from_millis(200) {
            last_bar = Instant::now();
            let now = stats.snapshot();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(started.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{:.0} deliveries/s, {} subscribers",
                (now.deliveries - before.deliveries) as f64 / secs,
                now.alive
            ));
        }
        let publishing = publisher.as_deref().is_some_and(|p| !p.stalled());
        let wait = match (mode, publishing) {
            (Mode::FixedRate, true) => {
                tokio::select! {
                    _ = ticker.tick() => false,
                    _ = tokio::time::sleep_until(end) => continue,
                    _ = shutdown_signal.cancelled() => continue,
                }
            }
            (Mode::Saturate, true) => {
                let now = stats.snapshot();
                let alive = now.alive.max(1);
                stats.expected_progress(*seq - base) > now.progress + config.window * alive
            }
            (Mode::Flood, true) => false,
            _ => true,
        };
        if wait {
            let pause = if mode.publishes() {
                WINDOW_POLL
            } else {
                Duration::from_millis(100)
            };
            tokio::time::sleep(
                pause.min(end.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await;
            continue;
        }
        if let Some(publisher) = publisher.as_deref_mut() {
            *seq += 1;
            let topic = plan.topic_of_message(*seq - base);
            let payload = payloads.build(topic, *seq, now_ns());
            // A server that stops reading would hold the phase (and the run) for ever: the
            // publisher gets until shortly after the phase's end.
            match tokio::time::timeout_at(end + STALL_GRACE, publisher.publish(topic, &payload))
                .await
            {
                Ok(sent) => sent.context("publishing")?,
                Err(_) => {
                    publisher.mark_cut_off();
                    stalled = true;
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = stats.snapshot();
    let server_after = procfs::sample_each(&config.server_pid);
    let self_after = procfs::sample_self().ok();
    let machine_after = procfs::sample_machine();
    bar.finish_and_clear();

    // Let what is in flight arrive, so that its latency is counted.
    let drained = drain(stats, *seq - base, Duration::from_secs_f64(config.drain)).await;
    stats.set_recording(false);
    let histogram = stats.take_histogram();
    let rejections = publisher
        .as_deref()
        .map(|p| p.rejections())
        .unwrap_or((0, None));
    Ok(summarise(PhaseFigures {
        config,
        mode,
        before,
        after,
        elapsed,
        published: *seq - seq_start,
        expected: stats.expected_progress(*seq - base) - stats.expected_progress(seq_start - base),
        histogram: &histogram,
        server: server_before.zip(server_after),
        own: self_before.zip(self_after),
        machine: machine_before.zip(machine_after),
        drained,
        stalled,
        rejections,
        first_problem: stats.first_problem(),
    }))
}

/// Waits until every live subscriber has caught up with the first `published` messages, or
/// `limit`.
async fn drain(stats: &Stats, published: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let now = stats.snapshot();
        if now.progress >= stats.expected_progress(published) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct PhaseFigures<'a> {
    config: &'a Config,
    mode: Mode,
    before: Counters,
    after: Counters,
    elapsed: f64,
    published: u64,
    /// Deliveries the phase's messages owe the subscribers (the plan's topics they are on).
    expected: u64,
    histogram: &'a hdrhistogram::Histogram<u64>,
    /// Each server process at the start and the end of the phase.
    server: Option<(Vec<ProcSample>, Vec<ProcSample>)>,
    own: Option<(ProcSample, ProcSample)>,
    machine: Option<(procfs::MachineSample, procfs::MachineSample)>,
    drained: bool,
    /// The publisher could not send within [`STALL_GRACE`] of the phase's end.
    stalled: bool,
    rejections: (u64, Option<String>),
    first_problem: Option<String>,
}

fn summarise(f: PhaseFigures<'_>) -> RunReport {
    let deliveries = f.after.deliveries - f.before.deliveries;
    let bytes = f.after.bytes - f.before.bytes;
    let frames = f.after.frames - f.before.frames;
    let per_s = |n: u64| {
        if f.elapsed > 0.0 {
            n as f64 / f.elapsed
        } else {
            0.0
        }
    };
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let h = f.histogram;
    let has_latency = !h.is_empty();
    let latency_histogram = if has_latency {
        encode_histogram(h)
            .inspect_err(|error| tracing::warn!(%error, "latency histogram left out"))
            .ok()
    } else {
        None
    };
    let server_processes: Vec<ServerProcess> = f
        .server
        .iter()
        .flat_map(|(before, after)| before.iter().zip(after))
        .zip(&f.config.server_pid)
        .map(|((&b, &a), &pid)| ServerProcess {
            pid,
            name: procfs::process_name(pid).unwrap_or_default(),
            rss_bytes: a.rss_bytes,
            cpu_percent: procfs::cpu_percent(b, a, f.elapsed),
        })
        .collect();
    let server_cpu_percent: f64 = server_processes.iter().map(|p| p.cpu_percent).sum();
    let loadgen_cpu_percent = f
        .own
        .map(|(b, a)| procfs::cpu_percent(b, a, f.elapsed))
        .unwrap_or(0.0);
    let machine_cpu_percent = f
        .machine
        .map(|(b, a)| procfs::machine_cpu_percent(b, a, f.elapsed))
        .unwrap_or(0.0);
    let quantile = |q: f64| {
        if has_latency {
            to_ms(h.value_at_quantile(q))
        } else {
            0.0
        }
    };
    RunReport {
        system: f.config.system.name().to_owned(),
        scenario: f.config.scenario.clone(),
        mode: f.mode.name().to_owned(),
        subscribers: f.before.alive,
        duration_s: f.elapsed,
        rate: (f.mode == Mode::FixedRate).then_some(f.config.rate),
        window: (f.mode == Mode::Saturate).then_some(f.config.window),
        published: f.published,
        published_per_s: per_s(f.published),
        deliveries,
        deliveries_per_s: per_s(deliveries),
        expected_deliveries: f.expected,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        max_ms: if has_latency { to_ms(h.max()) } else { 0.0 },
        latency_samples: h.len(),
        latency_histogram,
        bytes_per_delivery: ratio(bytes, deliveries),
        frames,
        messages_per_frame: ratio(deliveries, frames),
        server_rss_bytes: server_processes.iter().map(|p| p.rss_bytes).sum(),
        server_cpu_percent,
        server_cpu_us_per_delivery: cpu_us_per_delivery(server_cpu_percent, f.elapsed, deliveries),
        server_processes,
        loadgen_cpu_percent,
        machine_cpu_percent,
        other_cpu_percent: (machine_cpu_percent - server_cpu_percent - loadgen_cpu_percent)
            .max(0.0),
        drained: f.drained,
        publish_stalled: f.stalled,
        disconnects: f.after.disconnects - f.before.disconnects,
        decode_errors: f.after.decode_errors - f.before.decode_errors,
        publish_rejections: f.rejections.0,
        first_problem: f.first_problem.or(f.rejections.1),
    }
}

/// CPU time per delivery in microseconds, from a CPU share (percent of one core) over `seconds`.
pub fn cpu_us_per_delivery(cpu_percent: f64, seconds: f64, deliveries: u64) -> f64 {
    if deliveries == 0 {
        return 0.0;
    }
    cpu_percent / 100.0 * seconds * 1e6 / deliveries as f64
}
