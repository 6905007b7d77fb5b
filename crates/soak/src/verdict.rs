//! Whether a soak run passed: memory that stopped growing after the warm-up, descriptors that
//! all came back, and a feed that kept flowing. Pure functions over the samples.

use std::time::Duration;

/// The memory of one process across the measured part of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryGrowth {
    /// Median resident memory over the first samples after the warm-up, bytes.
    pub baseline_bytes: u64,
    /// Median resident memory over the last samples, bytes.
    pub end_bytes: u64,
    /// `end / baseline - 1`, in percent.
    pub percent: f64,
}

/// How many samples form the baseline and the end: a minute's worth, at least three (one
/// reading is noise: the allocator returns memory in steps), and at most a third of the
/// `measured` samples (a short run compares its first and last thirds).
pub fn window(sample_interval: Duration, measured: usize) -> usize {
    let per_minute = (60.0 / sample_interval.as_secs_f64().max(0.001)).round() as usize;
    per_minute.max(3).min(measured / 3).max(1)
}

/// Compares the first `window` readings at or after `warmup` with the last `window` ones.
/// `samples` are (time since the start, resident bytes); `None` with too few samples after
/// the warm-up to compare two distinct windows.
pub fn memory_growth(
    samples: &[(Duration, u64)],
    warmup: Duration,
    window: usize,
) -> Option<MemoryGrowth> {
    let measured: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= warmup)
        .map(|&(_, rss)| rss)
        .collect();
    let window = window.max(1);
    if measured.len() < 2 * window {
        return None;
    }
    let baseline_bytes = median(&measured[..window]);
    let end_bytes = median(&measured[measured.len() - window..]);
    let percent = if baseline_bytes == 0 {
        0.0
    } else {
        (end_bytes as f64 / baseline_bytes as f64 - 1.0) * 100.0
    };
    Some(MemoryGrowth {
        baseline_bytes,
        end_bytes,
        percent,
    })
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// Descriptors a process holds after every subscriber has gone, beyond what it held before
/// the first one came: 0 unless something leaked.
pub fn leaked_fds(before: u64, after: u64) -> u64 {
    after.saturating_sub(before)
}

/// The longest time after the warm-up during which the feed did not flow: from one sample in
/// which it flowed (an update was published and a subscriber received an update published
/// after it had subscribed) to the next, or to the last sample. `samples` are (time since the
/// start, whether it flowed in the interval ending then).
pub fn longest_silence(samples: &[(Duration, bool)], warmup: Duration) -> Duration {
    let mut longest = Duration::ZERO;
    let mut last_flow = warmup;
    for &(at, _) in samples
        .iter()
        .filter(|&&(at, flowed)| flowed && at >= warmup)
    {
        longest = longest.max(at - last_flow);
        last_flow = at;
    }
    match samples.last() {
        Some(&(end, _)) if end >= warmup => longest.max(end - last_flow),
        _ => longest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn the_window_is_a_minute_of_samples() {
        assert_eq!(window(at(10), 360), 6);
        assert_eq!(window(at(60), 60), 3);
        assert_eq!(window(Duration::from_secs(2), 1800), 30);
        // A short run: a third of what it measured.
        assert_eq!(window(Duration::from_secs(2), 18), 6);
        assert_eq!(window(at(10), 2), 1);
    }

    #[test]
    fn growth_compares_medians_after_the_warm_up() {
        // Warm-up growth is ignored; one spike in a window does not move its median.
        let samples: Vec<(Duration, u64)> = [
            (0, 10),
            (10, 50),
            (20, 100),
            (30, 100),
            (40, 300),
            (50, 104),
            (60, 106),
            (70, 106),
        ]
        .iter()
        .map(|&(s, rss)| (at(s), rss))
        .collect();
        let growth = memory_growth(&samples, at(20), 3).unwrap();
        assert_eq!(growth.baseline_bytes, 100);
        assert_eq!(growth.end_bytes, 106);
        assert!((growth.percent - 6.0).abs() < 1e-9);
        assert_eq!(memory_growth(&samples, at(40), 3), None);
    }

    #[test]
    fn steady_memory_does_not_grow() {
        let samples: Vec<(Duration, u64)> = (0..20).map(|s| (at(s * 10), 1000)).collect();
        let growth = memory_growth(&samples, at(50), 3).unwrap();
        assert_eq!(growth.percent, 0.0);
    }

    #[test]
    fn leaks_and_silences_are_counted() {
        assert_eq!(leaked_fds(20, 20), 0);
        assert_eq!(leaked_fds(20, 18), 0);
        assert_eq!(leaked_fds(20, 23), 3);
        let flow = [
            (at(0), false),
            (at(10), true),
            (at(20), false),
            (at(30), false),
            (at(40), true),
        ];
        assert_eq!(longest_silence(&flow, at(10)), at(30));
        assert_eq!(longest_silence(&flow, at(40)), Duration::ZERO);
        // A feed that stops for good: silent from its last flow to the last sample.
        let stopped = [(at(10), true), (at(20), false), (at(30), false)];
        assert_eq!(longest_silence(&stopped, at(0)), at(20));
        let steady: Vec<(Duration, bool)> = (1..=6).map(|s| (at(s * 10), true)).collect();
        assert_eq!(longest_silence(&steady, at(0)), at(10));
    }
}
