//! [`CircuitBreaker`]: the one circuit breaker of the project.
//!
//! **Closed**: calls pass; outcomes are counted. It **opens** when its [`Trip`] rule
//! fires: a failure rate over a sliding window (ten buckets) once enough calls were seen
//! (the gateway's upstream), or a number of failures in a row (orders' Redis cache).
//! **Open**: every call is refused at once, with how long until it may try again, for
//! `open_for`. Then **half-open**: `half_open_probes` probe calls pass; all succeed →
//! closed; one fails → open again. A probe whose call is dropped (client gone, deadline)
//! gives its slot back when its [`BreakerPermit`] drops, so the breaker can never stay
//! half-open with phantom probes.
//!
//! An outcome seen outside a call (the cache's pub/sub listener reconnecting) is reported
//! with [`CircuitBreaker::observe`]. Transitions are logged and passed to the observer
//! given at construction, which sets the service's own metric (`cache_degraded`,
//! `gateway_circuit_breaker_state`), and counted in `circuit_breaker_transitions_total`.
//!
//! Why in-house (docs/architecture.md has the long form): tower-resilience's breaker is
//! a tower `Layer`, but the gateway records an outcome per proxy *attempt* inside its
//! retry loop and orders' cache guards plain Redis calls and a pub/sub listener that are
//! not tower services; failsafe's policies cover both trip rules but not a fixed number
//! of half-open probes nor releasing a dropped probe. The state is a few integers under
//! a `parking_lot` mutex (never poisoned, never held across an `.await`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

const BUCKETS: usize = 10;

/// When a closed breaker opens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trip {
    /// At least `min_calls` calls in the last `window`, and failures ≥ `rate` of them.
    FailureRate {
        rate: f64,
        min_calls: u32,
        window: Duration,
    },
    /// `n` failures in a row.
    ConsecutiveFailures(u32),
}

/// A breaker's settings.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Names the breaker in logs and in `circuit_breaker_transitions_total{breaker}`.
    pub name: &'static str,
    pub trip: Trip,
    /// How long it stays open before probing.
    pub open_for: Duration,
    /// Probe calls let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

/// The breaker's state, as observers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge value dashboards use: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    buckets: [Bucket; BUCKETS],
}

type Observer = Box<dyn Fn(BreakerState, &str) + Send + Sync>;

