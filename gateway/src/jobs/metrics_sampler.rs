//! Samples the gauges no request updates: runtime and jobs (shared with every service),
//! and the gateway's own Postgres pool (logins only). Also starts the counters of rare
//! events at 0.

use crate::state::AppState;

/// One sample.
pub async fn run(state: AppState) -> anyhow::Result<()> {
    shop_service::server::record_runtime_metrics(&state.lifecycle);
    shop_service::pools::record_pg_metrics(
        "gateway",
        &state.db,
        state.config.database.max_connections,
    );
    Ok(())
}

/// Counters of rare events start at 0, so that dashboards and alerts see a series (a
/// `rate()` of a missing series is empty, not 0) before the first shed or retry.
pub fn register_event_counters(upstream: &'static str) {
    metrics::counter!("gateway_requests_shed_total").absolute(0);
    metrics::counter!("gateway_login_shed_total").absolute(0);
    for reason in ["connect", "status"] {
        metrics::counter!("gateway_upstream_retries_total", "upstream" => upstream, "reason" => reason)
            .absolute(0);
    }
    metrics::counter!("gateway_upstream_retry_budget_exhausted_total", "upstream" => upstream)
        .absolute(0);
}
