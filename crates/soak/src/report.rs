//! The end of a run: each process's memory growth and descriptors, the load's totals, and
//! whether the run passed, as JSON (for scripts) and Markdown (for people and the docs).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::feed::FeedCounters;
use crate::population::{Population, PopulationCounters};
use crate::record::Totals;
use crate::verdict::MemoryGrowth;

/// How long the feed may go without flowing after the warm-up (or three sample intervals, if
/// longer) before the run fails.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// The verdict on one watched process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessVerdict {
    /// Its name in the CSV.
    pub name: String,
    /// Memory after the warm-up against memory at the end (`None`: too short to compare).
    #[serde(skip)]
    pub memory: Option<MemoryGrowth>,
    /// Descriptors before the first subscriber connected.
    pub fds_before: u64,
    /// Descriptors once every subscriber had gone (`None`: the process had gone).
    pub fds_after: Option<u64>,
    /// Whether it was still running at the end.
    pub survived: bool,
}

/// The whole run's result.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Servers, from `--url`.
    pub urls: Vec<String>,
    /// Minutes asked for.
    pub minutes: f64,
    /// Seconds of samples, from the moment every subscriber was connected (warm-up included).
    pub measured_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Subscribers kept connected.
    pub subscribers: usize,
    /// Of which stalled.
    pub stalled: usize,
    /// Churn asked for, percent of the subscribers per minute.
    pub churn_percent_per_minute: f64,
    /// Feed rate, updates per second.
    pub rate: f64,
    /// Source topics.
    pub topics: usize,
    /// Connections and updates.
    #[serde(flatten)]
    pub totals: Totals,
    /// Longest time after the warm-up without the feed flowing (no update published, or none
    /// received by a subscriber that was there when it was published), seconds.
    pub longest_silence_s: f64,
    /// The memory limit, percent.
    pub rss_growth_limit_percent: f64,
    /// Per watched process.
    pub processes: Vec<ProcessSummary>,
    /// Every subscriber task ended when told to.
    pub subscribers_closed: bool,
    /// The run was interrupted (Ctrl-C) before its time.
    pub interrupted: bool,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

/// One process in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    /// Its name.
    pub name: String,
    /// Median RSS over the first minute after the warm-up (a third of a short run), bytes.
    pub rss_baseline_bytes: Option<u64>,
    /// Median RSS over the last minute (a third of a short run), bytes.
    pub rss_end_bytes: Option<u64>,
    /// Growth between the two, percent.
    pub rss_growth_percent: Option<f64>,
    /// Descriptors before the subscribers came.
    pub fds_before: u64,
    /// Descriptors after they had all gone.
    pub fds_after: Option<u64>,
}

/// How the run ended.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    /// Time measured after every subscriber had connected.
    pub measured: Duration,
    /// Longest time after the warm-up without the feed flowing.
    pub longest_silence: Duration,
    /// Every subscriber task ended when told to.
    pub subscribers_closed: bool,
    /// Interrupted before its time.
    pub interrupted: bool,
}