struct Inner {
    config: BreakerConfig,
    bucket_len: Duration,
    started: Instant,
    observer: Observer,
    // A sync mutex: held for a few arithmetic operations, never across an `.await`.
    state: Mutex<State>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The breaker (cheap to clone: one reference count).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

/// Permission for one call; report its outcome with [`BreakerPermit::record`].
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl BreakerPermit {
    /// Reports the call's outcome.
    pub fn record(mut self, success: bool) {
        self.recorded = true;
        self.breaker.record(self.probe, Some(success), "");
    }

    /// Reports a failure with its reason (logged when it opens the breaker).
    pub fn record_failure(mut self, reason: &str) {
        self.recorded = true;
        self.breaker.record(self.probe, Some(false), reason);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.probe, None, "");
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker; `observer` is called with every new state and the reason.
    pub fn new(
        config: BreakerConfig,
        observer: impl Fn(BreakerState, &str) + Send + Sync + 'static,
    ) -> Self {
        let window = match config.trip {
            Trip::FailureRate { window, .. } => window,
            Trip::ConsecutiveFailures(_) => Duration::from_secs(10),
        };
        observer(BreakerState::Closed, "started");
        Self {
            inner: Arc::new(Inner {
                bucket_len: (window / BUCKETS as u32).max(Duration::from_millis(1)),
                started: Instant::now(),
                observer: Box::new(observer),
                state: Mutex::new(State {
                    phase: Phase::Closed {
                        consecutive_failures: 0,
                    },
                    buckets: [Bucket::default(); BUCKETS],
                }),
                config,
            }),
        }
    }

    /// A permit, or how long until the breaker may let a call through.
    pub fn acquire(&self) -> Result<BreakerPermit, Duration> {
        let mut state = self.inner.state.lock();
        let now = Instant::now();
        if let Phase::Open { until } = state.phase {
            if now < until {
                return Err(until - now);
            }
            self.set_phase(
                &mut state,
                Phase::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                },
                "open time elapsed",
            );
        }
        let probe = match &mut state.phase {
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                if *in_flight + *successes >= self.inner.config.half_open_probes.max(1) {
                    return Err(self.inner.config.open_for.min(Duration::from_secs(1)));
                }
                *in_flight += 1;
                true
            }
            // Open was turned into half-open above.
            Phase::Closed { .. } | Phase::Open { .. } => false,
        };
        Ok(BreakerPermit {
            breaker: self.clone(),
            probe,
            recorded: false,
        })
    }

    /// An outcome seen outside a call: a success closes the breaker from any state, a
    /// failure counts like a call's.
    pub fn observe(&self, success: bool, reason: &str) {
        let mut state = self.inner.state.lock();
        if success {
            if !matches!(state.phase, Phase::Closed { .. }) {
                state.buckets = [Bucket::default(); BUCKETS];
                self.set_phase(
                    &mut state,
                    Phase::Closed {
                        consecutive_failures: 0,
                    },
                    reason,
                );
            }
            return;
        }
        let probe = matches!(state.phase, Phase::HalfOpen { .. });
        if probe && let Phase::HalfOpen { in_flight, .. } = &mut state.phase {
            // Not a permit's probe: count it as one so the decrement below balances.
            *in_flight += 1;
        }
        drop(state);
        self.record(probe, Some(false), reason);
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner.state.lock().phase.state()
    }

    /// Whether the breaker is closed.
    pub fn is_closed(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    fn record(&self, probe: bool, outcome: Option<bool>, reason: &str) {
        let config = &self.inner.config;
        let mut state = self.inner.state.lock();
        let now = Instant::now();
        let open = Phase::Open {
            until: now + config.open_for,
        };
        match (&mut state.phase, probe) {
            (
                Phase::HalfOpen {
                    in_flight,
                    successes,
                },
                true,
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Some(true) => {
                        *successes += 1;
                        if *successes >= config.half_open_probes.max(1) {
                            state.buckets = [Bucket::default(); BUCKETS];
                            let closed = Phase::Closed {
                                consecutive_failures: 0,
                            };
                            self.set_phase(&mut state, closed, "probes succeeded");
                        }
                    }
                    Some(false) => self.set_phase(&mut state, open, reason),
                    None => {}
                }
            }
            (
                Phase::Closed {
                    consecutive_failures,
                },
                false,
            ) => {
                let Some(success) = outcome else { return };
                *consecutive_failures = if success {
                    0
                } else {
                    consecutive_failures.saturating_add(1)
                };
                let in_a_row = *consecutive_failures;
                let trips = match config.trip {
                    Trip::ConsecutiveFailures(n) => in_a_row >= n.max(1),
                    Trip::FailureRate {
                        rate, min_calls, ..
                    } => {
                        let (total, failures) = self.count(&mut state, now, success);
                        total >= min_calls && f64::from(failures) / f64::from(total) >= rate
                    }
                };
                if trips {
                    self.set_phase(&mut state, open, reason);
                }
            }
            // Late outcomes of calls let through before the phase changed: ignored.
            _ => {}
        }
    }

    /// Adds one outcome to the window; returns (calls, failures) in the window.
    fn count(&self, state: &mut State, now: Instant, success: bool) -> (u32, u32) {
        let epoch = u64::try_from(
            now.duration_since(self.inner.started).as_nanos()
                / self.inner.bucket_len.as_nanos().max(1),
        )
        .unwrap_or(u64::MAX);
        let bucket = &mut state.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.total += 1;
        bucket.failures += u32::from(!success);
        state
            .buckets
            .iter()
            .filter(|b| b.epoch + BUCKETS as u64 > epoch)
            .fold((0, 0), |(t, f), b| (t + b.total, f + b.failures))
    }

    fn set_phase(&self, state: &mut State, phase: Phase, reason: &str) {
        let (from, to) = (state.phase.state(), phase.state());
        state.phase = phase;
        if from != to {
            let name = self.inner.config.name;
            match to {
                BreakerState::Open => {
                    tracing::warn!(breaker = name, reason, "circuit breaker opened");
                }
                _ => tracing::info!(
                    breaker = name,
                    state = to.name(),
                    "circuit breaker state changed"
                ),
            }
            metrics::counter!("circuit_breaker_transitions_total", "breaker" => name, "to" => to.name())
                .increment(1);
            (self.inner.observer)(to, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn rate_breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            BreakerConfig {
                name: "test",
                trip: Trip::FailureRate {
                    rate: 0.5,
                    min_calls: 4,
                    window: Duration::from_secs(10),
                },
                open_for: Duration::from_millis(50),
                half_open_probes: 2,
            },
            |_, _| {},
        )
    }

    fn in_a_row(n: u32, open_for: Duration) -> CircuitBreaker {
        CircuitBreaker::new(
            BreakerConfig {
                name: "test",
                trip: Trip::ConsecutiveFailures(n),
                open_for,
                half_open_probes: 1,
            },
            |_, _| {},
        )
    }

    #[test]
    fn the_breaker_opens_on_failures_half_opens_after_a_while_and_closes_on_success() {
        let b = rate_breaker();
        for _ in 0..4 {
            b.acquire().unwrap().record(false);
        }
        assert!(b.acquire().is_err(), "open after 4 failures out of 4");
        std::thread::sleep(Duration::from_millis(60));
        let p1 = b.acquire().unwrap();
        let p2 = b.acquire().unwrap();
        assert!(b.acquire().is_err(), "only two probes while half-open");
        p1.record(true);
        p2.record(true);
        assert!(b.is_closed());
    }

    #[test]
    fn a_dropped_probe_gives_its_slot_back() {
        let b = rate_breaker();
        for _ in 0..4 {
            b.acquire().unwrap().record(false);
        }
        std::thread::sleep(Duration::from_millis(60));
        drop(b.acquire().unwrap());
        drop(b.acquire().unwrap());
        assert!(
            b.acquire().is_ok(),
            "dropped probes do not hold their slots"
        );
    }

    #[test]
    fn failures_in_a_row_open_it_and_one_success_in_between_resets_the_count() {
        let b = in_a_row(2, Duration::from_millis(50));
        b.acquire().unwrap().record(false);
        b.acquire().unwrap().record(true);
        b.acquire().unwrap().record(false);
        assert!(b.is_closed(), "not two in a row");
        b.acquire().unwrap().record(false);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.acquire().unwrap();
        assert!(b.acquire().is_err(), "one probe at a time");
        probe.record_failure("still down");
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens it");
    }

    #[test]
    fn an_outside_success_closes_it_and_the_observer_sees_every_transition() {
        let seen = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&seen);
        let b = CircuitBreaker::new(
            BreakerConfig {
                name: "test",
                trip: Trip::ConsecutiveFailures(1),
                open_for: Duration::from_secs(60),
                half_open_probes: 1,
            },
            move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
            },
        );
        b.observe(false, "connection refused");
        assert_eq!(b.state(), BreakerState::Open);
        b.observe(true, "subscribed");
        assert!(b.is_closed());
        // started, open, closed
        assert_eq!(seen.load(Ordering::Relaxed), 3);
    }
}
