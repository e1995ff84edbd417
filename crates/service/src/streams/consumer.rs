//! The one stream consumer: a consumer-group reader that survives crashes, redelivery
//! and poison entries, and stops with its service. payments consumes order events with
//! it, orders consumes payment events with it; each brings only a [`Handler`].
//!
//! # What it guarantees
//! - **Acknowledged only after the effect.** An entry is `XACK`ed after its handler
//!   returned `Ok`, i.e. after the handler's transaction committed. A crash anywhere
//!   before that leaves the entry pending, and it is delivered again: handlers are
//!   idempotent (payments keys its row by order id; orders moves an order only from
//!   `placed`).
//! - **Bounded.** At most `concurrency` entries are processed at once; the reader asks
//!   Redis for no more entries than it has free slots (and at most `batch`), so a slow
//!   handler slows the reading, never grows a set of tasks.
//! - **Retries, then a dead letter.** [`Failure::Retry`] is retried with backoff and
//!   counts as a delivery; after `max_deliveries` the entry is appended to
//!   `<stream>:dead` with the reason and acknowledged, in one MULTI/EXEC.
//!   [`Failure::Poison`] (unparseable, refers to nothing) goes there at once, so it
//!   never blocks the entries behind it. [`Failure::Unavailable`] (Postgres down) is
//!   retried with backoff without counting: an outage never dead-letters an entry.
//! - **Dead consumers' work is reclaimed.** Every `claim_idle / 2` the reader claims
//!   (`XAUTOCLAIM`) entries that some consumer of the group received more than
//!   `claim_idle` ago and never acknowledged — a replica that was killed — and
//!   processes them, counting their earlier deliveries.
//! - **Stops with its service** (pitfall 1). The reader is a supervised job: on
//!   cancellation it stops reading; each entry in flight gets [`SHUTDOWN_GRACE`] to
//!   finish, then is dropped unacknowledged (a dropped handler rolls its transaction
//!   back; the entry is simply delivered again later). Entry tasks are tracked by the
//!   same [`Lifecycle`], so shutdown waits for them.
//! - **Traced.** Each delivery runs in a `process <stream>` span (OTel messaging
//!   conventions) that continues the trace in the entry's `traceparent`.
//!
//! The blocking `XREADGROUP` has a connection of its own (a blocking read on a pooled,
//! multiplexed connection would stall every command behind it; and redis-rs' default
//! 500 ms response timeout is shorter than the block), with a response timeout of the
//! block plus `REDIS_TIMEOUT`. Acks, claims and dead letters use the service's pool.
//!
//! Why not a crate: no maintained Rust crate does consumer groups with reclaiming and
//! dead letters on top of redis-rs (docs/architecture.md, "Event streams").

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_redis::Pool;
use redis::{
    AsyncConnectionConfig, Value,
    aio::MultiplexedConnection,
    streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply},
};
use serde::de::DeserializeOwned;
use shop_lifecycle::{CancellationToken, Lifecycle, PeriodicConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::{config::RedisConfig, resilience::Backoff};

/// How long an entry in flight may still run once shutdown began.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// First pause after a failed attempt, a failed read or an outage (doubled, jittered).
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The consumer's settings. A service declares them with [`consumer_config!`](crate::consumer_config),
/// which names them after the service (`PAYMENTS_MAX_DELIVERIES`, ...).
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Deliveries of one entry before it goes to `<stream>:dead`.
    pub max_deliveries: u32,
    /// A pending entry unacknowledged this long is taken over by a live consumer.
    pub claim_idle: Duration,
    /// Entries processed at once.
    pub concurrency: usize,
    /// Most entries asked for in one read.
    pub batch: usize,
    /// How long one `XREADGROUP` waits for new entries.
    pub block: Duration,
    /// The consumer's name in its group; `None`: `<hostname>-<pid>`.
    pub name: Option<String>,
}

