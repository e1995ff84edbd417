//! Samples what reveals a leak before it is an outage: runtime and job state, pool
//! usage, and the outbox backlog; and feeds the leak alarm (`crate::leak_alarm`).

use crate::AppState;

/// One sample.
pub async fn run(state: AppState) -> anyhow::Result<()> {
    shop_service::server::record_runtime_metrics(&state.lifecycle);

    shop_service::pools::record_pg_metrics(
        "orders",
        &state.db,
        state.config.database.max_connections,
    );
    let waiting = shop_service::pools::record_redis_metrics("events", &state.redis);
    if let Some(cache) = state.cache.redis_pool() {
        shop_service::pools::record_redis_metrics("cache", cache);
    }

    // Before the query below, so that a failing database does not blind the alarm.
    state
        .leak_alarm
        .observe(shop_lifecycle::alive_tasks(), waiting);

    shop_service::streams::outbox::record_backlog(&state.db, &crate::events::OUTBOX).await?;
    Ok(())
}
