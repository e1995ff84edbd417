//! The gateway's background jobs, one file per job. Each is started through the
//! lifecycle supervisor in [`start`] and ends when its token is cancelled.

pub mod metrics_sampler;
pub mod rate_limit_gc;

use std::time::Duration;

use shop_lifecycle::{Lifecycle, PeriodicConfig};

use crate::state::AppState;

/// The sampler never runs more often than this, whatever `METRICS_SAMPLE_INTERVAL` says.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Starts every background job of the gateway on `lifecycle`.
pub fn start(state: &AppState, lifecycle: &Lifecycle) {
    // Idle clients are forgotten once a minute, so the limiter's memory follows the
    // number of recent clients, not every client ever seen.
    let limiter = state.limiter.clone();
    lifecycle.spawn_periodic(
        "rate_limit_gc",
        PeriodicConfig::new(Duration::from_secs(60)),
        move |_token| rate_limit_gc::run(limiter.clone()),
    );

    metrics_sampler::register_event_counters("orders");
    // What reveals a leak before it is an outage: tasks, jobs, pools.
    let sampled = state.clone();
    lifecycle.spawn_periodic(
        "metrics_sampler",
        PeriodicConfig::new(
            state
                .config
                .server
                .metrics_sample_interval
                .max(MIN_SAMPLE_INTERVAL),
        ),
        move |_token| metrics_sampler::run(sampled.clone()),
    );
}
