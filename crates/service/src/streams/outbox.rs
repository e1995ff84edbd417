//! The transactional outbox's relay: moves events from a service's outbox table to its
//! Redis stream. orders relays `outbox` to `shop:events:orders`, payments relays
//! `payments_outbox` to `shop:events:payments`; both run this one relay.
//!
//! At least once, never lost: a batch is selected `FOR UPDATE SKIP LOCKED` (so several
//! replicas share the work without publishing the same row twice at once), appended to
//! the stream, and only then marked published, in the same transaction. A crash or a
//! cancellation between the append and the commit rolls the marks back and the rows
//! are sent again: consumers de-duplicate (the entry's `outbox_id`, or a key of their
//! own such as the order id).
//!
//! When Redis or Postgres is down the relay backs off (the kit's [`Backoff`]) up to
//! [`MAX_BACKOFF`]; the service keeps writing events meanwhile, they wait in the table.

use std::{sync::Arc, time::Duration};

use clap::Args;
use deadpool_redis::Pool;
use shop_lifecycle::CancellationToken;
use sqlx::{AssertSqlSafe, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::resilience::Backoff;

/// First pause after a failure (doubled at each failure, with jitter).
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two attempts while Redis or Postgres is failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bound on one batch (select, publish, mark); past it the batch is rolled back.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay's settings: which stream, how big a batch, how often to look.
#[derive(Clone, Debug, Args)]
pub struct OutboxConfig {
    /// How often the outbox relay looks for unpublished events when it has nothing to do.
    #[arg(
        id = "outbox_poll_interval",
        long = "outbox-poll-interval",
        env = "OUTBOX_POLL_INTERVAL",
        default_value = "100ms",
        value_parser = humantime::parse_duration
    )]
    pub poll_interval: Duration,

    /// Events the relay publishes per batch.
    #[arg(
        id = "outbox_batch_size",
        long = "outbox-batch-size",
        env = "OUTBOX_BATCH_SIZE",
        default_value_t = 200,
        value_parser = clap::value_parser!(i64).range(1..=10_000)
    )]
    pub batch_size: i64,

    /// Redis stream the relay publishes the service's events to.
    #[arg(
        id = "events_stream",
        long = "events-stream",
        env = "EVENTS_STREAM",
        default_value = "shop:events:orders"
    )]
    pub stream: String,

    /// Approximate maximum length of the events stream (XADD MAXLEN ~); 0 keeps everything.
    #[arg(
        id = "events_stream_maxlen",
        long = "events-stream-maxlen",
        env = "EVENTS_STREAM_MAXLEN",
        default_value_t = 1_000_000
    )]
    pub stream_maxlen: usize,
}

/// One event as the relay publishes it.
#[derive(Debug)]
pub struct StreamEvent {
    pub outbox_id: i64,
    pub event_type: String,
    pub aggregate_id: Uuid,
    pub payload: serde_json::Value,
    /// The W3C context of the request that produced the event (`{"traceparent": ...}`).
    pub trace_context: serde_json::Value,
}

/// Writes one event into an outbox table, inside the caller's transaction, with the
/// current span's trace context (so the publish and its consumers join the trace).
pub async fn insert(
    conn: &mut sqlx::PgConnection,
    table: &Table,
    topic: &str,
    aggregate_id: Uuid,
    event_type: &str,
    payload: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(AssertSqlSafe(Arc::clone(&table.insert)))
        .bind(topic)
        .bind(aggregate_id)
        .bind(event_type)
        .bind(payload)
        .bind(shop_telemetry::outbox::trace_context_json())
        .execute(conn)
        .await?;
    Ok(())
}

/// An outbox table's name and the statements the relay runs on it, built once.
#[derive(Clone, Debug)]
pub struct Table {
    name: &'static str,
    select: Arc<str>,
    mark: Arc<str>,
    insert: Arc<str>,
    backlog: Arc<str>,
}

