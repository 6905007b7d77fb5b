//! The subscribers: a fixed number of slots, each holding one WebSocket subscriber that comes
//! back when the server drops it, some of which never read; churn closes random slots'
//! connections and opens new ones, as browsers coming and going would.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loadgen::System;
use loadgen::stats::Stats;
use loadgen::subscriber::{ConnectError, Subscriber, SubscriberSpec};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// Time allowed for one connection attempt (TCP, WebSocket, handshake, subscription).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a slot waits before connecting again after a failure or a close by the server.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a slot's subscriber subscribes to, and whether it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every soak topic (`?soak//`), and never reads a byte: the server must bound what it
    /// keeps for it. Replaced by a new one after `--stalled-lifetime-seconds`.
    Stalled,
    /// Every soak topic, reading all: the busiest readers.
    Everything,
    /// One source topic `soak/t/N`.
    Source(usize),
    /// One reference topic of the mirror view, `soak/mirror/N`.
    Mirror(usize),
    /// One reference topic of the throttled view, `soak/slow/N`.
    Slow(usize),
}

impl Kind {
    /// The kind of slot `index` of `subscribers`: the first `stalled` slots stall, as many
    /// after them read everything, the rest take one topic each, source, mirror and throttled
    /// copy in turn, spread over `topics`.
    pub fn of(index: usize, stalled: usize, topics: usize) -> Self {
        if index < stalled {
            return Self::Stalled;
        }
        if index < 2 * stalled {
            return Self::Everything;
        }
        let topic = index % topics.max(1);
        match index % 3 {
            0 => Self::Source(topic),
            1 => Self::Mirror(topic),
            _ => Self::Slow(topic),
        }
    }

    /// The selector it subscribes with.
    pub fn selector(self) -> String {
        match self {
            Self::Stalled | Self::Everything => "?soak//".to_owned(),
            Self::Source(n) => format!("soak/t/{n}"),
            Self::Mirror(n) => format!("soak/mirror/{n}"),
            Self::Slow(n) => format!("soak/slow/{n}"),
        }
    }

    /// Whether its latencies say something about the server: not for throttled values, which
    /// are late on purpose.
    fn timed(self) -> bool {
        matches!(self, Self::Source(_) | Self::Mirror(_))
    }
}

/// What the population has seen so far.
#[derive(Debug, Default)]
pub struct PopulationCounters {
    /// Successful subscriptions, the first ones included.
    pub opened: AtomicU64,
    /// Connections closed by churn.
    pub churned: AtomicU64,
    /// Connections the server ended (a stalled reader's heartbeat timeout, say).
    pub server_closes: AtomicU64,
    /// Connection attempts that failed (each is retried).
    pub connect_failures: AtomicU64,
    /// Stalled subscribers connected now.
    pub stalled_open: AtomicU64,
}

/// Everything a slot task needs, shared.
struct Shared {
    urls: Vec<String>,
    source_base: Ipv4Addr,
    per_source: usize,
    stalled_lifetime: Duration,
    timed: Arc<Stats>,
    untimed: Arc<Stats>,
    counters: Arc<PopulationCounters>,
    connecting: Semaphore,
}

/// The slots and their tasks.
pub struct Population {
    shared: Arc<Shared>,
    slots: Vec<CancellationToken>,
    stalled: usize,
    topics: usize,
    tasks: TaskTracker,
}

impl Population {
    /// Starts `config.subscribers` slots connecting to the configured URLs in turn (a few
    /// attempts at once), [`Population::stalled`] of which never read; latencies of source and
    /// mirror subscribers go to `timed`, everything else to `untimed`.
    pub fn start(config: &Config, timed: Arc<Stats>, untimed: Arc<Stats>) -> Self {
        let shared = Arc::new(Shared {
            urls: config.url.clone(),
            source_base: config.source_base,
            per_source: config.per_source.max(1),
            stalled_lifetime: Duration::from_secs_f64(config.stalled_lifetime_seconds),
            timed,
            untimed,
            counters: Arc::default(),
            connecting: Semaphore::new(config.connect_concurrency.max(1)),
        });
        let mut population = Self {
            shared,
            slots: Vec::with_capacity(config.subscribers),
            stalled: Self::stalled(config),
            topics: config.topics,
            tasks: TaskTracker::new(),
        };
        for index in 0..config.subscribers {
            let stop = population.spawn_slot(index);
            population.slots.push(stop);
        }
        population
    }

