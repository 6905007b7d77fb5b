//! The samples of a run as CSV, one row per sample, written as they come (a run that dies
//! keeps what it measured).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::config::Watched;
use crate::feed::FeedCounters;
use crate::population::PopulationCounters;
use crate::sample::Reading;

/// Whether a row was taken during the warm-up or the measured part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Memory may still grow (connections settling, queues filling).
    Warmup,
    /// Memory must stay flat.
    Measure,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Warmup => "warmup",
            Self::Measure => "measure",
        }
    }
}

/// The load's running totals: connections and updates so far (a CSV row's `*_total`
/// columns, and the summary's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Successful subscriptions, the first ones included.
    pub opened: u64,
    /// Connections closed by churn.
    pub churned: u64,
    /// Connections the server ended.
    pub server_closes: u64,
    /// Failed connection attempts (each is retried).
    pub connect_failures: u64,
    /// Updates published.
    pub published: u64,
    /// Updates that failed.
    pub publish_failures: u64,
}

impl Totals {
    /// Reads the counters now.
    pub fn read(load: &PopulationCounters, feed: &FeedCounters) -> Self {
        Self {
            opened: load.opened.load(Ordering::Relaxed),
            churned: load.churned.load(Ordering::Relaxed),
            server_closes: load.server_closes.load(Ordering::Relaxed),
            connect_failures: load.connect_failures.load(Ordering::Relaxed),
            published: feed.published.load(Ordering::Relaxed),
            publish_failures: feed.failed.load(Ordering::Relaxed),
        }
    }
}

/// What the load generator side saw in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadColumns {
    /// Subscribers connected (stalled ones included).
    pub alive: u64,
    /// Stalled subscribers connected.
    pub stalled_open: u64,
    /// Connections and updates so far.
    pub totals: Totals,
    /// Messages received per second since the previous sample.
    pub deliveries_per_s: f64,
    /// Updates source and mirror subscribers received since the previous sample that were
    /// published after they subscribed (the ones timed below).
    pub fresh_deliveries: u64,
    /// Latency percentiles since the previous sample (source and mirror subscribers), ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
    /// The soak process's own resident memory, bytes.
    pub soak_rss_bytes: u64,
}

/// One row: when, which phase, the load side, and a reading per watched process.
#[derive(Debug, Clone)]
pub struct Row {
    /// Seconds since the subscribers were all connected.
    pub elapsed_s: f64,
    /// Warm-up or measured.
    pub phase: Phase,
    /// The load side.
    pub load: LoadColumns,
    /// Per watched process (in the header's order): the reading, and its CPU use since the
    /// previous sample in percent of one core.
    pub processes: Vec<(Option<Reading>, f64)>,
}

/// The CSV file.
pub struct CsvLog {
    out: BufWriter<File>,
}

impl CsvLog {
    /// Creates `path` and writes the header (process columns named after `watched`).
    pub fn create(path: &Path, watched: &[Watched]) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut header = vec![
            "elapsed_s",
            "phase",
            "subscribers_alive",
            "stalled_open",
            "opened_total",
            "churned_total",
            "server_closes_total",
            "connect_failures_total",
            "published_total",
            "publish_failures_total",
            "deliveries_per_s",
            "fresh_deliveries",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "soak_rss_bytes",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        for w in watched {
            for column in [
                "rss_bytes",
                "fds",
                "cpu_percent",
                "queued_bytes",
                "connections",
                "sessions",
            ] {
                header.push(format!("{}_{column}", w.name));
            }
        }
        writeln!(out, "{}", header.join(","))?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Appends a row and flushes it.
    pub fn append(&mut self, row: &Row) -> std::io::Result<()> {
        writeln!(self.out, "{}", line(row))?;
        self.out.flush()
    }
}

fn line(row: &Row) -> String {
    let l = &row.load;
    let mut fields = vec![
        format!("{:.1}", row.elapsed_s),
        row.phase.name().to_owned(),
        l.alive.to_string(),
        l.stalled_open.to_string(),
        l.totals.opened.to_string(),
        l.totals.churned.to_string(),
        l.totals.server_closes.to_string(),
        l.totals.connect_failures.to_string(),
        l.totals.published.to_string(),
        l.totals.publish_failures.to_string(),
        format!("{:.1}", l.deliveries_per_s),
        l.fresh_deliveries.to_string(),
        format!("{:.2}", l.p50_ms),
        format!("{:.2}", l.p99_ms),
        format!("{:.2}", l.max_ms),
        l.soak_rss_bytes.to_string(),
    ];
    let optional = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_default();
    for (reading, cpu) in &row.processes {
        match reading {
            Some(r) => fields.extend([
                r.rss_bytes.to_string(),
                r.fds.to_string(),
                format!("{cpu:.1}"),
                optional(r.queued_bytes),
                optional(r.connections),
                optional(r.sessions),
            ]),
            // The process has gone: empty cells, so a plot shows the hole.
            None => fields.extend(std::iter::repeat_n(String::new(), 6)),
        }
    }
    fields.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_with_the_header() {
        let dir = std::env::temp_dir().join(format!("soak-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("samples.csv");
        let watched = vec![
            "node1:1:http://127.0.0.1:1/metrics".parse().unwrap(),
            "redis:2".parse().unwrap(),
        ];
        let mut log = CsvLog::create(&path, &watched).unwrap();
        let reading = Reading {
            rss_bytes: 4096,
            fds: 12,
            cpu_ticks: 0,
            queued_bytes: Some(100.0),
            connections: Some(3.0),
            sessions: Some(4.0),
        };
        log.append(&Row {
            elapsed_s: 10.0,
            phase: Phase::Measure,
            load: LoadColumns::default(),
            processes: vec![(Some(reading), 12.5), (None, 0.0)],
        })
        .unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let header: Vec<&str> = lines[0].split(',').collect();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(header.len(), row.len());
        let cell = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(cell("phase"), "measure");
        assert_eq!(cell("node1_fds"), "12");
        assert_eq!(cell("node1_cpu_percent"), "12.5");
        assert_eq!(cell("node1_queued_bytes"), "100");
        assert_eq!(cell("node1_sessions"), "4");
        assert_eq!(cell("redis_rss_bytes"), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