/// Declares a service's consumer settings as a clap `Args` struct whose variables carry
/// the service's prefix, and converts it into [`ConsumerSettings`]:
///
/// ```ignore
/// shop_service::consumer_config!(ConsumerConfig, "PAYMENTS", "payments");
/// // PAYMENTS_MAX_DELIVERIES, PAYMENTS_CLAIM_IDLE, PAYMENTS_CONSUMER_CONCURRENCY,
/// // PAYMENTS_CONSUMER_BATCH, PAYMENTS_CONSUMER_BLOCK, PAYMENTS_CONSUMER_NAME
/// ```
#[macro_export]
macro_rules! consumer_config {
    ($name:ident, $env:literal, $flag:literal) => {
        /// The event consumer (docs/operations.md, "Event streams").
        #[derive(Clone, Debug, ::clap::Args)]
        pub struct $name {
            /// Deliveries of one entry before it goes to `<stream>:dead` (acknowledged there).
            #[arg(
                                        id = "consumer_max_deliveries",
                                        long = concat!($flag, "-max-deliveries"),
                                        env = concat!($env, "_MAX_DELIVERIES"),
                                        default_value_t = 5,
                                        value_parser = ::clap::value_parser!(u32).range(1..)
                                    )]
            pub max_deliveries: u32,

            /// A pending entry unacknowledged this long (its consumer died) is claimed by a
            /// live one. Keep it above the longest processing time.
            #[arg(
                                        id = "consumer_claim_idle",
                                        long = concat!($flag, "-claim-idle"),
                                        env = concat!($env, "_CLAIM_IDLE"),
                                        default_value = "30s",
                                        value_parser = ::humantime::parse_duration
                                    )]
            pub claim_idle: ::std::time::Duration,

            /// Entries processed at once; a slow handler slows the reading down.
            #[arg(
                                        id = "consumer_concurrency",
                                        long = concat!($flag, "-consumer-concurrency"),
                                        env = concat!($env, "_CONSUMER_CONCURRENCY"),
                                        default_value_t = 32,
                                        value_parser = ::clap::value_parser!(u32).range(1..=4096)
                                    )]
            pub concurrency: u32,

            /// Most entries asked for in one XREADGROUP.
            #[arg(
                                        id = "consumer_batch",
                                        long = concat!($flag, "-consumer-batch"),
                                        env = concat!($env, "_CONSUMER_BATCH"),
                                        default_value_t = 32,
                                        value_parser = ::clap::value_parser!(u32).range(1..=10_000)
                                    )]
            pub batch: u32,

            /// How long one XREADGROUP blocks waiting for new entries (also bounds how long
            /// the reader takes to notice a shutdown).
            #[arg(
                                        id = "consumer_block",
                                        long = concat!($flag, "-consumer-block"),
                                        env = concat!($env, "_CONSUMER_BLOCK"),
                                        default_value = "1s",
                                        value_parser = ::humantime::parse_duration
                                    )]
            pub block: ::std::time::Duration,

            /// This consumer's name in its group. Unset: `<hostname>-<pid>`.
            #[arg(
                                        id = "consumer_name",
                                        long = concat!($flag, "-consumer-name"),
                                        env = concat!($env, "_CONSUMER_NAME")
                                    )]
            pub name: Option<String>,
        }

        impl From<&$name> for $crate::streams::ConsumerSettings {
            fn from(c: &$name) -> Self {
                Self {
                    max_deliveries: c.max_deliveries,
                    claim_idle: c.claim_idle,
                    concurrency: c.concurrency as usize,
                    batch: c.batch as usize,
                    block: c.block,
                    name: c.name.clone(),
                }
            }
        }
    };
}

/// Why a delivery was not processed.
#[derive(Debug)]
pub enum Failure {
    /// The entry can never be processed (unparseable, names nothing that exists): it
    /// goes to the dead-letter stream at once, with this reason.
    Poison(String),
    /// This attempt failed: retried with backoff, counted against `max_deliveries`.
    Retry(anyhow::Error),
    /// A dependency is down: retried with backoff, not counted (an outage must not
    /// dead-letter entries).
    Unavailable(anyhow::Error),
}

