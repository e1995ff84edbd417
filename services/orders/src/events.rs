//! Redis: the bounded connection pool, and publishing outbox events to the stream.

use std::time::Duration;

use deadpool_redis::Pool;

use tracing::Instrument;

use crate::config::Config;

/// The destination named in publish spans.
const PUBLISH_SPAN: &str = "shop:events:orders";

/// Builds the bounded Redis pool of the events stream (no connection is opened until
/// first use).
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    shop_service::pools::redis_pool_from(&config.redis)
}

/// `PING`, bounded by the pool's timeouts.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: String = tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("PING").query_async(&mut conn),
    )
    .await??;
    Ok(())
}

/// One event as the relay publishes it.
#[derive(Debug)]
pub struct StreamEvent {
    pub outbox_id: i64,
    pub event_type: String,
    pub aggregate_id: uuid::Uuid,
    pub payload: serde_json::Value,
    pub trace_context: serde_json::Value,
}

/// Appends `events` to `stream` in one atomic round trip (MULTI/EXEC). Each entry
/// carries its outbox id, the consumers' de-duplication key (delivery is at least once).
pub async fn publish(
    pool: &Pool,
    stream: &str,
    maxlen: usize,
    timeout: Duration,
    events: &[StreamEvent],
) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for event in events {
        let cmd = pipe.cmd("XADD").arg(stream);
        if maxlen > 0 {
            cmd.arg("MAXLEN").arg("~").arg(maxlen);
        }
        cmd.arg("*")
            .arg("outbox_id")
            .arg(event.outbox_id)
            .arg("type")
            .arg(&event.event_type)
            .arg("aggregate_id")
            .arg(event.aggregate_id.to_string())
            .arg("payload")
            .arg(event.payload.to_string())
            .arg("trace_context")
            .arg(event.trace_context.to_string())
            .ignore();
    }
    // One publish span per event, each a child of the request that placed the order
    // (its trace context was stored in the outbox row), all covering the one round trip.
    let _publish_spans: Vec<tracing::Span> = events
        .iter()
        .map(|e| shop_telemetry::outbox::publish_span(PUBLISH_SPAN, &e.trace_context))
        .collect();
    tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn))
        .instrument(shop_telemetry::db::redis_span("MULTI XADD EXEC"))
        .await??;
    Ok(())
}
