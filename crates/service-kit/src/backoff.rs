//! Exponential back-off with jitter, for every reconnect loop.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, with ±20% jitter so that many clients
/// reconnecting to a restarted server do not arrive in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The default for reconnecting to local services: 100 ms doubling to 2 s, so a restarted
    /// peer is found again well within a few seconds.
    pub fn reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// The delay to wait now; the one after it will be longer.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = rand::rng().random_range(0.8..1.2);
        base.mul_f64(factor)
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert!((80..=120).contains(&d[0]), "{d:?}");
        assert!((160..=240).contains(&d[1]), "{d:?}");
        assert!((320..=480).contains(&d[4]), "{d:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
