//! `throttle to N updates every P`, as a pure state machine per reference topic.
//!
//! Time is a parameter (`std::time::Instant`), so the server drives it with tokio's clock (which
//! tests can pause) and this module stays free of any runtime.
//!
//! Timing (our reading of the reference, which leaves it open): a window of length `P` opens
//! with the first update after an idle period. The first `N` updates in a window are published
//! at once; later ones are held, each replacing the one held before (per-topic conflation), and
//! the latest is published when the window ends — which opens the next window, counting that
//! publication as its first update.

use std::time::{Duration, Instant};

use super::Throttle;

/// What to do with an offered update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer<V> {
    /// Publish this value now.
    PublishNow(V),
    /// The value is held until `flush_at`. `schedule` is true when nothing was held before in
    /// this window, i.e. the caller must arrange a [`ThrottleState::flush`] call at `flush_at`.
    Held {
        /// When the window ends.
        flush_at: Instant,
        /// Whether a flush must be scheduled now.
        schedule: bool,
    },
}

/// The throttle state of one reference topic.
#[derive(Debug, Clone)]
pub struct ThrottleState<V> {
    limit: u32,
    period: Duration,
    window_start: Option<Instant>,
    sent: u32,
    pending: Option<V>,
}

impl<V> ThrottleState<V> {
    /// A throttle allowing `throttle.updates` updates every `throttle.period`.
    pub fn new(throttle: &Throttle) -> Self {
        Self {
            limit: throttle.updates.max(1),
            period: throttle.period,
            window_start: None,
            sent: 0,
            pending: None,
        }
    }

    fn window_end(&self) -> Option<Instant> {
        // Periods are at most a day (checked when the view is parsed); never overflow anyway.
        self.window_start
            .map(|start| start.checked_add(self.period).unwrap_or(start))
    }

    /// Offers an update at `now`.
    pub fn offer(&mut self, now: Instant, value: V) -> Offer<V> {
        if self.window_end().is_none_or(|end| now >= end) && self.pending.is_none() {
            self.window_start = Some(now);
            self.sent = 0;
        }
        if self.sent < self.limit && self.pending.is_none() {
            self.sent += 1;
            return Offer::PublishNow(value);
        }
        let schedule = self.pending.replace(value).is_none();
        Offer::Held {
            flush_at: self.window_end().unwrap_or(now),
            schedule,
        }
    }

    /// At the end of a window: the held value to publish, if any (which opens a new window).
    /// Called early, it returns nothing and keeps the value held.
    pub fn flush(&mut self, now: Instant) -> Option<V> {
        if self.window_end().is_some_and(|end| now < end) {
            return None;
        }
        let value = self.pending.take()?;
        self.window_start = Some(now);
        self.sent = 1;
        Some(value)
    }

    /// When the held value is due, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref().and(self.window_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(updates: u32, secs: u64) -> ThrottleState<u32> {
        ThrottleState::new(&Throttle {
            updates,
            period: Duration::from_secs(secs),
        })
    }

    #[test]
    fn first_n_pass_then_latest_is_held_until_the_window_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = throttle(2, 5);
        assert_eq!(t.offer(t0, 1), Offer::PublishNow(1));
        assert_eq!(t.offer(t0 + s, 2), Offer::PublishNow(2));
        assert_eq!(
            t.offer(t0 + 2 * s, 3),
            Offer::Held {
                flush_at: t0 + 5 * s,
                schedule: true
            }
        );
        assert_eq!(
            t.offer(t0 + 3 * s, 4),
            Offer::Held {
                flush_at: t0 + 5 * s,
                schedule: false
            }
        );
        assert_eq!(t.due(), Some(t0 + 5 * s));
        assert_eq!(t.flush(t0 + 4 * s), None, "too early");
        assert_eq!(t.flush(t0 + 5 * s), Some(4), "latest held value wins");
        assert_eq!(t.due(), None);
        // The flush opened a window at 5 s counting one update: one more passes.
        assert_eq!(t.offer(t0 + 6 * s, 5), Offer::PublishNow(5));
        assert!(matches!(
            t.offer(t0 + 7 * s, 6),
            Offer::Held { schedule: true, .. }
        ));
    }

    #[test]
    fn an_idle_period_opens_a_fresh_window() {
        let t0 = Instant::now();
        let mut t = throttle(1, 2);
        assert_eq!(t.offer(t0, 1), Offer::PublishNow(1));
        assert_eq!(
            t.offer(t0 + Duration::from_secs(10), 2),
            Offer::PublishNow(2)
        );
    }

    #[test]
    fn a_held_value_is_never_overtaken() {
        let t0 = Instant::now();
        let mut t = throttle(1, 2);
        assert_eq!(t.offer(t0, 1), Offer::PublishNow(1));
        assert!(matches!(
            t.offer(t0 + Duration::from_secs(1), 2),
            Offer::Held { .. }
        ));
        // The window has ended but the flush has not run yet: the new value joins the held one.
        assert!(matches!(
            t.offer(t0 + Duration::from_secs(3), 3),
            Offer::Held {
                schedule: false,
                ..
            }
        ));
        assert_eq!(t.flush(t0 + Duration::from_secs(3)), Some(3));
    }
}