    /// How many of the configured subscribers stall.
    pub fn stalled(config: &Config) -> usize {
        let stalled = (config.subscribers as f64 * config.stalled_percent / 100.0).round();
        (stalled as usize).min(config.subscribers)
    }

    /// The population's counters.
    pub fn counters(&self) -> Arc<PopulationCounters> {
        Arc::clone(&self.shared.counters)
    }

    /// Closes the connections of `count` random slots and opens new ones in their place.
    pub fn churn(&mut self, count: usize) {
        if self.slots.is_empty() {
            return;
        }
        let mut rng = rand::rng();
        for _ in 0..count {
            let index = rng.random_range(0..self.slots.len());
            self.slots[index].cancel();
            self.slots[index] = self.spawn_slot(index);
            self.shared.counters.churned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes every connection and waits (at most `within`) for the slot tasks to end.
    pub async fn close(self, within: Duration) -> bool {
        for stop in &self.slots {
            stop.cancel();
        }
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }

    fn spawn_slot(&self, index: usize) -> CancellationToken {
        let stop = CancellationToken::new();
        let kind = Kind::of(index, self.stalled, self.topics);
        self.tasks.spawn(run_slot(
            Arc::clone(&self.shared),
            index,
            kind,
            stop.clone(),
        ));
        stop
    }
}

/// The source address of slot `index`.
fn source_address(base: Ipv4Addr, per_source: usize, index: usize) -> Ipv4Addr {
    let offset = u32::try_from(index / per_source).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(base).saturating_add(offset))
}

/// One slot: connect and subscribe, then read (or, stalled, hold the connection) until told to
/// stop; connect again when the server ends the connection or an attempt fails.
async fn run_slot(shared: Arc<Shared>, index: usize, kind: Kind, stop: CancellationToken) {
    let counters = &shared.counters;
    let stats = if kind.timed() {
        &shared.timed
    } else {
        &shared.untimed
    };
    let source = source_address(shared.source_base, shared.per_source, index);
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = open(&shared, index, kind, source, Arc::clone(stats)) => opened,
        };
        match opened {
            Ok(subscriber) => {
                counters.opened.fetch_add(1, Ordering::Relaxed);
                if kind == Kind::Stalled {
                    counters.stalled_open.fetch_add(1, Ordering::Relaxed);
                    let stopped = tokio::select! {
                        () = stop.cancelled() => true,
                        () = tokio::time::sleep(shared.stalled_lifetime) => false,
                    };
                    counters.stalled_open.fetch_sub(1, Ordering::Relaxed);
                    drop(subscriber);
                    if stopped {
                        return;
                    }
                    continue;
                }
                subscriber.run(stop.clone()).await;
                if stop.is_cancelled() {
                    return;
                }
                counters.server_closes.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(index, %error, "a subscriber could not connect");
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

/// One connection attempt, holding one of the connect permits while it lasts.
async fn open(
    shared: &Shared,
    index: usize,
    kind: Kind,
    source: Ipv4Addr,
    stats: Arc<Stats>,
) -> Result<Subscriber, ConnectError> {
    let _permit = shared
        .connecting
        .acquire()
        .await
        .map_err(|_| ConnectError::Timeout)?;
    let spec = SubscriberSpec::new(
        System::TopicServer,
        &shared.urls,
        &kind.selector(),
        "",
        "",
        CONNECT_TIMEOUT,
    )?;
    Subscriber::open(&spec, index, source, stats).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_take_their_kinds_in_turn() {
        let kinds: Vec<Kind> = (0..8).map(|i| Kind::of(i, 2, 100)).collect();
        assert_eq!(
            kinds,
            [
                Kind::Stalled,
                Kind::Stalled,
                Kind::Everything,
                Kind::Everything,
                Kind::Mirror(4),
                Kind::Slow(5),
                Kind::Source(6),
                Kind::Mirror(7),
            ]
        );
        assert_eq!(Kind::of(250, 0, 100), Kind::Mirror(50));
        assert_eq!(Kind::Slow(3).selector(), "soak/slow/3");
        assert_eq!(Kind::Stalled.selector(), "?soak//");
    }

    #[test]
    fn slots_spread_over_source_addresses() {
        let base = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(source_address(base, 800, 0), base);
        assert_eq!(source_address(base, 800, 799), base);
        assert_eq!(source_address(base, 800, 800), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(
            source_address(base, 800, 10_000),
            Ipv4Addr::new(127, 0, 0, 14)
        );
    }
}
