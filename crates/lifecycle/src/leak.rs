//! A leak detector: turns periodic samples of task counts into a verdict.
//!
//! Under traffic the alive-task count rises and falls with the load, so growth proves
//! nothing. A leak shows when the traffic stops: the count should fall back to its
//! baseline, and a leaking service's count instead stays up or keeps climbing. The
//! services feed a [`LeakDetector`] from their metrics sampler, and the leak lab feeds
//! it from its scenarios; both read the same [`LeakVerdict`].
//!
//! # The rule
//!
//! The detector keeps the last `window` samples. It calls a leak when **all** hold:
//!
//! 1. the window is full (fewer samples are [`LeakVerdict::Insufficient`]);
//! 2. there was no traffic in any sample of the window (`in_flight == 0` in every one;
//!    a window with traffic is also `Insufficient`: growth there is expected, and the
//!    detector cannot tell load from a leak);
//! 3. for one signal, alive tasks or waiters (checked in that order), the value
//!    **never decreases** from one sample to the next, **and** grows by at least
//!    `min_growth` from the first sample of the window to the last.
//!
//! Otherwise the verdict is [`LeakVerdict::Healthy`]. Requiring monotonic growth keeps
//! a noisy but stable service from being flagged; requiring `min_growth` keeps a
//! service that settles one or two tasks higher (a lazily started pool) from being
//! flagged.
//!
//! ```
//! use shop_lifecycle::leak::{LeakDetector, LeakSample, LeakVerdict};
//!
//! let mut detector = LeakDetector::new(3, 10);
//! for alive_tasks in [40, 52, 64] {
//!     detector.observe(LeakSample { alive_tasks, ..LeakSample::default() });
//! }
//! assert_eq!(
//!     detector.verdict(),
//!     LeakVerdict::Leaking { signal: "alive_tasks", from: 40, to: 64 },
//! );
//! ```

use std::collections::VecDeque;

/// A signal the rule watches: its name in [`LeakVerdict::Leaking`], and how to read it.
type Signal = (&'static str, fn(&LeakSample) -> usize);

/// The signals in the order they are checked: a growing task count is the more
/// common leak, so it is the one reported when both grow.
const SIGNALS: [Signal; 2] = [
    ("alive_tasks", |sample| sample.alive_tasks),
    ("waiters", |sample| sample.waiters),
];

/// One sample of the signals that reveal a leak.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeakSample {
    /// Tasks alive in the runtime ([`alive_tasks`](crate::alive_tasks)).
    pub alive_tasks: usize,
    /// Tasks waiting on a shared resource (pool acquires, semaphore permits).
    pub waiters: usize,
    /// Requests being served when the sample was taken; non-zero means traffic.
    pub in_flight: usize,
}

/// Remembers the last `window` samples and applies the rule in the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct LeakDetector {
    window: usize,
    min_growth: usize,
    samples: VecDeque<LeakSample>,
}

impl LeakDetector {
    /// A detector judging the last `window` samples (at least 2) and calling a leak
    /// at a growth of `min_growth` (at least 1), e.g. `LeakDetector::new(6, 10)`:
    /// six samples, ten tasks.
    ///
    /// Smaller values are raised to those minimums, because a window of one sample
    /// shows no growth and a growth of zero would call every flat line a leak.
    pub fn new(window: usize, min_growth: usize) -> Self {
        let window = window.max(2);
        Self {
            window,
            min_growth: min_growth.max(1),
            samples: VecDeque::with_capacity(window),
        }
    }

    /// Feeds a sample, forgetting the oldest once the window is full, and returns the
    /// verdict over the window.
    pub fn observe(&mut self, sample: LeakSample) -> LeakVerdict {
        if self.samples.len() == self.window {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.verdict()
    }

    /// The verdict over the samples in the window.
    pub fn verdict(&self) -> LeakVerdict {
        if self.samples.len() < self.window
            || self.samples.iter().any(|sample| sample.in_flight > 0)
        {
            return LeakVerdict::Insufficient;
        }
        for (signal, read) in SIGNALS {
            if let Some((from, to)) = self.steady_growth(read) {
                return LeakVerdict::Leaking { signal, from, to };
            }
        }
        LeakVerdict::Healthy
    }

    /// The samples in the window, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &LeakSample> {
        self.samples.iter()
    }

    /// How many samples a verdict needs.
    pub const fn window(&self) -> usize {
        self.window
    }

    /// The growth over a window that counts as a leak.
    pub const fn min_growth(&self) -> usize {
        self.min_growth
    }

    /// `(first, last)` if the signal never decreases across the window and grows by
    /// at least `min_growth`.
    fn steady_growth(&self, read: fn(&LeakSample) -> usize) -> Option<(usize, usize)> {
        let values: Vec<usize> = self.samples.iter().map(read).collect();
        let never_decreases = values.windows(2).all(|pair| pair[1] >= pair[0]);
        let (&from, &to) = (values.first()?, values.last()?);
        (never_decreases && to - from >= self.min_growth).then_some((from, to))
    }
}

