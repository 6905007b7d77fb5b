//! Heartbeats for every connection from one task, instead of two timers in every session: each
//! sweep sends a heartbeat (`heartbeat` to a version-2 session, a WebSocket ping to a version-1
//! one) to connections that are due one, and closes with 4001 those the server has heard
//! nothing from for the heartbeat interval plus the timeout.
//!
//! A connection registers after its handshake and leaves when it ends; its reader records each
//! frame it receives in the session's outbound ([`SessionOutbound::heard`]), so the sweep reads
//! one atomic per connection. Sweeps run at a quarter of the shorter of interval and timeout, so
//! a silent connection is closed at most that much after its deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outbound::{CloseReason, Outgoing, SessionOutbound};

/// What version-2 clients get every heartbeat interval.
const HEARTBEAT: &[u8] = br#"{"type":"heartbeat"}"#;

struct Watched {
    outbound: Arc<SessionOutbound>,
    /// Version 2 gets `heartbeat` messages; version 1 WebSocket pings.
    numbered: bool,
    /// When the next heartbeat is due, in milliseconds of the registry's clock.
    next_beat_ms: u64,
}

/// The connections being watched, by connection id, and the clock their times are read on.
pub(crate) struct Liveness {
    connections: Mutex<HashMap<u64, Watched>>,
    started: Instant,
    interval: Duration,
    timeout: Duration,
}

impl Liveness {
    /// Watches with this heartbeat interval and timeout.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            connections: Mutex::new(HashMap::new()),
            started: Instant::now(),
            interval,
            timeout,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since the registry started: the clock `heard` times are on.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts watching connection `id` (after its handshake); it counts as heard now.
    pub fn watch(&self, id: u64, outbound: Arc<SessionOutbound>, numbered: bool) {
        let now = self.now_ms();
        outbound.heard(now);
        self.map().insert(
            id,
            Watched {
                outbound,
                numbered,
                next_beat_ms: now.saturating_add(Self::ms(self.interval)),
            },
        );
    }

    /// Stops watching connection `id`.
    pub fn forget(&self, id: u64) {
        self.map().remove(&id);
    }

    /// One sweep at `now_ms`: heartbeats where due, closes where silent too long.
    fn sweep(&self, now_ms: u64) {
        let silence = Self::ms(self.interval + self.timeout);
        let interval = Self::ms(self.interval);
        for watched in self.map().values_mut() {
            if now_ms.saturating_sub(watched.outbound.last_heard()) > silence {
                tracing::debug!("nothing heard within the heartbeat timeout; closing");
                watched.outbound.close(CloseReason::HeartbeatTimeout);
                continue;
            }
            if now_ms >= watched.next_beat_ms {
                watched.next_beat_ms = now_ms.saturating_add(interval);
                let beat = if watched.numbered {
                    Outgoing::Message {
                        seq: None,
                        bytes: Bytes::from_static(HEARTBEAT),
                    }
                } else {
                    Outgoing::Ping
                };
                watched.outbound.push_unnumbered(beat);
            }
        }
    }

    /// Sweeps until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.interval.min(self.timeout) / 4).max(Duration::from_millis(5));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.sweep(self.now_ms()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound() -> Arc<SessionOutbound> {
        Arc::new(SessionOutbound::new(1000))
    }

    #[test]
    fn beats_when_due_and_closes_the_silent() {
        let liveness = Liveness::new(Duration::from_millis(100), Duration::from_millis(50));
        let (alive, silent) = (outbound(), outbound());
        liveness.watch(1, Arc::clone(&alive), true);
        liveness.watch(2, Arc::clone(&silent), false);
        let start = alive.last_heard();
        liveness.sweep(start + 50);
        assert!(
            alive.drain_now().is_empty(),
            "no heartbeat before the interval"
        );
        alive.heard(start + 100);
        liveness.sweep(start + 120);
        assert_eq!(alive.drain_now(), [Bytes::from_static(HEARTBEAT)]);
        assert_eq!(silent.close_reason(), None, "a ping is not a message");
        liveness.sweep(start + 200);
        assert_eq!(silent.close_reason(), Some(CloseReason::HeartbeatTimeout));
        assert_eq!(alive.close_reason(), None, "heard at +100: not silent yet");
        liveness.forget(1);
        liveness.sweep(start + 1000);
        assert_eq!(
            alive.close_reason(),
            None,
            "forgotten connections are left alone"
        );
    }
}