impl Failure {
    /// Sorts a Postgres error: lost or refused connections, an exhausted pool and a
    /// server shutting down are [`Failure::Unavailable`]; the rest [`Failure::Retry`].
    pub fn from_db(error: sqlx::Error) -> Self {
        let unavailable = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // 08: connection exception; 57P0x: the server is shutting down or
                // restarting; 53: insufficient resources.
                code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
            }),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(error.into())
        } else {
            Self::Retry(error.into())
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::from_db(error)
    }
}

/// One delivery of one entry to a [`Handler`].
#[derive(Debug)]
pub struct Delivery {
    /// The entry's id in the stream.
    pub id: String,
    /// The entry's fields (every value as text).
    pub fields: HashMap<String, String>,
    /// Which attempt this is, from 1 (earlier deliveries to dead consumers count).
    pub attempt: u32,
    /// The attempt after which a [`Failure::Retry`] sends the entry to the dead letters.
    pub max_attempts: u32,
}

impl Delivery {
    /// A field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The event type (the `type` field).
    pub fn event_type(&self) -> Option<&str> {
        self.field("type")
    }

    /// The `payload` field parsed as JSON into `T`; a missing or invalid payload is
    /// [`Failure::Poison`].
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        let raw = self
            .field("payload")
            .ok_or_else(|| Failure::Poison("no payload field".into()))?;
        serde_json::from_str(raw).map_err(|e| Failure::Poison(format!("invalid payload: {e}")))
    }

    /// Whether a [`Failure::Retry`] now sends the entry to the dead letters: a handler
    /// can then record a final outcome instead (payments fails the payment for good).
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// What a service does with each entry. Returns the outcome's label for
/// `stream_consumer_processed_total{outcome}` (`"paid"`, `"duplicate"`, `"ignored"`, ...).
///
/// Must be idempotent: an entry can be delivered more than once (a crash after the
/// commit and before the ack, a reclaim).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<&'static str, Failure>> + Send;
}

/// A consumer of one stream in one group. [`Consumer::start`] runs it.
pub struct Consumer<H> {
    shared: Arc<Shared<H>>,
    redis_url: String,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.shared.stream)
            .field("group", &self.shared.group)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

struct Shared<H> {
    stream: String,
    dead_stream: String,
    group: String,
    name: String,
    settings: ConsumerSettings,
    redis_timeout: Duration,
    pool: Pool,
    handler: H,
    in_flight: metrics::Gauge,
    /// Ids of the entries this process is working on: a claim never starts a second
    /// task on one of them (its first may be waiting out an outage).
    working: parking_lot::Mutex<HashSet<String>>,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `stream` in `group`: `redis` says where (its own connection for the
    /// blocking read) and how long a command may take; `pool` serves acks, claims and
    /// dead letters.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        settings: ConsumerSettings,
        redis: &RedisConfig,
        pool: Pool,
        handler: H,
    ) -> Self {
        let stream = stream.into();
        let group = group.into();
        let name = settings.name.clone().unwrap_or_else(default_name);
        let in_flight = metrics::gauge!("stream_consumer_in_flight", "stream" => stream.clone(), "group" => group.clone());
        Self {
            shared: Arc::new(Shared {
                dead_stream: super::dead_letter_stream(&stream),
                stream,
                group,
                name,
                settings,
                redis_timeout: redis.timeout,
                pool,
                handler,
                in_flight,
                working: parking_lot::Mutex::new(HashSet::new()),
            }),
            redis_url: redis.url.clone(),
        }
    }

