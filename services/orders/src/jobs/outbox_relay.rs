//! The outbox relay: moves order events from the `outbox` table to the Redis stream.
//!
//! At least once, never lost: a batch is selected `FOR UPDATE SKIP LOCKED` (so several
//! replicas share the work without publishing the same row twice at once), appended to
//! the stream, and only then marked published, in the same transaction. A crash or a
//! cancellation between the append and the commit rolls the marks back and the rows
//! are sent again: consumers de-duplicate on the `outbox_id` field.
//!
//! When Redis is down the relay backs off exponentially (with jitter; the kit's
//! `Backoff`) up to
//! [`MAX_BACKOFF`]; orders keep being placed meanwhile, their events wait in the table.

use std::time::Duration;

use shop_lifecycle::CancellationToken;
use shop_service::resilience::Backoff;
use uuid::Uuid;

use crate::{
    AppState,
    events::{self, StreamEvent},
};

/// First pause after a failure (the project's backoff policy doubles it, with jitter).
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two attempts while Redis is failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bound on one batch (select, publish, mark); past it the batch is rolled back.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The job: runs batches until its token is cancelled. A batch in progress is finished
/// (bounded by [`BATCH_TIMEOUT`]) rather than dropped, so shutdown leaves no rows
/// half-marked — and even a dropped batch only means a resend.
pub async fn run(state: AppState, token: CancellationToken) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        match tokio::time::timeout(BATCH_TIMEOUT, relay_batch(&state)).await {
            Ok(Ok(published)) => {
                if backoff.failures() > 0 {
                    tracing::info!(
                        after_failures = backoff.failures(),
                        "outbox relay recovered"
                    );
                }
                backoff.reset();
                // A full batch means more may be waiting: go again at once.
                delay = if published as i64 >= state.config.outbox_batch_size {
                    Duration::ZERO
                } else {
                    state.config.outbox_poll_interval
                };
            }
            Ok(Err(error)) => {
                delay = backoff.next_delay();
                metrics::counter!("outbox_relay_failures_total").increment(1);
                tracing::warn!(%error, failures = backoff.failures(), retry_in = ?delay, "outbox relay batch failed");
            }
            Err(_) => {
                delay = backoff.next_delay();
                metrics::counter!("outbox_relay_failures_total").increment(1);
                tracing::warn!(failures = backoff.failures(), retry_in = ?delay, "outbox relay batch timed out");
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    aggregate_id: Uuid,
    event_type: String,
    payload: serde_json::Value,
    trace_context: serde_json::Value,
}

/// Publishes one batch; returns how many events it published.
pub async fn relay_batch(state: &AppState) -> anyhow::Result<usize> {
    let mut tx = crate::db::begin(&state.db).await?;
    // Polled every OUTBOX_POLL_INTERVAL: only batches that found work are worth a trace.
    let rows = sqlx::query_as::<_, OutboxRow>(
        "select id, aggregate_id, event_type, payload, trace_context from outbox \
         where published_at is null order by id limit $1 for update skip locked",
    )
    .bind(state.config.outbox_batch_size)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let events: Vec<StreamEvent> = rows
        .into_iter()
        .map(|r| StreamEvent {
            outbox_id: r.id,
            event_type: r.event_type,
            aggregate_id: r.aggregate_id,
            payload: r.payload,
            trace_context: r.trace_context,
        })
        .collect();
    events::publish(
        &state.redis,
        &state.config.events_stream,
        state.config.events_stream_maxlen,
        state.config.redis.timeout.max(Duration::from_secs(1)),
        &events,
    )
    .await?;
    sqlx::query("update outbox set published_at = now() where id = any($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("outbox_events_published_total").increment(ids.len() as u64);
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_ceiling() {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        for failures in 1..40 {
            let d = backoff.next_delay();
            assert!(d <= MAX_BACKOFF, "{failures}: {d:?}");
            assert!(d >= Duration::from_millis(10));
        }
    }
}
