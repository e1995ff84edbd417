//! Samples what reveals a leak or a stall: runtime and job state, pool usage, and the
//! outbox backlog. (The consumer samples its own lag, pending entries and dead letters.)

use crate::AppState;

/// One sample.
pub async fn run(state: AppState) -> anyhow::Result<()> {
    shop_service::server::record_runtime_metrics(&state.lifecycle);
    shop_service::pools::record_pg_metrics(
        "payments",
        &state.db,
        state.config.database.max_connections,
    );
    shop_service::pools::record_redis_metrics("events", &state.redis);
    shop_service::streams::outbox::record_backlog(&state.db, &crate::payments::OUTBOX).await?;
    Ok(())
}
