//! Bounded Postgres and Redis pools (pitfall 5), and the same gauges for every pool of
//! every service, sampled by each service's `metrics_sampler` job:
//!
//! | gauge | labels |
//! |---|---|
//! | `db_pool_max_connections`, `redis_pool_max_connections` | `pool` |
//! | `db_pool_connections`, `redis_pool_connections` | `pool`, `state` = `idle` / `in_use` |
//! | `db_pool_waiters`, `redis_pool_waiters` | `pool` |
//!
//! Redis waiters come from deadpool's status. sqlx does not count its waiters, so every
//! transaction a service starts goes through [`begin`], which counts the callers waiting
//! for a connection (and records how long they waited), and so does every connection
//! acquired for a statement that is its own transaction ([`acquire`]); plain reads on the pool are not
//! counted there, their waits show in the request latency and end at the acquire timeout.

use std::time::{Duration, Instant};

use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use sqlx::{
    ConnectOptions as _, Connection as _, PgPool, Postgres, Transaction,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{DatabaseConfig, RedisConfig};

/// How long a connection may have been idle and still be handed out without a ping.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The Postgres pool for `options` with `config`'s sizes and timeouts, connections opened
/// lazily; `name` becomes its `application_name` (`shop-<name>`).
pub fn pg_pool(name: &str, config: &DatabaseConfig, options: PgConnectOptions) -> PgPool {
    let options = options
        .application_name(&format!("shop-{name}"))
        // The server-side backstop for deadlines: a query nobody waits for any more
        // stops by itself.
        .options([(
            "statement_timeout",
            format!("{}ms", config.statement_timeout.as_millis()),
        )])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    PgPoolOptions::new()
        // sqlx pings every connection it hands out: one more round trip per transaction
        // (a sixth of order placement's before `place_order`, half of it after). A
        // connection used a moment ago is known to be alive, so only one idle for longer
        // than PING_IDLE_AFTER is pinged (and replaced if the ping fails). One that died
        // within that second fails its statement like any lost connection (503).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .max_connections(config.max_connections)
        .min_connections(config.min_connections.min(config.max_connections))
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(Some(config.idle_timeout))
        .max_lifetime(Some(config.max_lifetime))
        .connect_lazy_with(options)
}

/// Starts a transaction on the pool `name`, counting this caller in
/// `db_pool_waiters{pool}` while it waits and recording
/// `db_pool_acquire_duration_seconds` (the wait plus `BEGIN`'s round trip, which sqlx
/// sends on acquiring). A rising tail is the pool saturating before it times out.
pub async fn begin(
    name: &'static str,
    pool: &PgPool,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    counted(name, pool.begin()).await
}

/// A connection of the pool `name`, for one statement that is its own transaction,
/// counted as [`begin`] counts (the wait plus the pool's liveness ping).
pub async fn acquire(
    name: &'static str,
    pool: &PgPool,
) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    counted(name, pool.acquire()).await
}

/// Waits for `acquiring`, counted in `db_pool_waiters{pool}` and timed.
async fn counted<T>(
    name: &'static str,
    acquiring: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let waiters = metrics::gauge!("db_pool_waiters", "pool" => name);
    waiters.increment(1.0);
    // Decremented on every path, including a dropped future (deadline, client gone).
    let _waiting = scopeguard::guard((), move |()| waiters.decrement(1.0));
    let started = Instant::now();
    let acquired = acquiring.await;
    metrics::histogram!("db_pool_acquire_duration_seconds").record(started.elapsed().as_secs_f64());
    acquired
}

/// One sample of a Postgres pool's gauges (`db_pool_waiters` is kept by [`begin`]).
pub fn record_pg_metrics(name: &'static str, pool: &PgPool, max_connections: u32) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    metrics::gauge!("db_pool_max_connections", "pool" => name).set(f64::from(max_connections));
    metrics::gauge!("db_pool_connections", "pool" => name, "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_connections", "pool" => name, "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    // Registered at 0 so that dashboards see a series before the first wait.
    metrics::gauge!("db_pool_waiters", "pool" => name).increment(0.0);
}

/// A bounded Redis pool (no connection is opened until first use): waits, connects and
/// recycles all bounded by `timeout`.
pub fn redis_pool(
    url: &str,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<deadpool_redis::Pool> {
    let mut cfg = deadpool_redis::Config::from_url(url);
    let mut pool = PoolConfig::new(size);
    pool.timeouts = Timeouts {
        wait: Some(timeout),
        create: Some(timeout),
        recycle: Some(timeout),
    };
    cfg.pool = Some(pool);
    Ok(cfg.create_pool(Some(Runtime::Tokio1))?)
}

/// [`redis_pool`] with the service's [`RedisConfig`].
pub fn redis_pool_from(config: &RedisConfig) -> anyhow::Result<deadpool_redis::Pool> {
    redis_pool(&config.url, config.pool_size, config.timeout)
}

/// One sample of a Redis pool's gauges; returns its waiters (the leak alarm reads them).
pub fn record_redis_metrics(name: &'static str, pool: &deadpool_redis::Pool) -> usize {
    let status = pool.status();
    metrics::gauge!("redis_pool_max_connections", "pool" => name).set(status.max_size as f64);
    metrics::gauge!("redis_pool_connections", "pool" => name, "state" => "idle")
        .set(status.available as f64);
    metrics::gauge!("redis_pool_connections", "pool" => name, "state" => "in_use")
        .set(status.size.saturating_sub(status.available) as f64);
    metrics::gauge!("redis_pool_waiters", "pool" => name).set(status.waiting as f64);
    status.waiting
}

/// Readiness: whether Postgres answers `select 1` on `pool` within `within`.
pub async fn postgres_usable(pool: &PgPool, within: Duration) -> bool {
    tokio::time::timeout(within, sqlx::query("select 1").execute(pool))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Readiness: whether Redis answers `PING` through `pool` within `within` (the wait for
/// a pooled connection included).
pub async fn redis_usable(pool: &deadpool_redis::Pool, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut conn = pool.get().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        anyhow::Ok(())
    })
    .await
    .is_ok_and(|r| r.is_ok())
}
