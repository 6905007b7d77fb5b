//! Several loadgen processes' results as one run.
//!
//! One process can hold only so many sockets (20,000 descriptors here), so a run with more
//! subscribers is split: observer processes (`--modes observe`) hold the subscribers, and one
//! primary process publishes (`--connections 0` will do) and samples the servers; all of them
//! share one `--seq-base`, so every observer counts and times what the primary publishes.
//! [`merge`] adds their figures up, phase by phase:
//!
//! - The **primary** (the first report) is the only one that may publish. Its publishing and
//!   server figures stand: messages published, rate, window, phase length, the servers' CPU and
//!   RSS, the machine's CPU.
//! - **Subscriber figures** of every report are added: subscribers, deliveries, frames, bytes,
//!   disconnects, decode errors. Latency histograms are merged, so the percentiles are exact
//!   over every sample of every process (averaging each process's p99 would not be).
//!   Deliveries per second are all deliveries over the primary's phase length; expected
//!   deliveries are the primary's messages times all subscribers. loadgen CPU is the sum of
//!   each process's own figure, each over its own phase (an observer's is longer than the
//!   primary's and mostly idle), so the "other processes" share derived from it is a rough one.
//! - **Set-up**: counts are added; the ramp takes the longest process's time (processes ramp
//!   at the same time); server RSS is the earliest reading before and the latest after (readings
//!   of 0, from processes without `--server-pid`, are left out).
//!
//! Observers must observe for the whole publishing window (start them first, wait for their
//! `--ready-file`, stop them with SIGTERM once the primary is done and its messages have
//! arrived).

use hdrhistogram::{AdditionError, CreationError};

use crate::report::{AttemptReport, ConnectReport, Report, RunReport};
use crate::run::cpu_us_per_delivery;
use crate::stats::{HistogramCodecError, decode_histogram, encode_histogram, new_histogram};

