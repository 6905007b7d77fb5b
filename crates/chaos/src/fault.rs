//! The faults and how one is applied and judged.
//!
//! The driver is the supervisor a deployment has (systemd's `Restart=always`, a container
//! restart policy): after a `kill -9` it starts that process again with the same command, at
//! once. Nothing else is ever restarted: every other tier must recover by itself. A pause is
//! SIGSTOP, a few seconds, SIGCONT — a machine that stalls (a VM migrated, a GC pause, a
//! laptop lid): the process keeps its sockets, and its peers must cope.
//!
//! A fault is judged by two values: the first new one after it ends (how soon the dashboard
//! updates again, the *recovery*), and one produced after it ended (that values flow live, not
//! just a backlog that queued up behind a stopped process).

use std::time::{Duration, Instant, SystemTime};

use crate::health;
use crate::pipeline::Pipeline;
use crate::report::Row;
use crate::watcher::Watcher;

/// A new value must arrive this soon after a fault ends.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// Values must be flowing this soon before a fault is applied, and after the last one.
const STEADY_WITHIN: Duration = Duration::from_secs(10);

/// The feed stamps values to the second: a value produced after an instant is stamped with the
/// next whole second at the earliest, so proving one arrived takes up to this long more (and
/// one feed interval, until the feeder's next poll).
const STAMP_RESOLUTION: Duration = Duration::from_secs(1);

/// After recovering, the watcher keeps watching this long (for the longest gap) before the
/// health checks and the next fault.
const SETTLE: Duration = Duration::from_secs(1);

/// How long each tier's health check may take to answer after a fault.
const HEALTH_WITHIN: Duration = Duration::from_secs(5);

/// What is done to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL, then the supervisor starts it again with the same command.
    Kill,
    /// SIGSTOP for the given time, then SIGCONT.
    Pause(Duration),
}

impl Kind {
    /// How the report names it.
    pub fn label(self) -> String {
        match self {
            Self::Kill => "kill -9, restart".to_owned(),
            Self::Pause(d) => format!("SIGSTOP {} s, SIGCONT", d.as_secs_f64()),
        }
    }
}

/// One fault of the schedule: what, and to which tier (an index into [`Pipeline::tiers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What is done.
    pub kind: Kind,
    /// To which tier.
    pub tier: usize,
}

/// The schedule: every tier in turn (in start order, redis-server first), each killed and
/// then paused, `rounds` times over; `short` kills each tier once and pauses none.
pub fn schedule(tiers: usize, short: bool, rounds: u32, pause: Duration) -> Vec<Fault> {
    let rounds = if short { 1 } else { rounds.max(1) };
    let mut faults = Vec::new();
    for _ in 0..rounds {
        for tier in 0..tiers {
            faults.push(Fault {
                kind: Kind::Kill,
                tier,
            });
            if !short {
                faults.push(Fault {
                    kind: Kind::Pause(pause),
                    tier,
                });
            }
        }
    }
    faults
}

/// How long after `from` a value produced after it may take to arrive when values flow within
/// `within`: the stamp's resolution and one feed interval more.
fn live_bound(within: Duration, feed_interval: Duration) -> Duration {
    within + STAMP_RESOLUTION + feed_interval
}

/// Waits for a value produced from now on (values flowing live); `Some` says why not.
async fn steady(watcher: &mut Watcher, feed_interval: Duration) -> anyhow::Result<Option<String>> {
    let (now, now_wall) = (Instant::now(), SystemTime::now());
    let bound = live_bound(STEADY_WITHIN, feed_interval);
    Ok(watcher
        .first_produced_after(now_wall, now + bound)
        .await?
        .is_none()
        .then(|| format!("no value produced after {:.1} s", bound.as_secs_f64())))
}

/// What is wrong with the tiers: a process not running, a health check not answering.
async fn tier_problems(pipeline: &Pipeline) -> Vec<String> {
    let mut problems = Vec::new();
    for tier in &pipeline.tiers {
        if !tier.service.alive() {
            problems.push(format!("{} is not running", tier.name));
        } else if let Err(why) = health::answers(tier.health, HEALTH_WITHIN).await {
            problems.push(format!("{}: {why}", tier.name));
        }
    }
    problems
}

