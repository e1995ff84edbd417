//! A circuit breaker per upstream.
//!
//! Closed: requests pass; outcomes are counted in a sliding window (ten buckets).
//! When at least `min_requests` are in the window and the failure rate reaches the
//! threshold, it **opens**: every request is answered 503 + `Retry-After` at once,
//! without touching the upstream, for `open_for`. Then it **half-opens**: a few probe
//! requests pass; all succeed → closed; one fails → open again.
//!
//! State is exported as `gateway_circuit_breaker_state{upstream}` (0 closed, 1
//! half-open, 2 open). A probe whose request is dropped (client gone) gives its slot
//! back in `Drop`, so the breaker can never get stuck half-open with phantom probes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

const BUCKETS: usize = 10;

/// Breaker settings.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_probes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
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

/// The breaker (cheap to clone).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: &'static str,
    config: BreakerConfig,
    bucket_len: Duration,
    started: Instant,
    // A synchronous (parking_lot, never poisoned) mutex, not a tokio one: held for a
    // few arithmetic operations, never across an `.await`.
    state: Mutex<State>,
}

/// Permission to send one request; report its outcome with [`BreakerPermit::record`].
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl BreakerPermit {
    /// Reports the outcome: `success = false` for connect errors, timeouts, 502/503/504.
    pub fn record(mut self, success: bool) {
        self.recorded = true;
        self.breaker.record(self.probe, Some(success));
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.probe, None);
        }
    }
}

impl CircuitBreaker {
    pub fn new(upstream: &'static str, config: BreakerConfig) -> Self {
        let bucket_len = (config.window / BUCKETS as u32).max(Duration::from_millis(1));
        metrics::gauge!("gateway_circuit_breaker_state", "upstream" => upstream).set(0.0);
        Self {
            inner: Arc::new(Inner {
                upstream,
                config,
                bucket_len,
                started: Instant::now(),
                state: Mutex::new(State {
                    phase: Phase::Closed,
                    buckets: [Bucket::default(); BUCKETS],
                }),
            }),
        }
    }

    /// A permit, or how long until the breaker may let a request through.
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
            );
        }
        let probe = match &mut state.phase {
            Phase::Closed => false,
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                if *in_flight + *successes >= self.inner.config.half_open_probes {
                    return Err(Duration::from_secs(1));
                }
                *in_flight += 1;
                true
            }
            Phase::Open { .. } => unreachable!("an expired open phase became half-open above"),
        };
        Ok(BreakerPermit {
            breaker: self.clone(),
            probe,
            recorded: false,
        })
    }

    /// Whether the breaker is closed (for tests and /readyz).
    pub fn is_closed(&self) -> bool {
        matches!(self.inner.state.lock().phase, Phase::Closed)
    }

    fn record(&self, probe: bool, outcome: Option<bool>) {
        let config = &self.inner.config;
        let mut state = self.inner.state.lock();
        let now = Instant::now();
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
                        if *successes >= config.half_open_probes {
                            state.buckets = [Bucket::default(); BUCKETS];
                            self.set_phase(&mut state, Phase::Closed);
                        }
                    }
                    Some(false) => self.set_phase(
                        &mut state,
                        Phase::Open {
                            until: now + config.open_for,
                        },
                    ),
                    None => {}
                }
            }
            (Phase::Closed, false) => {
                let Some(success) = outcome else { return };
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
                let (total, failures) = state
                    .buckets
                    .iter()
                    .filter(|b| b.epoch + BUCKETS as u64 > epoch)
                    .fold((0u32, 0u32), |(t, f), b| (t + b.total, f + b.failures));
                if total >= config.min_requests
                    && f64::from(failures) / f64::from(total) >= config.failure_rate
                {
                    tracing::warn!(
                        upstream = self.inner.upstream,
                        total,
                        failures,
                        "circuit breaker opened"
                    );
                    self.set_phase(
                        &mut state,
                        Phase::Open {
                            until: now + config.open_for,
                        },
                    );
                }
            }
            // Late results of requests sent before the phase changed: ignored.
            _ => {}
        }
    }

    fn set_phase(&self, state: &mut State, phase: Phase) {
        let (value, name) = match phase {
            Phase::Closed => (0.0, "closed"),
            Phase::HalfOpen { .. } => (1.0, "half_open"),
            Phase::Open { .. } => (2.0, "open"),
        };
        if std::mem::discriminant(&state.phase) != std::mem::discriminant(&phase) {
            tracing::info!(
                upstream = self.inner.upstream,
                state = name,
                "circuit breaker state changed"
            );
            metrics::counter!("gateway_circuit_breaker_transitions_total", "upstream" => self.inner.upstream, "to" => name).increment(1);
        }
        state.phase = phase;
        metrics::gauge!("gateway_circuit_breaker_state", "upstream" => self.inner.upstream)
            .set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerConfig {
                failure_rate: 0.5,
                min_requests: 4,
                window: Duration::from_secs(10),
                open_for: Duration::from_millis(50),
                half_open_probes: 2,
            },
        )
    }

    #[test]
    fn the_breaker_opens_on_failures_half_opens_after_a_while_and_closes_on_success() {
        let b = breaker();
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
        let b = breaker();
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
}
