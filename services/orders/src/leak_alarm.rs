//! The service's leak alarm: the shared [`LeakDetector`] (crates/lifecycle), fed by the
//! `metrics_sampler` job.
//!
//! Every `METRICS_SAMPLE_INTERVAL` the sampler calls [`LeakAlarm::observe`] with the
//! runtime's alive tasks, the Redis pool's waiters, and the API requests in flight at
//! that instant ([`LeakAlarm::enter`], held by a middleware around the `/v1` routes:
//! Prometheus scrapes, health probes and `/admin` calls are not traffic). The rule is the
//! detector's, unchanged (`shop_lifecycle::leak`): over the last [`WINDOW`] samples, none
//! with a request in flight, alive tasks or waiters never decrease and grow by at least
//! [`MIN_GROWTH`]. The leak lab judges its pitfalls with the same detector.
//!
//! The alarm is **raised** when the verdict becomes `Leaking`: one `WARN` log and
//! `shop_leak_suspected` = 1. It is **cleared** only by a `Healthy` verdict (a full quiet
//! window without steady growth): one `INFO` log and `shop_leak_suspected` = 0. A window
//! that saw traffic is `Insufficient`, evidence of nothing, so it leaves the alarm as it
//! was rather than make it flap under a trickle of requests.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use parking_lot::Mutex;
use shop_lifecycle::leak::{LeakDetector, LeakSample, LeakVerdict};

/// Samples the detector judges: 12 × `METRICS_SAMPLE_INTERVAL` (1 min by default).
pub const WINDOW: usize = 12;
/// Growth over a full quiet window that counts as a leak (the leak lab uses the same).
pub const MIN_GROWTH: usize = 10;

/// The detector, its alarm state and the in-flight count it needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LeakAlarm {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A synchronous (parking_lot) mutex, not a tokio one: held for one `observe` (a few
    /// comparisons), never across an `.await`.
    detector: Mutex<LeakDetector>,
    /// Whether the alarm is raised (see the module docs for when it changes).
    raised: AtomicBool,
    /// `/v1` requests being served right now.
    in_flight: AtomicUsize,
}

impl Default for LeakAlarm {
    fn default() -> Self {
        Self::new()
    }
}

impl LeakAlarm {
    /// An alarm judging [`WINDOW`] samples, calling a leak at [`MIN_GROWTH`].
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                detector: Mutex::new(LeakDetector::new(WINDOW, MIN_GROWTH)),
                raised: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Counts one API request as in flight until the returned guard is dropped (also
    /// when the request future is dropped: client gone, deadline passed).
    pub fn enter(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            inner: Arc::clone(&self.inner),
        }
    }

    /// API requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Feeds one sample (with the in-flight count of this instant), raises or clears
    /// the alarm, sets `shop_leak_suspected`, and returns the verdict.
    pub fn observe(&self, alive_tasks: usize, waiters: usize) -> LeakVerdict {
        let sample = LeakSample {
            alive_tasks,
            waiters,
            in_flight: self.in_flight(),
        };
        let verdict = self.inner.detector.lock().observe(sample);
        match &verdict {
            LeakVerdict::Leaking { signal, from, to } => {
                if !self.inner.raised.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        signal,
                        from,
                        to,
                        samples = WINDOW,
                        "leak suspected: {signal} grew from {from} to {to} over the last \
                         {WINDOW} samples with no request in flight (docs/leaks.md)"
                    );
                }
            }
            LeakVerdict::Healthy => {
                if self.inner.raised.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        alive_tasks,
                        "leak alarm cleared: a full quiet window without growth"
                    );
                }
            }
            LeakVerdict::Insufficient => {}
        }
        metrics::gauge!("shop_leak_suspected").set(if self.is_raised() { 1.0 } else { 0.0 });
        verdict
    }

    /// Whether the alarm is raised.
    pub fn is_raised(&self) -> bool {
        self.inner.raised.load(Ordering::Relaxed)
    }

    /// The detector's verdict over its current window.
    pub fn verdict(&self) -> LeakVerdict {
        self.inner.detector.lock().verdict()
    }
}

/// One API request in flight; see [`LeakAlarm::enter`].
#[derive(Debug)]
pub struct InFlight {
    inner: Arc<Inner>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_is_raised_by_steady_growth_kept_through_traffic_and_cleared_when_healthy() {
        let alarm = LeakAlarm::new();
        for i in 0..WINDOW {
            alarm.observe(20 + 2 * i, 0);
        }
        assert!(alarm.is_raised(), "{:?}", alarm.verdict());

        // A sample taken during a request: the window proves nothing, the alarm stays.
        let request = alarm.enter();
        assert_eq!(alarm.observe(60, 0), LeakVerdict::Insufficient);
        drop(request);
        assert!(alarm.is_raised());

        for _ in 0..WINDOW {
            alarm.observe(20, 0);
        }
        assert_eq!(alarm.verdict(), LeakVerdict::Healthy);
        assert!(!alarm.is_raised());
        assert_eq!(alarm.in_flight(), 0);
    }
}