/// The check after the last fault (which no next fault's steady check follows): values
/// produced after it began still arrive, every process runs, every health check answers.
pub async fn final_check(
    number: usize,
    pipeline: &Pipeline,
    watcher: &mut Watcher,
    feed_interval: Duration,
) -> anyhow::Result<Row> {
    let began = Instant::now();
    let mut problems: Vec<String> = steady(watcher, feed_interval).await?.into_iter().collect();
    let observed_until = Instant::now();
    problems.extend(tier_problems(pipeline).await);
    Ok(Row {
        number,
        fault: FINAL_CHECK.to_owned(),
        tier: "all".to_owned(),
        recovery: None,
        longest_gap: watcher.longest_gap(began, observed_until),
        failure: (!problems.is_empty()).then(|| problems.join("; ")),
    })
}

/// How the report names the final check.
pub const FINAL_CHECK: &str = "none (final check: values still flowing)";

/// Applies `fault` and judges it: a new value within [`RECOVERY_BOUND`] of the fault's end and
/// one produced after the fault's end within that bound plus the stamp's resolution and one
/// feed interval, every process running afterwards, every tier's health check answering.
pub async fn run(
    number: usize,
    fault: Fault,
    pipeline: &mut Pipeline,
    watcher: &mut Watcher,
    feed_interval: Duration,
) -> anyhow::Result<Row> {
    let tier_name = pipeline.tiers[fault.tier].name.clone();
    let mut row = Row {
        number,
        fault: fault.kind.label(),
        tier: tier_name.clone(),
        recovery: None,
        longest_gap: Duration::ZERO,
        failure: None,
    };
    // The pipeline delivers before the fault (else the fault before did not really recover).
    if let Some(why) = steady(watcher, feed_interval).await? {
        row.failure = Some(format!("before the fault: {why}"));
        return Ok(row);
    }
    let began = Instant::now();
    let tier = &mut pipeline.tiers[fault.tier];
    let (ended, ended_wall) = match fault.kind {
        Kind::Kill => {
            tier.service.kill().await;
            let ended = (Instant::now(), SystemTime::now());
            if let Err(error) = tier.service.restart().await {
                row.failure = Some(format!("the supervisor's restart failed: {error}"));
                return Ok(row);
            }
            ended
        }
        Kind::Pause(pause) => {
            tier.service.pause().await?;
            tokio::time::sleep(pause).await;
            tier.service.resume().await?;
            (Instant::now(), SystemTime::now())
        }
    };
    let mut problems = Vec::new();
    let first = watcher
        .first_new_after(ended, ended + RECOVERY_BOUND)
        .await?;
    let mut observed_until = match first {
        Some(at) => {
            row.recovery = Some(at.saturating_duration_since(ended));
            at + SETTLE
        }
        None => {
            problems.push(format!(
                "no new value within {} s of the fault's end",
                RECOVERY_BOUND.as_secs()
            ));
            Instant::now()
        }
    };
    if first.is_some() {
        let bound = live_bound(RECOVERY_BOUND, feed_interval);
        match watcher
            .first_produced_after(ended_wall, ended + bound)
            .await?
        {
            Some(live) => observed_until = observed_until.max(live),
            None => problems.push(format!(
                "no value produced after the fault's end within {:.1} s of it (only values \
                 from before it)",
                bound.as_secs_f64()
            )),
        }
    }
    tokio::time::sleep_until(observed_until.into()).await;
    row.longest_gap = watcher.longest_gap(began, observed_until);
    problems.extend(tier_problems(pipeline).await);
    if !problems.is_empty() {
        row.failure = Some(problems.join("; "));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tier_is_killed_then_paused_in_turn() {
        let pause = Duration::from_secs(3);
        let faults = schedule(2, false, 2, pause);
        let kinds: Vec<(Kind, usize)> = faults.iter().map(|f| (f.kind, f.tier)).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Kill, 0),
                (Kind::Pause(pause), 0),
                (Kind::Kill, 1),
                (Kind::Pause(pause), 1),
                (Kind::Kill, 0),
                (Kind::Pause(pause), 0),
                (Kind::Kill, 1),
                (Kind::Pause(pause), 1),
            ]
        );
    }

    #[test]
    fn a_live_value_may_take_a_stamp_and_a_poll_longer() {
        assert_eq!(
            live_bound(RECOVERY_BOUND, Duration::from_millis(200)),
            Duration::from_millis(6_200)
        );
    }

    #[test]
    fn short_kills_each_tier_once() {
        let faults = schedule(5, true, 3, Duration::from_secs(3));
        assert_eq!(faults.len(), 5);
        assert!(faults.iter().all(|f| f.kind == Kind::Kill));
    }
}