    /// Starts the reader as the job `<group>_consumer`, and the sampler of the group's
    /// lag, pending entries and dead letters as `<group>_consumer_metrics` (every
    /// `sample_every`).
    pub fn start(self, lifecycle: &Lifecycle, sample_every: Duration) {
        let shared = Arc::clone(&self.shared);
        lifecycle.spawn_periodic(
            format!("{}_consumer_metrics", shared.group),
            PeriodicConfig::new(sample_every).with_timeout(Duration::from_secs(5)),
            move |_token| {
                let shared = Arc::clone(&shared);
                async move { shared.record_metrics().await }
            },
        );
        let tasks = lifecycle.clone();
        lifecycle.spawn_job(format!("{}_consumer", self.shared.group), |token| {
            self.run(tasks, token)
        });
    }

    /// The consumer's name in its group.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    async fn run(self, lifecycle: Lifecycle, token: CancellationToken) -> anyhow::Result<()> {
        let shared = self.shared;
        let client = redis::Client::open(self.redis_url.as_str())?;
        let read_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shared.redis_timeout))
            .set_response_timeout(Some(shared.settings.block + shared.redis_timeout));
        let slots = Arc::new(Semaphore::new(shared.settings.concurrency));
        let claim_every =
            (shared.settings.claim_idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut reader: Option<MultiplexedConnection> = None;
        let mut group_ready = false;
        let mut claim_cursor = String::from("0-0");
        // First what this consumer itself was given before a restart (same name: a
        // container keeps its hostname and pid), read page by page from its history.
        let mut history: Option<String> = Some(String::from("0"));
        // Claim first: what a dead predecessor left behind is the oldest work.
        let mut next_claim = Instant::now();
        tracing::info!(stream = %shared.stream, group = %shared.group, consumer = %shared.name, "stream consumer started");
        loop {
            // Wait for a free slot: with every slot busy, nothing more is read.
            let first = tokio::select! {
                biased;
                _ = token.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => permit?,
            };
            let wanted = (1 + slots.available_permits()).min(shared.settings.batch);
            let fetched = async {
                if !group_ready {
                    shared.create_group().await?;
                    group_ready = true;
                }
                if Instant::now() >= next_claim {
                    next_claim = Instant::now() + claim_every;
                    let claimed = shared.claim(&mut claim_cursor, wanted).await?;
                    if !claimed.is_empty() {
                        return Ok(claimed);
                    }
                }
                let conn = match reader.as_mut() {
                    Some(conn) => conn,
                    None => reader.insert(
                        client
                            .get_multiplexed_async_connection_with_config(&read_config)
                            .await?,
                    ),
                };
                if let Some(after) = history.as_mut() {
                    let own = shared.read(conn, after, wanted).await?;
                    match own.last() {
                        Some(last) => {
                            after.clone_from(&last.id);
                            return Ok(own);
                        }
                        None => history = None,
                    }
                }
                shared.read(conn, ">", wanted).await
            };
            // Not raced with the token: a read dropped after Redis answered would leave
            // its entries pending until reclaimed. The block bounds the wait instead.
            match fetched.await {
                Ok(deliveries) => {
                    if backoff.failures() > 0 {
                        tracing::info!(stream = %shared.stream, group = %shared.group, after_failures = backoff.failures(), "stream consumer recovered");
                    }
                    backoff.reset();
                    let mut permit = Some(first);
                    for delivery in deliveries {
                        let permit = match permit.take() {
                            Some(p) => p,
                            None => Arc::clone(&slots).acquire_owned().await?,
                        };
                        let shared = Arc::clone(&shared);
                        let token = token.clone();
                        shared.working.lock().insert(delivery.id.clone());
                        lifecycle
                            .spawn_task(format!("{}_consumer_entry", shared.group), async move {
                                shared.process(delivery, permit, token).await
                            });
                    }
                }
                Err(error) => {
                    drop(first);
                    reader = None;
                    group_ready = false;
                    // A history page that cannot be read (e.g. an entry trimmed while
                    // pending) must not stall the consumer: what is left of it is
                    // reclaimed after `claim_idle` like a dead consumer's.
                    history = None;
                    metrics::counter!("stream_consumer_read_failures_total", "stream" => shared.stream.clone(), "group" => shared.group.clone()).increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(stream = %shared.stream, group = %shared.group, %error, failures = backoff.failures(), retry_in = ?delay, "stream read failed");
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(stream = %shared.stream, group = %shared.group, consumer = %shared.name, "stream consumer stopped reading");
        Ok(())
    }
}

impl<H: Handler> Shared<H> {
    /// `XGROUP CREATE ... 0 MKSTREAM`: the group reads the stream from its start, so
    /// events published before the first consumer started are processed too.
    async fn create_group(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await?;
        let created: redis::RedisResult<()> = tokio::time::timeout(
            self.redis_timeout,
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn),
        )
        .await?;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `XREADGROUP`, at most `count` entries: after `>`, new entries (blocking up to
    /// the block time, first delivery); after an id, this consumer's own pending
    /// entries past it (at once; delivered before, so counted as a second attempt).
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        after: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Delivery>> {
        let new = after == ">";
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if new {
            cmd.arg("BLOCK").arg(self.settings.block.as_millis() as u64);
        }
        let reply: Option<StreamReadReply> = cmd
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(after)
            .query_async(conn)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| self.delivery(entry, if new { 1 } else { 2 }))
            .collect())
    }

    /// Entries of dead consumers (`XAUTOCLAIM`, idle longer than `claim_idle`), with
    /// their delivery counts (`XPENDING`), at most `count`.
    async fn claim(&self, cursor: &mut String, count: usize) -> anyhow::Result<Vec<Delivery>> {
        let mut conn = self.pool.get().await?;
        let reply: StreamAutoClaimReply = tokio::time::timeout(
            self.redis_timeout,
            redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.name)
                .arg(self.settings.claim_idle.as_millis() as u64)
                .arg(cursor.as_str())
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn),
        )
        .await??;
        *cursor = reply.next_stream_id;
        if !reply.deleted_ids.is_empty() {
            tracing::warn!(stream = %self.stream, group = %self.group, entries = ?reply.deleted_ids, "pending entries were trimmed from the stream before anyone acknowledged them");
        }
        let (Some(first), Some(last)) = (reply.claimed.first(), reply.claimed.last()) else {
            return Ok(Vec::new());
        };
        let pending: StreamPendingCountReply = tokio::time::timeout(
            self.redis_timeout,
            redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&first.id)
                .arg(&last.id)
                .arg(count.max(reply.claimed.len()) + self.settings.concurrency)
                .arg(&self.name)
                .query_async(&mut conn),
        )
        .await??;
        let deliveries: HashMap<&str, usize> = pending
            .ids
            .iter()
            .map(|p| (p.id.as_str(), p.times_delivered))
            .collect();
        let times: Vec<usize> = reply
            .claimed
            .iter()
            // XAUTOCLAIM counted this delivery; the earlier ones were attempts.
            .map(|entry| deliveries.get(entry.id.as_str()).copied().unwrap_or(2))
            .collect();
        let claimed: Vec<Delivery> = {
            let working = self.working.lock();
            reply
                .claimed
                .into_iter()
                .zip(times)
                .filter(|(entry, _)| !working.contains(&entry.id))
                .map(|(entry, times)| self.delivery(entry, times.max(1) as u32))
                .collect()
        };
        metrics::counter!("stream_consumer_reclaimed_total", "stream" => self.stream.clone(), "group" => self.group.clone()).increment(claimed.len() as u64);
        tracing::info!(stream = %self.stream, group = %self.group, entries = claimed.len(), "reclaimed pending entries of a dead consumer");
        Ok(claimed)
    }

    fn delivery(&self, entry: StreamId, attempt: u32) -> Delivery {
        let fields = entry
            .map
            .into_iter()
            .map(|(name, value)| (name, text(value)))
            .collect();
        Delivery {
            id: entry.id,
            fields,
            attempt,
            max_attempts: self.settings.max_deliveries,
        }
    }

    /// Runs one delivery to its end: acknowledged, dead-lettered, or (at shutdown) left
    /// pending for a later delivery.
    async fn process(
        &self,
        mut delivery: Delivery,
        permit: OwnedSemaphorePermit,
        token: CancellationToken,
    ) {
        let _permit = permit;
        self.in_flight.increment(1.0);
        let id = delivery.id.clone();
        let _in_flight = scopeguard::guard((), |()| {
            self.in_flight.decrement(1.0);
            self.working.lock().remove(&id);
        });
        let started = Instant::now();
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let span = shop_telemetry::outbox::process_span(
                &self.stream,
                &self.group,
                &delivery.id,
                delivery.attempt,
                |name| delivery.field(name),
            );
            let attempt = self.handler.handle(&delivery).instrument(span.clone());
            let result = tokio::select! {
                result = attempt => result,
                _ = async { token.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                    tracing::info!(parent: &span, "shutdown: entry left pending, delivered again later");
                    return;
                }
            };
            let settled = match result {
                Ok(outcome) => {
                    span.record("otel.status_code", "OK");
                    self.count("stream_consumer_processed_total", "outcome", outcome);
                    self.ack(&delivery.id).await
                }
                Err(Failure::Poison(reason)) => {
                    span.record("otel.status_code", "ERROR");
                    tracing::warn!(parent: &span, %reason, "poison entry: dead-lettered");
                    self.dead_letter(&delivery, "poison", &reason, &token).await
                }
                Err(Failure::Retry(error)) if delivery.is_last_attempt() => {
                    span.record("otel.status_code", "ERROR");
                    let reason = format!("failed {} deliveries, last: {error:#}", delivery.attempt);
                    tracing::warn!(parent: &span, %reason, "entry dead-lettered");
                    self.dead_letter(&delivery, "max_deliveries", &reason, &token)
                        .await
                }
                Err(Failure::Retry(error)) => {
                    span.record("otel.status_code", "ERROR");
                    self.count("stream_consumer_retries_total", "kind", "retry");
                    let delay = backoff.next_delay();
                    tracing::warn!(parent: &span, error = format!("{error:#}"), attempt = delivery.attempt, retry_in = ?delay, "entry failed, retrying");
                    delivery.attempt += 1;
                    if !sleep_or_stop(delay, &token).await {
                        return;
                    }
                    continue;
                }
                Err(Failure::Unavailable(error)) => {
                    span.record("otel.status_code", "ERROR");
                    self.count("stream_consumer_retries_total", "kind", "unavailable");
                    let delay = backoff.next_delay();
                    tracing::warn!(parent: &span, error = format!("{error:#}"), retry_in = ?delay, "dependency unavailable, retrying");
                    if !sleep_or_stop(delay, &token).await {
                        return;
                    }
                    continue;
                }
            };
            if settled {
                metrics::histogram!("stream_consumer_processing_seconds", "stream" => self.stream.clone(), "group" => self.group.clone())
                    .record(started.elapsed().as_secs_f64());
            }
            return;
        }
    }

    /// `XACK`; a failure only means the entry is delivered again (handlers are idempotent).
    async fn ack(&self, id: &str) -> bool {
        let acked: anyhow::Result<()> = async {
            let mut conn = self.pool.get().await?;
            tokio::time::timeout(
                self.redis_timeout,
                redis::cmd("XACK")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(id)
                    .query_async::<()>(&mut conn),
            )
            .await??;
            Ok(())
        }
        .await;
        if let Err(error) = &acked {
            tracing::warn!(stream = %self.stream, id, %error, "XACK failed: the entry will be delivered again");
        }
        acked.is_ok()
    }

    /// Appends the entry to `<stream>:dead` with the reason and acknowledges it, in one
    /// MULTI/EXEC; retried with backoff until it succeeds or shutdown (the entry stays
    /// pending meanwhile, so nothing is lost either way).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        kind: &'static str,
        reason: &str,
        token: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let written: anyhow::Result<()> = async {
                let mut conn = self.pool.get().await?;
                let mut pipe = redis::pipe();
                pipe.atomic();
                let cmd = pipe.cmd("XADD").arg(&self.dead_stream).arg("*");
                let mut names: Vec<&String> = delivery.fields.keys().collect();
                names.sort();
                for name in names {
                    cmd.arg(name).arg(&delivery.fields[name]);
                }
                cmd.arg("dead_reason")
                    .arg(reason)
                    .arg("dead_source_id")
                    .arg(&delivery.id)
                    .arg("dead_group")
                    .arg(&self.group)
                    .arg("dead_deliveries")
                    .arg(delivery.attempt)
                    .ignore();
                pipe.cmd("XACK")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&delivery.id)
                    .ignore();
                tokio::time::timeout(self.redis_timeout, pipe.query_async::<()>(&mut conn))
                    .await??;
                Ok(())
            }
            .await;
            match written {
                Ok(()) => {
                    self.count("stream_consumer_dead_lettered_total", "reason", kind);
                    self.count(
                        "stream_consumer_processed_total",
                        "outcome",
                        "dead_lettered",
                    );
                    return true;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(stream = %self.stream, id = %delivery.id, %error, retry_in = ?delay, "dead letter failed, retrying");
                    if !sleep_or_stop(delay, token).await {
                        return false;
                    }
                }
            }
        }
    }

    fn count(&self, name: &'static str, label: &'static str, value: &'static str) {
        metrics::counter!(name, "stream" => self.stream.clone(), "group" => self.group.clone(), label => value).increment(1);
    }

    /// The group's lag and pending entries, how long ago its oldest pending entry was
    /// delivered (a stuck entry: its consumer died and nobody reclaims it), and the
    /// length of the dead-letter stream.
    async fn record_metrics(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await?;
        let (groups, oldest, dead): (Vec<HashMap<String, Value>>, StreamPendingCountReply, usize) =
            tokio::time::timeout(
                self.redis_timeout.max(Duration::from_secs(1)),
                redis::pipe()
                    .cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&self.stream)
                    .cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .cmd("XLEN")
                    .arg(&self.dead_stream)
                    .query_async(&mut conn),
            )
            .await??;
        let labels = [
            ("stream", self.stream.clone()),
            ("group", self.group.clone()),
        ];
        let group = groups.iter().find(|g| {
            g.get("name").map(|v| text(v.clone())).as_deref() == Some(self.group.as_str())
        });
        if let Some(group) = group {
            let number = |key: &str| {
                group
                    .get(key)
                    .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
            };
            if let Some(lag) = number("lag") {
                metrics::gauge!("stream_consumer_lag", &labels).set(lag as f64);
            }
            if let Some(pending) = number("pending") {
                metrics::gauge!("stream_consumer_pending", &labels).set(pending as f64);
            }
        }
        let idle = oldest.ids.first().map_or(0, |p| p.last_delivered_ms);
        metrics::gauge!("stream_consumer_oldest_pending_age_seconds", &labels)
            .set(idle as f64 / 1000.0);
        metrics::gauge!("stream_dead_letter_entries", "stream" => self.stream.clone())
            .set(dead as f64);
        Ok(())
    }
}

/// Sleeps `delay`; `false` if the token was cancelled first.
async fn sleep_or_stop(delay: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// A field value as text (stream values are bulk strings; anything else is shown).
fn text(value: Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::SimpleString(s) => s,
        Value::Int(i) => i.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

/// `<hostname>-<pid>`: unique among the processes of one host, and stable across the
/// restarts of a container (its pid is always the same), so a restarted replica picks
/// its own pending entries up at once.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "consumer".to_owned());
    format!("{host}-{}", std::process::id())
}
