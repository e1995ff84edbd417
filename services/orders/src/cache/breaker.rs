//! The Redis circuit breaker: while Redis is down or slow, a read costs one short
//! timeout per cooldown, not one per request.
//!
//! Closed (Redis used; consecutive failures counted) → Open after
//! `CACHE_BREAKER_FAILURES` failures in a row (Redis skipped for `CACHE_BREAKER_COOLDOWN`)
//! → HalfOpen (one probe request goes to Redis) → Closed on its success, Open again on
//! its failure. Every state but Closed is "degraded": the `cache_degraded` gauge is 1
//! and a log line marks the transitions both ways.

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

/// A consecutive-failure breaker with a cooldown and a single half-open probe.
#[derive(Debug)]
pub(crate) struct Breaker {
    // A synchronous (parking_lot, never poisoned) Mutex, not a tokio one: it guards a
    // few bytes, is never held across an `.await`, and is cheaper than an async lock on
    // the hot path.
    state: Mutex<State>,
    failures_to_open: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(failures_to_open: u32, cooldown: Duration) -> Self {
        metrics::gauge!("cache_degraded").set(0.0);
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            cooldown,
        }
    }

    /// Whether a Redis call may be tried now. In HalfOpen only the probe may; a probe
    /// that never reported (its future was dropped) is replaced after one cooldown.
    pub(crate) fn allow(&self) -> bool {
        let mut state = self.state.lock();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probe_started: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_started } if now >= probe_started + self.cooldown => {
                *state = State::HalfOpen { probe_started: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// A Redis call succeeded.
    pub(crate) fn on_success(&self) {
        let mut state = self.state.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!("cache recovered: Redis answers again, L2 back in use");
            metrics::gauge!("cache_degraded").set(0.0);
        }
        *state = State::Closed { failures: 0 };
    }

    /// A Redis call failed or timed out.
    pub(crate) fn on_failure(&self, error: &dyn Display) {
        let mut state = self.state.lock();
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= self.failures_to_open => {
                tracing::warn!(
                    error = %error,
                    cooldown = ?self.cooldown,
                    "cache degraded: Redis unusable, reads fall through to Postgres"
                );
                metrics::gauge!("cache_degraded").set(1.0);
                *state = open;
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
            }
            State::HalfOpen { .. } => {
                tracing::debug!(error = %error, "cache: Redis probe failed, breaker stays open");
                *state = open;
            }
            State::Open { .. } => {}
        }
    }

    /// Whether Redis is being bypassed (Open or HalfOpen).
    pub(crate) fn is_degraded(&self) -> bool {
        !matches!(*self.state.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_lets_one_probe_through_after_the_cooldown()
    {
        let breaker = Breaker::new(2, Duration::from_millis(50));
        assert!(breaker.allow());
        breaker.on_failure(&"boom");
        assert!(!breaker.is_degraded(), "one failure is not enough");
        breaker.on_failure(&"boom");
        assert!(breaker.is_degraded());
        assert!(!breaker.allow(), "open: Redis is skipped");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow(), "after the cooldown, one probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.on_success();
        assert!(!breaker.is_degraded());
        assert!(breaker.allow());
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker() {
        let breaker = Breaker::new(1, Duration::from_millis(20));
        breaker.on_failure(&"boom");
        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.allow());
        breaker.on_failure(&"still down");
        assert!(breaker.is_degraded());
        assert!(!breaker.allow());
    }
}
