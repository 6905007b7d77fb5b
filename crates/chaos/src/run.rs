//! A chaos run: the topologies asked for, one after the other, each a fresh pipeline put
//! through the fault schedule and a final check, reported as one Markdown section each.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::fault;
use crate::pipeline::{Pipeline, Setup, TOPIC, Topology};
use crate::report::{self, Row};
use crate::watcher::Watcher;

/// What a run does, from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The topologies, in order.
    pub topologies: Vec<Topology>,
    /// Where the binaries and the repository's files are, and how the feed runs.
    pub setup: Setup,
    /// One fault per tier (kill -9 only).
    pub short: bool,
    /// How many times the schedule runs.
    pub rounds: u32,
    /// How long a paused process stays stopped.
    pub pause: Duration,
    /// Where the Markdown report goes.
    pub report: PathBuf,
}

/// Runs every topology of `plan`, prints and writes the report; true when every fault
/// recovered and every final check held.
pub async fn run(plan: Plan) -> anyhow::Result<bool> {
    let mut report = String::new();
    let mut all_passed = true;
    for &topology in &plan.topologies {
        let began = Instant::now();
        let (rows, passed) = run_topology(topology, &plan).await;
        all_passed &= passed;
        let faults = rows
            .iter()
            .filter(|r| r.fault != fault::FINAL_CHECK)
            .count();
        let section = format!(
            "### {} ({faults} faults, {:.0} s)\n\n{}\n",
            topology.label(),
            began.elapsed().as_secs_f64(),
            report::markdown(&rows)
        );
        println!("{section}");
        report.push_str(&section);
    }
    std::fs::write(&plan.report, &report)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", plan.report.display()))?;
    eprintln!("chaos: report written to {}", plan.report.display());
    Ok(all_passed)
}

/// Starts the pipeline in `topology` and runs the schedule against it, stopping at the first
/// fault it did not recover from (the pipeline is then not what the next fault assumes), then
/// checks that values still flow after the last fault. The rows so far, and whether all passed.
/// The pipeline's processes are killed and reaped when this returns (or is dropped).
async fn run_topology(topology: Topology, plan: &Plan) -> (Vec<Row>, bool) {
    eprintln!("chaos: starting the pipeline ({})", topology.label());
    let mut pipeline = match Pipeline::start(topology, &plan.setup).await {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("chaos: the pipeline did not start: {error:#}");
            return (Vec::new(), false);
        }
    };
    let mut watcher = match Watcher::start(&pipeline.dashboard_urls, TOPIC).await {
        Ok(watcher) => watcher,
        Err(error) => {
            eprintln!("chaos: {error:#}\n{}", pipeline.log_tails(15));
            return (Vec::new(), false);
        }
    };
    let feed_interval = plan.setup.feed_interval;
    let faults = fault::schedule(pipeline.tiers.len(), plan.short, plan.rounds, plan.pause);
    let mut rows = Vec::new();
    for (i, fault) in faults.into_iter().enumerate() {
        let number = i + 1;
        let outcome = fault::run(number, fault, &mut pipeline, &mut watcher, feed_interval).await;
        let row = outcome.unwrap_or_else(|error| Row {
            number,
            fault: fault.kind.label(),
            tier: pipeline.tiers[fault.tier].name.clone(),
            recovery: None,
            longest_gap: Duration::ZERO,
            failure: Some(format!("{error:#}")),
        });
        if !log_row(row, &mut rows, &pipeline) {
            return (rows, false);
        }
    }
    let number = rows.len() + 1;
    let row = fault::final_check(number, &pipeline, &mut watcher, feed_interval)
        .await
        .unwrap_or_else(|error| Row {
            number,
            fault: fault::FINAL_CHECK.to_owned(),
            tier: "all".to_owned(),
            recovery: None,
            longest_gap: Duration::ZERO,
            failure: Some(format!("{error:#}")),
        });
    let passed = log_row(row, &mut rows, &pipeline);
    eprintln!("chaos: {} new values seen by the watcher", watcher.count());
    (rows, passed)
}

/// Says how a fault (or the final check) went, with the logs' tails when it failed, and adds
/// its row; true when it passed.
fn log_row(row: Row, rows: &mut Vec<Row>, pipeline: &Pipeline) -> bool {
    eprintln!(
        "chaos: {}. {} {}: {}",
        row.number,
        row.fault,
        row.tier,
        match (&row.failure, row.recovery) {
            (None, Some(d)) => format!("recovered in {} ms", d.as_millis()),
            (None, None) => "passed".to_owned(),
            (Some(why), _) => format!("FAILED: {why}"),
        }
    );
    let passed = row.failure.is_none();
    rows.push(row);
    if !passed {
        eprintln!("chaos: the logs' last lines:\n{}", pipeline.log_tails(25));
    }
    passed
}
