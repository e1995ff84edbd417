//! [`Backoff`]: the project's one backoff policy, on `backon`'s exponential backoff.
//!
//! The base delay `d` starts at `min` and doubles after each failure up to `max / 2`;
//! each wait is `d` plus a random jitter of up to `d` (backon's jitter), so waits spread
//! over `[min, max)` and replicas that failed together do not retry together.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

/// The policy as a backon builder (for `backon::Retryable` and for iterating).
pub fn policy(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay((max / 2).max(min))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// The waits of one retry loop: [`Backoff::next_delay`] after a failure,
/// [`Backoff::reset`] after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    failures: u32,
}

impl Backoff {
    /// Waits between `min` and `max` (see the module docs).
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = policy(min, max);
        Self {
            delays: builder.build(),
            builder,
            failures: 0,
        }
    }

    /// The wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // `without_max_times`: the iterator never ends; the fallback is for type's sake.
        self.delays
            .next()
            .unwrap_or_else(|| self.builder.build().next().unwrap_or_default())
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_stay_within_bounds_and_start_over_after_a_success() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = Backoff::new(min, max);
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(waits.iter().all(|w| *w >= min && *w < max), "{waits:?}");
        assert!(waits[11] >= max / 2, "the base reached max/2: {waits:?}");
        assert_eq!(backoff.failures(), 12);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay() < min * 2);
    }
}
