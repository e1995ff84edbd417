//! Deletes idempotency keys older than the retention (≥ 24 h by contract), in small
//! batches so that it never holds long locks.

use crate::AppState;

/// Rows deleted per statement.
const BATCH: i64 = 1000;

/// One run: delete expired keys until none are left.
pub async fn run(state: AppState) -> anyhow::Result<()> {
    let retention = chrono::Duration::from_std(state.config.idempotency_retention)?;
    let cutoff = chrono::Utc::now() - retention;
    loop {
        let deleted = sqlx::query(
            "delete from idempotency_keys where ctid = any(array( \
                 select ctid from idempotency_keys where created_at < $1 limit $2))",
        )
        .bind(cutoff)
        .bind(BATCH)
        .execute(&state.db)
        .await?
        .rows_affected();
        metrics::counter!("idempotency_keys_expired_total").increment(deleted);
        if deleted < BATCH as u64 {
            return Ok(());
        }
    }
}
