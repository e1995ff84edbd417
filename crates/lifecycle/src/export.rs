//! Exports job state and runtime task counts through the `metrics` facade.
//!
//! A leak is a number that only goes up; these gauges are those numbers. The services'
//! metrics sampler calls [`Lifecycle::record_metrics`] on every scrape interval, and
//! whichever exporter is installed (Prometheus in shop) publishes them.

use std::time::SystemTime;

use crate::job::{JobKind, JobState};
use crate::supervisor::Lifecycle;

impl Lifecycle {
    /// Sets the job and runtime gauges from a fresh snapshot.
    ///
    /// Per job, labelled `job`: `shop_job_running` (1 while running, 0 once ended),
    /// `shop_job_runs` and `shop_job_failures` (monotonic, exported as gauges because
    /// they are copied from the registry rather than incremented here), and for
    /// periodic jobs `shop_job_last_success_timestamp_seconds` (Unix time; alert when
    /// `time() -` it exceeds a few periods).
    ///
    /// Runtime-wide: `shop_tracked_tasks` (this lifecycle's tracker),
    /// `shop_tokio_alive_tasks` (the leak signal: must return to baseline once traffic
    /// stops), `shop_tokio_global_queue_depth` and `shop_tokio_workers`. The runtime
    /// gauges are skipped when called outside a tokio runtime.
    ///
    /// Jobs that share a name share their series; the last one written wins.
    pub fn record_metrics(&self) {
        for job in self.jobs() {
            let running = if job.state == JobState::Running {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("shop_job_running", "job" => job.name.clone()).set(running);
            metrics::gauge!("shop_job_runs", "job" => job.name.clone()).set(job.runs as f64);
            metrics::gauge!("shop_job_failures", "job" => job.name.clone())
                .set(job.failures as f64);
            if job.kind == JobKind::Periodic
                && let Some(seconds) = job.last_success.and_then(unix_seconds)
            {
                metrics::gauge!("shop_job_last_success_timestamp_seconds", "job" => job.name)
                    .set(seconds);
            }
        }

        metrics::gauge!("shop_tracked_tasks").set(self.tracked_tasks() as f64);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let runtime = handle.metrics();
            metrics::gauge!("shop_tokio_alive_tasks").set(runtime.num_alive_tasks() as f64);
            metrics::gauge!("shop_tokio_global_queue_depth")
                .set(runtime.global_queue_depth() as f64);
            metrics::gauge!("shop_tokio_workers").set(runtime.num_workers() as f64);
        }
    }
}

/// Seconds since the Unix epoch, or `None` for a clock set before 1970.
fn unix_seconds(time: SystemTime) -> Option<f64> {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|since_epoch| since_epoch.as_secs_f64())
}
