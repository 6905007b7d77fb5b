//! The faults and how one is applied and judged.
//!
//! The driver is the supervisor a deployment has (systemd's `Restart=always`, a container
//! restart policy): after a `kill -9` it starts that process again with the same command, at
//! once. Nothing else is ever restarted: every other tier must recover by itself. A pause is
//! SIGSTOP, a few seconds, SIGCONT — a machine that stalls (a VM migrated, a GC pause, a
//! laptop lid): the process keeps its sockets, and its peers must cope.

use std::time::{Duration, Instant};

use crate::health;
use crate::pipeline::Pipeline;
use crate::report::Row;
use crate::watcher::Watcher;

/// A new value must arrive this soon after a fault ends.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// Values must be flowing this soon before a fault is applied.
const STEADY_WITHIN: Duration = Duration::from_secs(10);

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

/// Applies `fault` and judges it: a new value within [`RECOVERY_BOUND`] of the fault's end,
/// every process running afterwards, every tier's health check answering.
pub async fn run(
    number: usize,
    fault: Fault,
    pipeline: &mut Pipeline,
    watcher: &mut Watcher,
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
    let now = Instant::now();
    if watcher
        .first_new_after(now, now + STEADY_WITHIN)
        .await?
        .is_none()
    {
        row.failure = Some(format!(
            "no new value for {STEADY_WITHIN:?} before the fault"
        ));
        return Ok(row);
    }
    let began = Instant::now();
    let tier = &mut pipeline.tiers[fault.tier];
    let ended = match fault.kind {
        Kind::Kill => {
            tier.service.kill().await;
            let ended = Instant::now();
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
            Instant::now()
        }
    };
    let first = watcher
        .first_new_after(ended, ended + RECOVERY_BOUND)
        .await?;
    let observed_until = match first {
        Some(at) => {
            row.recovery = Some(at.saturating_duration_since(ended));
            at + SETTLE
        }
        None => Instant::now(),
    };
    tokio::time::sleep_until(observed_until.into()).await;
    row.longest_gap = watcher.longest_gap(began, observed_until);

    let mut problems = Vec::new();
    if first.is_none() {
        problems.push(format!(
            "no new value within {} s of the fault's end",
            RECOVERY_BOUND.as_secs()
        ));
    }
    for tier in &pipeline.tiers {
        if !tier.service.alive() {
            problems.push(format!("{} is not running", tier.name));
        } else if let Err(why) = health::answers(tier.health, HEALTH_WITHIN).await {
            problems.push(format!("{}: {why}", tier.name));
        }
    }
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
    fn short_kills_each_tier_once() {
        let faults = schedule(5, true, 3, Duration::from_secs(3));
        assert_eq!(faults.len(), 5);
        assert!(faults.iter().all(|f| f.kind == Kind::Kill));
    }
}