/// Why reports could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No reports were given.
    #[error("nothing to merge")]
    Empty,
    /// The reports do not have the same phases.
    #[error("report {index} has {found} phases where the first has {expected}")]
    PhaseCount {
        /// Position of the report in the list.
        index: usize,
        /// Its phase count.
        found: usize,
        /// The first report's phase count.
        expected: usize,
    },
    /// The reports measured different systems.
    #[error("report {index} measured {found} where the first measured {expected}")]
    System {
        /// Position of the report in the list.
        index: usize,
        /// Its system.
        found: String,
        /// The first report's system.
        expected: String,
    },
    /// A report other than the first published.
    #[error("report {index} published {published} messages in phase {phase}: only the first may")]
    SeveralPublishers {
        /// Position of the report in the list.
        index: usize,
        /// The phase (0-based).
        phase: usize,
        /// Messages it published.
        published: u64,
    },
    /// A phase has latency samples but no histogram (a loadgen older than merging).
    #[error("report {index}, phase {phase}: latency samples but no histogram")]
    MissingHistogram {
        /// Position of the report in the list.
        index: usize,
        /// The phase (0-based).
        phase: usize,
    },
    /// A histogram could not be read or written.
    #[error("report {index}, phase {phase}: {source}")]
    Histogram {
        /// Position of the report in the list.
        index: usize,
        /// The phase (0-based).
        phase: usize,
        /// What went wrong.
        source: HistogramCodecError,
    },
    /// The empty histogram could not be made (cannot happen with fixed bounds).
    #[error("latency histogram: {0}")]
    Create(#[from] CreationError),
    /// Histograms with other bounds than loadgen's.
    #[error("adding latency histograms: {0}")]
    Add(#[from] AdditionError),
}

/// Merges the reports of processes that measured one run together (see the module docs); the
/// first is the primary.
pub fn merge(reports: &[Report]) -> Result<Report, MergeError> {
    let (primary, _) = reports.split_first().ok_or(MergeError::Empty)?;
    for (index, report) in reports.iter().enumerate() {
        if report.system != primary.system {
            return Err(MergeError::System {
                index,
                found: report.system.clone(),
                expected: primary.system.clone(),
            });
        }
        if report.runs.len() != primary.runs.len() {
            return Err(MergeError::PhaseCount {
                index,
                found: report.runs.len(),
                expected: primary.runs.len(),
            });
        }
    }
    let runs = (0..primary.runs.len())
        .map(|phase| {
            let parts: Vec<&RunReport> = reports.iter().map(|r| &r.runs[phase]).collect();
            merge_phase(phase, &parts)
        })
        .collect::<Result<_, _>>()?;
    let connects: Vec<&ConnectReport> = reports.iter().map(|r| &r.connect).collect();
    Ok(Report {
        processes: reports.iter().map(|r| r.processes).sum(),
        connect: merge_connect(&connects),
        runs,
        ..primary.clone()
    })
}

fn merge_connect(parts: &[&ConnectReport]) -> ConnectReport {
    let connected = parts.iter().map(|c| c.connected).sum();
    let seconds = parts.iter().map(|c| c.seconds).fold(0.0, f64::max);
    let readings =
        |f: fn(&ConnectReport) -> u64| parts.iter().map(move |&c| f(c)).filter(|&b| b > 0);
    let before = readings(|c| c.server_rss_before_bytes).min().unwrap_or(0);
    let after = readings(|c| c.server_rss_connected_bytes)
        .max()
        .unwrap_or(0);
    ConnectReport {
        requested: parts.iter().map(|c| c.requested).sum(),
        connected,
        failed: parts.iter().map(|c| c.failed).sum(),
        first_error: parts.iter().find_map(|c| c.first_error.clone()),
        source_addresses: parts.iter().map(|c| c.source_addresses).sum(),
        seconds,
        connections_per_s: if seconds > 0.0 {
            connected as f64 / seconds
        } else {
            0.0
        },
        server_rss_before_bytes: before,
        server_rss_connected_bytes: after,
        rss_per_connection_bytes: if connected > 0 && before > 0 {
            after.saturating_sub(before) as f64 / connected as f64
        } else {
            0.0
        },
        loadgen_rss_bytes: parts.iter().map(|c| c.loadgen_rss_bytes).sum(),
        attempts: parts
            .iter()
            .fold(AttemptReport::default(), |sum, c| sum + c.attempts),
    }
}

fn merge_phase(phase: usize, parts: &[&RunReport]) -> Result<RunReport, MergeError> {
    let primary = parts[0];
    let mut histogram = new_histogram()?;
    for (index, part) in parts.iter().enumerate() {
        if index > 0 && part.published > 0 {
            return Err(MergeError::SeveralPublishers {
                index,
                phase,
                published: part.published,
            });
        }
        match &part.latency_histogram {
            Some(text) => {
                let one = decode_histogram(text).map_err(|source| MergeError::Histogram {
                    index,
                    phase,
                    source,
                })?;
                histogram.add(&one)?;
            }
            None if part.latency_samples > 0 => {
                return Err(MergeError::MissingHistogram { index, phase });
            }
            None => {}
        }
    }
    let sum = |f: fn(&RunReport) -> u64| parts.iter().map(|&r| f(r)).sum::<u64>();
    let subscribers = sum(|r| r.subscribers);
    let deliveries = sum(|r| r.deliveries);
    let frames = sum(|r| r.frames);
    let bytes: f64 = parts
        .iter()
        .map(|r| r.bytes_per_delivery * r.deliveries as f64)
        .sum();
    let loadgen_cpu_percent: f64 = parts.iter().map(|r| r.loadgen_cpu_percent).sum();
    let ratio = |a: f64, b: u64| if b > 0 { a / b as f64 } else { 0.0 };
    let ms = |us: u64| us as f64 / 1000.0;
    let quantile = |q: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            ms(histogram.value_at_quantile(q))
        }
    };
    let latency_histogram = if histogram.is_empty() {
        None
    } else {
        Some(
            encode_histogram(&histogram).map_err(|source| MergeError::Histogram {
                index: 0,
                phase,
                source,
            })?,
        )
    };
    Ok(RunReport {
        subscribers,
        deliveries,
        deliveries_per_s: if primary.duration_s > 0.0 {
            deliveries as f64 / primary.duration_s
        } else {
            0.0
        },
        expected_deliveries: primary.published * subscribers,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        max_ms: if histogram.is_empty() {
            0.0
        } else {
            ms(histogram.max())
        },
        latency_samples: histogram.len(),
        latency_histogram,
        bytes_per_delivery: ratio(bytes, deliveries),
        frames,
        messages_per_frame: ratio(deliveries as f64, frames),
        server_cpu_us_per_delivery: cpu_us_per_delivery(
            primary.server_cpu_percent,
            primary.duration_s,
            deliveries,
        ),
        loadgen_cpu_percent,
        other_cpu_percent: (primary.machine_cpu_percent
            - primary.server_cpu_percent
            - loadgen_cpu_percent)
            .max(0.0),
        drained: parts.iter().all(|r| r.drained),
        disconnects: sum(|r| r.disconnects),
        decode_errors: sum(|r| r.decode_errors),
        publish_rejections: primary.publish_rejections,
        first_problem: parts.iter().find_map(|r| r.first_problem.clone()),
        ..primary.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(mode: &str, subscribers: u64, published: u64, latencies_us: &[u64]) -> RunReport {
        let mut histogram = new_histogram().unwrap();
        for &us in latencies_us {
            histogram.record(us).unwrap();
        }
        RunReport {
            system: "topic-server".into(),
            mode: mode.into(),
            subscribers,
            published,
            duration_s: 10.0,
            deliveries: latencies_us.len() as u64,
            latency_samples: histogram.len(),
            latency_histogram: (!histogram.is_empty())
                .then(|| encode_histogram(&histogram).unwrap()),
            bytes_per_delivery: 100.0,
            frames: latencies_us.len() as u64,
            ..RunReport::default()
        }
    }

    fn report(connected: usize, run: RunReport) -> Report {
        Report {
            loadgen_version: "0".into(),
            started_at_unix_s: 1,
            system: "topic-server".into(),
            scenario: "s".into(),
            url: "ws://127.0.0.1:1/ws".into(),
            processes: 1,
            topic: "bench/t".into(),
            payload_bytes: 100,
            random_pad: false,
            connect: ConnectReport {
                requested: connected,
                connected,
                seconds: connected as f64 / 1000.0,
                loadgen_rss_bytes: 10,
                ..ConnectReport::default()
            },
            runs: vec![run],
        }
    }

    #[test]
    fn observers_add_up_under_the_primary() {
        let mut primary = report(0, phase("fixed-rate", 0, 10, &[]));
        primary.runs[0].server_cpu_percent = 50.0;
        primary.runs[0].machine_cpu_percent = 150.0;
        primary.connect.server_rss_before_bytes = 5_000;
        primary.connect.server_rss_connected_bytes = 5_000;
        // One observer got a slow tail: the merged p99 must come from all samples together.
        let fast = report(3, phase("observe", 3, 0, &[1_000; 30]));
        let mut slow = report(
            2,
            phase("observe", 2, 0, &[[1_000; 10], [900_000; 10]].concat()),
        );
        slow.connect.server_rss_before_bytes = 1_000;
        slow.runs[0].loadgen_cpu_percent = 40.0;
        slow.runs[0].first_problem = Some("closed".into());

        let merged = merge(&[primary, fast, slow]).unwrap();
        assert_eq!(merged.processes, 3);
        assert_eq!(merged.connect.connected, 5);
        assert_eq!(merged.connect.requested, 5);
        assert_eq!(merged.connect.loadgen_rss_bytes, 30);
        assert_eq!(merged.connect.server_rss_before_bytes, 1_000);
        assert_eq!(merged.connect.server_rss_connected_bytes, 5_000);
        assert_eq!(merged.connect.rss_per_connection_bytes, 800.0);
        assert_eq!(merged.connect.seconds, 0.003);

        let run = &merged.runs[0];
        assert_eq!(run.mode, "fixed-rate");
        assert_eq!(run.subscribers, 5);
        assert_eq!(run.published, 10);
        assert_eq!(run.expected_deliveries, 50);
        assert_eq!(run.deliveries, 50);
        assert_eq!(run.deliveries_per_s, 5.0);
        assert_eq!(run.latency_samples, 50);
        // 10 of 50 samples are slow: p50 is fast, p99 is slow. Averaging the observers' own
        // p99s (1 ms and 900 ms) would say 450 ms.
        assert!((run.p50_ms - 1.0).abs() < 0.01, "{run:?}");
        assert!((run.p99_ms - 900.0).abs() < 1.0, "{run:?}");
        assert_eq!(run.bytes_per_delivery, 100.0);
        assert_eq!(run.messages_per_frame, 1.0);
        assert_eq!(run.loadgen_cpu_percent, 40.0);
        assert_eq!(run.other_cpu_percent, 60.0);
        assert_eq!(run.server_cpu_us_per_delivery, 0.5 * 10.0 * 1e6 / 50.0);
        assert_eq!(run.first_problem.as_deref(), Some("closed"));
        let back = decode_histogram(run.latency_histogram.as_deref().unwrap()).unwrap();
        assert_eq!(back.len(), 50);
    }

    #[test]
    fn mismatches_are_refused() {
        let primary = report(1, phase("fixed-rate", 1, 5, &[10]));
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));

        let publisher = report(1, phase("fixed-rate", 1, 5, &[10]));
        assert!(matches!(
            merge(&[primary.clone(), publisher]),
            Err(MergeError::SeveralPublishers { index: 1, .. })
        ));

        let mut other = report(1, phase("observe", 1, 0, &[10]));
        other.system = "nats".into();
        assert!(matches!(
            merge(&[primary.clone(), other]),
            Err(MergeError::System { index: 1, .. })
        ));

        let mut two_phases = report(1, phase("observe", 1, 0, &[10]));
        two_phases.runs.push(phase("observe", 1, 0, &[]));
        assert!(matches!(
            merge(&[primary.clone(), two_phases]),
            Err(MergeError::PhaseCount {
                index: 1,
                found: 2,
                expected: 1
            })
        ));

        let mut old = report(1, phase("observe", 1, 0, &[10]));
        old.runs[0].latency_histogram = None;
        assert!(matches!(
            merge(&[primary.clone(), old]),
            Err(MergeError::MissingHistogram { index: 1, phase: 0 })
        ));

        let mut garbled = report(1, phase("observe", 1, 0, &[10]));
        garbled.runs[0].latency_histogram = Some("AAAA".into());
        assert!(matches!(
            merge(&[primary, garbled]),
            Err(MergeError::Histogram { index: 1, .. })
        ));
    }
}