/// The detector's judgement over its window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeakVerdict {
    /// Not enough evidence: the window is not full yet, or it saw traffic.
    Insufficient,
    /// A full, quiet window with no steady growth.
    Healthy,
    /// A full, quiet window in which `signal` (`"alive_tasks"` or `"waiters"`) never
    /// decreased and grew from `from` to `to`.
    Leaking {
        /// Which signal grew: `"alive_tasks"` or `"waiters"`.
        signal: &'static str,
        /// Its value in the first sample of the window.
        from: usize,
        /// Its value in the last sample of the window.
        to: usize,
    },
}

impl LeakVerdict {
    /// Whether the verdict is [`LeakVerdict::Leaking`].
    pub const fn is_leaking(&self) -> bool {
        matches!(self, Self::Leaking { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(alive_tasks: usize) -> LeakSample {
        LeakSample {
            alive_tasks,
            waiters: 0,
            in_flight: 0,
        }
    }

    fn feed(detector: &mut LeakDetector, samples: impl IntoIterator<Item = LeakSample>) {
        for sample in samples {
            detector.observe(sample);
        }
    }

    #[test]
    fn growing_alive_tasks_without_traffic_is_a_leak() {
        let mut detector = LeakDetector::new(6, 10);
        feed(&mut detector, [20, 24, 24, 28, 30, 35].map(quiet));
        assert_eq!(
            detector.verdict(),
            LeakVerdict::Leaking {
                signal: "alive_tasks",
                from: 20,
                to: 35
            }
        );
    }

    #[test]
    fn growing_waiters_without_traffic_is_a_leak() {
        let mut detector = LeakDetector::new(3, 5);
        feed(
            &mut detector,
            [0, 3, 7].map(|waiters| LeakSample {
                alive_tasks: 10,
                waiters,
                in_flight: 0,
            }),
        );
        assert_eq!(
            detector.verdict(),
            LeakVerdict::Leaking {
                signal: "waiters",
                from: 0,
                to: 7
            }
        );
    }

    #[test]
    fn growth_during_traffic_is_not_called_a_leak() {
        let mut detector = LeakDetector::new(4, 10);
        let busy = |alive_tasks| LeakSample {
            alive_tasks,
            waiters: 0,
            in_flight: 50,
        };
        let verdict = detector.observe(busy(10));
        assert_eq!(verdict, LeakVerdict::Insufficient);
        feed(&mut detector, [busy(40), busy(80)]);
        // One quiet sample at the end does not make the window quiet.
        let verdict = detector.observe(quiet(120));
        assert_eq!(verdict, LeakVerdict::Insufficient);
        assert!(!verdict.is_leaking());
    }

    #[test]
    fn a_flat_task_count_is_healthy() {
        let mut detector = LeakDetector::new(6, 10);
        feed(&mut detector, [30, 31, 30, 30, 31, 30].map(quiet));
        assert_eq!(detector.verdict(), LeakVerdict::Healthy);
    }

    #[test]
    fn growth_that_dips_on_the_way_is_healthy() {
        let mut detector = LeakDetector::new(4, 10);
        feed(&mut detector, [10, 30, 25, 40].map(quiet));
        assert_eq!(detector.verdict(), LeakVerdict::Healthy);
    }

    #[test]
    fn growth_below_the_threshold_is_healthy() {
        let mut detector = LeakDetector::new(4, 10);
        feed(&mut detector, [10, 12, 15, 19].map(quiet));
        assert_eq!(detector.verdict(), LeakVerdict::Healthy);
    }

    #[test]
    fn too_few_samples_are_insufficient() {
        let mut detector = LeakDetector::new(6, 10);
        feed(&mut detector, [10, 100, 1000, 10_000, 100_000].map(quiet));
        assert_eq!(detector.verdict(), LeakVerdict::Insufficient);
    }

    #[test]
    fn the_window_slides_so_a_recovered_leak_becomes_healthy() {
        let mut detector = LeakDetector::new(3, 10);
        feed(&mut detector, [10, 20, 30].map(quiet));
        assert!(detector.verdict().is_leaking());
        feed(&mut detector, [10, 10, 10].map(quiet));
        assert_eq!(detector.verdict(), LeakVerdict::Healthy);
        assert_eq!(detector.samples().len(), 3);
    }

    #[test]
    fn a_zero_window_or_growth_is_raised_to_the_minimum() {
        let detector = LeakDetector::new(0, 0);
        assert_eq!(detector.window(), 2);
        assert_eq!(detector.min_growth(), 1);
    }
}