impl Table {
    /// The table `name` (a plain SQL identifier: lower-case letters and `_`).
    ///
    /// # Panics
    ///
    /// If `name` is not such an identifier: it is a constant of the calling service,
    /// never input, so this fails at start-up, never later.
    pub fn new(name: &'static str) -> Self {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "outbox table name must be a plain identifier, got {name:?}"
        );
        Self {
            name,
            select: format!(
                "select id, aggregate_id, event_type, payload, trace_context from {name} \
                 where published_at is null order by id limit $1 for update skip locked"
            )
            .into(),
            mark: format!("update {name} set published_at = now() where id = any($1)").into(),
            insert: format!(
                "insert into {name} (topic, aggregate_id, event_type, payload, trace_context) \
                 values ($1, $2, $3, $4, $5)"
            )
            .into(),
            backlog: format!(
                "select count(*), extract(epoch from now() - min(created_at))::float8 \
                 from {name} where published_at is null"
            )
            .into(),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// One sample of the outbox's backlog: `outbox_backlog` (events not yet published) and
/// `outbox_oldest_unpublished_age_seconds` (how long the oldest has waited; a relay
/// that cannot reach Redis shows as a growing age). For the service's metrics sampler.
pub async fn record_backlog(db: &PgPool, table: &Table) -> sqlx::Result<()> {
    let (backlog, oldest): (i64, Option<f64>) =
        sqlx::query_as(AssertSqlSafe(Arc::clone(&table.backlog)))
            .fetch_one(db)
            .await?;
    metrics::gauge!("outbox_backlog").set(backlog as f64);
    metrics::gauge!("outbox_oldest_unpublished_age_seconds").set(oldest.unwrap_or(0.0));
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    aggregate_id: Uuid,
    event_type: String,
    payload: serde_json::Value,
    trace_context: serde_json::Value,
}

/// The relay of one outbox table to one stream. [`Relay::run`] is the job.
#[derive(Clone, Debug)]
pub struct Relay {
    /// The service's pool name (the label of its pool gauges).
    pool_name: &'static str,
    table: Table,
    config: OutboxConfig,
    db: PgPool,
    redis: Pool,
    publish_timeout: Duration,
}

impl Relay {
    /// A relay of `table` to `config.stream`, over the pool named `pool_name` (see
    /// [`crate::pools::begin`]); each publish is bounded by `publish_timeout`.
    pub fn new(
        pool_name: &'static str,
        table: Table,
        config: OutboxConfig,
        db: PgPool,
        redis: Pool,
        publish_timeout: Duration,
    ) -> Self {
        Self {
            pool_name,
            table,
            config,
            db,
            redis,
            publish_timeout,
        }
    }

    /// The job: runs batches until `token` is cancelled. A batch in progress is finished
    /// (bounded by [`BATCH_TIMEOUT`]) rather than dropped, so shutdown leaves no rows
    /// half-marked — and even a dropped batch only means a resend.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            match tokio::time::timeout(BATCH_TIMEOUT, self.relay_batch()).await {
                Ok(Ok(published)) => {
                    if backoff.failures() > 0 {
                        tracing::info!(
                            table = self.table.name,
                            after_failures = backoff.failures(),
                            "outbox relay recovered"
                        );
                    }
                    backoff.reset();
                    // A full batch means more may be waiting: go again at once.
                    delay = if published as i64 >= self.config.batch_size {
                        Duration::ZERO
                    } else {
                        self.config.poll_interval
                    };
                }
                Ok(Err(error)) => {
                    delay = backoff.next_delay();
                    metrics::counter!("outbox_relay_failures_total").increment(1);
                    tracing::warn!(table = self.table.name, %error, failures = backoff.failures(), retry_in = ?delay, "outbox relay batch failed");
                }
                Err(_) => {
                    delay = backoff.next_delay();
                    metrics::counter!("outbox_relay_failures_total").increment(1);
                    tracing::warn!(table = self.table.name, failures = backoff.failures(), retry_in = ?delay, "outbox relay batch timed out");
                }
            }
        }
    }

    /// Publishes one batch; returns how many events it published.
    pub async fn relay_batch(&self) -> anyhow::Result<usize> {
        let mut tx = crate::pools::begin(self.pool_name, &self.db).await?;
        let rows = sqlx::query_as::<_, OutboxRow>(AssertSqlSafe(Arc::clone(&self.table.select)))
            .bind(self.config.batch_size)
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
        publish(
            &self.redis,
            &self.config.stream,
            self.config.stream_maxlen,
            self.publish_timeout,
            &events,
        )
        .await?;
        sqlx::query(AssertSqlSafe(Arc::clone(&self.table.mark)))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("outbox_events_published_total").increment(ids.len() as u64);
        Ok(ids.len())
    }
}

/// Appends `events` to `stream` in one atomic round trip (MULTI/EXEC). Each entry
/// carries its outbox id (a de-duplication key; delivery is at least once) and the W3C
/// headers of its publish span (`traceparent`, `tracestate`), so the consumer's span
/// continues the trace. The older `trace_context` field (the stored JSON) stays for
/// consumers that read it.
pub async fn publish(
    pool: &Pool,
    stream: &str,
    maxlen: usize,
    timeout: Duration,
    events: &[StreamEvent],
) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    // One publish span per event, each a child of the request that produced it (its
    // trace context was stored in the outbox row), all covering the one round trip.
    let publish_spans: Vec<tracing::Span> = events
        .iter()
        .map(|e| shop_telemetry::outbox::publish_span(stream, &e.trace_context))
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (event, span) in events.iter().zip(&publish_spans) {
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
            .arg(event.trace_context.to_string());
        for (name, value) in shop_telemetry::outbox::entry_trace_headers(span, &event.trace_context)
        {
            cmd.arg(name).arg(value);
        }
        cmd.ignore();
    }
    tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn))
        .instrument(shop_telemetry::db::redis_span("MULTI XADD EXEC"))
        .await??;
    Ok(())
}
