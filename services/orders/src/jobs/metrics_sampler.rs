//! Samples what reveals a leak before it is an outage: runtime and job state, pool
//! usage, and the outbox backlog; and feeds the leak alarm (`crate::leak_alarm`).

use crate::AppState;

/// One sample.
pub async fn run(state: AppState) -> anyhow::Result<()> {
    state.lifecycle.record_metrics();
    shop_telemetry::runtime::sample();

    let size = state.db.size();
    let idle = state.db.num_idle() as u32;
    metrics::gauge!("db_pool_max_connections").set(f64::from(state.config.db_max_connections));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));

    let redis = state.redis.status();
    metrics::gauge!("redis_pool_max_connections").set(redis.max_size as f64);
    metrics::gauge!("redis_pool_connections", "state" => "idle").set(redis.available as f64);
    metrics::gauge!("redis_pool_connections", "state" => "in_use")
        .set(redis.size.saturating_sub(redis.available) as f64);
    metrics::gauge!("redis_pool_waiters").set(redis.waiting as f64);

    // Before the query below, so that a failing database does not blind the alarm.
    state
        .leak_alarm
        .observe(shop_lifecycle::alive_tasks(), redis.waiting);

    let (backlog, oldest): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from now() - min(created_at))::float8 \
         from outbox where published_at is null",
    )
    .fetch_one(&state.db)
    .await?;
    metrics::gauge!("outbox_backlog").set(backlog as f64);
    metrics::gauge!("outbox_oldest_unpublished_age_seconds").set(oldest.unwrap_or(0.0));
    Ok(())
}
