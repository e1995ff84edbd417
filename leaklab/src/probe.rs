//! Measuring: gauges for requests in flight and waiters, memory, and the observation
//! window that feeds the shared [`LeakDetector`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shop_lifecycle::leak::{LeakDetector, LeakSample};

use crate::Sampling;

/// A count of things in progress (requests being served, tasks waiting on a pool),
/// kept right by a guard that decrements on drop, however the future holding it ends.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicUsize>);

impl Gauge {
    /// Counts one more until the returned guard is dropped.
    pub fn enter(&self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(Arc::clone(&self.0))
    }

    /// The current count.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Adds one without a guard (for items that leave in another place, e.g. a queue).
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Removes one added by [`add`](Self::add).
    pub fn sub(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Holds one unit of a [`Gauge`] until dropped.
#[derive(Debug)]
pub struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The two gauges every scenario exposes to the detector.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// Requests being served right now (a sample with any is "traffic").
    pub in_flight: Gauge,
    /// Work waiting on a shared resource: pool acquires, row locks, queued items.
    pub waiters: Gauge,
}

impl Probe {
    /// A sample of the current runtime.
    pub fn sample(&self) -> LeakSample {
        LeakSample {
            alive_tasks: shop_lifecycle::alive_tasks(),
            waiters: self.waiters.get(),
            in_flight: self.in_flight.get(),
        }
    }

    /// Waits until no request is in flight, for at most `limit`.
    pub async fn wait_idle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Feeds the detector one window of samples. Before each sample, `event` makes the
/// pitfall's background events (and returns once their clients have given up); then
/// the lab waits for in-flight requests to end (at most a second: a request still in
/// flight makes the sample "traffic", and the verdict `Insufficient`) and one sampling
/// period, and samples.
pub async fn observe<E, Fut>(probe: &Probe, sampling: &Sampling, mut event: E) -> LeakDetector
where
    E: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut detector = LeakDetector::new(sampling.window, sampling.min_growth);
    for _ in 0..detector.window() {
        for _ in 0..sampling.events_per_sample {
            event().await;
        }
        probe.wait_idle(Duration::from_secs(1)).await;
        tokio::time::sleep(sampling.every).await;
        detector.observe(probe.sample());
    }
    detector
}

/// Resident memory of this process in bytes, from `/proc/self/statm` (0 where there is
/// no procfs).
pub fn rss_bytes() -> u64 {
    // statm counts pages; 4 KiB pages on every platform this lab runs on (x86_64 and
    // aarch64 Linux defaults), which avoids a libc call for the page size.
    const PAGE: u64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE)
}
