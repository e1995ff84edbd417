//! Process and tokio runtime gauges, recorded through the `metrics` facade.
//!
//! Call [`sample`] from a supervised periodic job (every 5–15 s) inside the runtime:
//!
//! | metric | meaning |
//! |---|---|
//! | `process_resident_memory_bytes` | RSS (`VmRSS` of `/proc/self/status`; Linux only) |
//! | `process_open_fds` | entries of `/proc/self/fd` (Linux only) |
//! | `tokio_workers` | runtime worker threads |
//! | `tokio_alive_tasks` | tasks spawned and not yet finished: a leak shows as growth |
//! | `tokio_global_queue_depth` | tasks waiting in the injection queue |
//! | `tokio_worker_busy_ratio` | share of worker time spent polling since the last sample (0..1) |
//! | `log_lines_dropped_total` | log lines dropped because the writer could not keep up |
//!
//! All of it is the stable tokio API (no `tokio_unstable`); busy time needs 64-bit atomics.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Busy time of all workers at the previous sample, for the ratio. A synchronous
/// (`parking_lot`) mutex: it is held for a few instructions and never across an `.await`.
static LAST_BUSY: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);

/// Records every gauge once. Tokio gauges are skipped outside a runtime, process gauges
/// where `/proc` is absent.
pub fn sample() {
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    if let Some(fds) = open_fds() {
        metrics::gauge!("process_open_fds").set(fds as f64);
    }
    metrics::counter!("log_lines_dropped_total").absolute(crate::dropped_log_lines() as u64);

    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let m = handle.metrics();
    let workers = m.num_workers();
    metrics::gauge!("tokio_workers").set(workers as f64);
    metrics::gauge!("tokio_alive_tasks").set(m.num_alive_tasks() as f64);
    metrics::gauge!("tokio_global_queue_depth").set(m.global_queue_depth() as f64);

    #[cfg(target_has_atomic = "64")]
    {
        let busy: Duration = (0..workers).map(|i| m.worker_total_busy_duration(i)).sum();
        let now = Instant::now();
        let previous = LAST_BUSY.lock().replace((now, busy));
        if let Some(ratio) = previous.and_then(|p| busy_ratio(p, (now, busy), workers)) {
            metrics::gauge!("tokio_worker_busy_ratio").set(ratio);
        }
    }
}

/// Busy share of `workers` between two samples of (time, total busy duration).
fn busy_ratio(
    (t0, busy0): (Instant, Duration),
    (t1, busy1): (Instant, Duration),
    workers: usize,
) -> Option<f64> {
    let wall = t1.checked_duration_since(t0)?.as_secs_f64() * workers as f64;
    (wall > 0.0).then(|| (busy1.saturating_sub(busy0).as_secs_f64() / wall).clamp(0.0, 1.0))
}

/// Resident set size in bytes, from `VmRSS` in `/proc/self/status`.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Number of open file descriptors (entries of `/proc/self/fd`).
fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ratio_is_busy_time_over_wall_time_of_all_workers() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let r = busy_ratio(
            (t0, Duration::from_secs(1)),
            (t1, Duration::from_secs(3)),
            2,
        );
        assert_eq!(r, Some(0.5));
        assert_eq!(
            busy_ratio((t1, Duration::ZERO), (t0, Duration::ZERO), 2),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sample_records_process_and_runtime_gauges() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            sample();
            sample();
        });
        let text = handle.render();
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "tokio_workers 2",
            "tokio_alive_tasks",
            "tokio_global_queue_depth",
            "tokio_worker_busy_ratio",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }
}