impl Summary {
    /// Draws the verdict.
    pub fn new(
        config: &Config,
        processes: Vec<ProcessVerdict>,
        load: &PopulationCounters,
        feed: &FeedCounters,
        ending: Ending,
    ) -> Self {
        let Ending {
            measured,
            longest_silence,
            subscribers_closed,
            interrupted,
        } = ending;
        let mut failures = Vec::new();
        if interrupted {
            failures.push("interrupted before the end".to_owned());
        }
        let silence_limit = (config.sample_interval() * 3).max(SILENCE_LIMIT);
        if longest_silence > silence_limit {
            failures.push(format!(
                "the feed did not flow for {:.0} s after the warm-up (limit {:.0} s)",
                longest_silence.as_secs_f64(),
                silence_limit.as_secs_f64()
            ));
        }
        let totals = Totals::read(load, feed);
        if totals.published == 0 {
            failures.push("the feed published nothing".to_owned());
        }
        if totals.publish_failures > 0 {
            failures.push(format!(
                "{} update(s) failed (see the soak's log)",
                totals.publish_failures
            ));
        }
        if !subscribers_closed {
            failures.push("some subscriber tasks did not end when told to".to_owned());
        }
        for p in &processes {
            if !p.survived {
                failures.push(format!("{} is no longer running", p.name));
                continue;
            }
            match &p.memory {
                None => failures.push(format!(
                    "{}: too few samples after the warm-up to compare memory",
                    p.name
                )),
                Some(m) if m.percent > config.rss_growth_limit_percent => failures.push(format!(
                    "{}: resident memory grew {:.1}% after the warm-up ({} → {} MiB; limit {}%)",
                    p.name,
                    m.percent,
                    m.baseline_bytes >> 20,
                    m.end_bytes >> 20,
                    config.rss_growth_limit_percent
                )),
                Some(_) => {}
            }
            if let Some(after) = p.fds_after
                && after > p.fds_before
            {
                failures.push(format!(
                    "{}: {} descriptor(s) leaked ({} before the subscribers, {} after they left)",
                    p.name,
                    after - p.fds_before,
                    p.fds_before,
                    after
                ));
            }
        }
        Self {
            urls: config.url.clone(),
            minutes: config.minutes,
            measured_s: measured.as_secs_f64(),
            warmup_s: config.warmup().as_secs_f64(),
            subscribers: config.subscribers,
            stalled: Population::stalled(config),
            churn_percent_per_minute: config.churn_percent_per_minute,
            rate: config.rate,
            topics: config.topics,
            totals,
            longest_silence_s: longest_silence.as_secs_f64(),
            rss_growth_limit_percent: config.rss_growth_limit_percent,
            processes: processes
                .into_iter()
                .map(|p| ProcessSummary {
                    name: p.name,
                    rss_baseline_bytes: p.memory.as_ref().map(|m| m.baseline_bytes),
                    rss_end_bytes: p.memory.as_ref().map(|m| m.end_bytes),
                    rss_growth_percent: p.memory.as_ref().map(|m| m.percent),
                    fds_before: p.fds_before,
                    fds_after: p.fds_after,
                })
                .collect(),
            subscribers_closed,
            interrupted,
            failures,
        }
    }

    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The summary as a Markdown table and a verdict line.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{} subscribers ({} stalled), churn {}%/min, {} updates/s over {} topics and 2 views, \
             {:.0} s of samples, the first {:.0} s a warm-up: {} subscriptions, {} churned, {} closed by \
             the server, {} failed attempts; {} updates published, {} failed.\n\n",
            self.subscribers,
            self.stalled,
            self.churn_percent_per_minute,
            self.rate,
            self.topics,
            self.measured_s,
            self.warmup_s,
            self.totals.opened,
            self.totals.churned,
            self.totals.server_closes,
            self.totals.connect_failures,
            self.totals.published,
            self.totals.publish_failures
        );
        out.push_str(
            "| process | RSS after warm-up | RSS at the end | growth | descriptors before → after |\n",
        );
        out.push_str("|---|---|---|---|---|\n");
        let mib = |b: Option<u64>| {
            b.map_or("–".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            })
        };
        for p in &self.processes {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} → {} |\n",
                p.name,
                mib(p.rss_baseline_bytes),
                mib(p.rss_end_bytes),
                p.rss_growth_percent
                    .map_or("–".to_owned(), |g| format!("{g:+.1}%")),
                p.fds_before,
                p.fds_after.map_or("gone".to_owned(), |f| f.to_string()),
            ));
        }
        out.push('\n');
        if self.passed() {
            out.push_str(&format!(
                "**Passed**: no process grew more than {}% after the warm-up, no descriptor leaked, \
                 the feed kept flowing.\n",
                self.rss_growth_limit_percent
            ));
        } else {
            out.push_str("**Failed**:\n");
            for f in &self.failures {
                out.push_str(&format!("- {f}\n"));
            }
        }
        out
    }

    /// Writes `summary.json` and `summary.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("summary.json"), json + "\n")
            .with_context(|| format!("writing {}", dir.join("summary.json").display()))?;
        std::fs::write(dir.join("summary.md"), self.markdown())
            .with_context(|| format!("writing {}", dir.join("summary.md").display()))?;
        Ok(())
    }
}
