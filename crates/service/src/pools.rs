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
//! for a connection (and records how long they waited).

use std::time::{Duration, Instant};

use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use sqlx::{
    ConnectOptions as _, PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{DatabaseConfig, RedisConfig};

/// A Postgres pool and the name its gauges carry.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: PgPool,
    pub name: &'static str,
    max: u32,
}

impl Db {
    /// The pool for `config.url`, connections opened lazily, every limit explicit.
    pub fn connect_lazy(name: &'static str, config: &DatabaseConfig) -> anyhow::Result<Self> {
        let options: PgConnectOptions = config.url.parse()?;
        Ok(Self::with_options(name, config, options))
    }

    /// The pool with `config`'s sizes and timeouts for the database `options` names
    /// (tests pass the per-test database of `#[sqlx::test]`).
    pub fn with_options(name: &'static str, config: &DatabaseConfig, options: PgConnectOptions) -> Self {
        let options = options
            .application_name(&format!("shop-{name}"))
            // The server-side backstop for deadlines: a query nobody waits for any more
            // stops by itself.
            .options([(
                "statement_timeout",
                format!("{}ms", config.statement_timeout.as_millis()),
            )])
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections.min(config.max_connections))
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(Some(config.idle_timeout))
            .max_lifetime(Some(config.max_lifetime))
            .connect_lazy_with(options);
        metrics::gauge!("db_pool_waiters", "pool" => name).set(0.0);
        Self {
            pool,
            name,
            max: config.max_connections,
        }
    }

    /// Starts a transaction, counting this caller in `db_pool_waiters` while it waits and
    /// recording `db_pool_acquire_duration_seconds` (the wait plus `BEGIN`'s round trip,
    /// which sqlx sends on acquiring). A rising tail is the pool saturating before it
    /// times out.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let waiters = metrics::gauge!("db_pool_waiters", "pool" => self.name);
        waiters.increment(1.0);
        // Decremented on every path, including a dropped future (deadline, client gone).
        let _waiting = scopeguard(move || waiters.decrement(1.0));
        let started = Instant::now();
        let tx = self.pool.begin().await;
        metrics::histogram!("db_pool_acquire_duration_seconds", "pool" => self.name)
            .record(started.elapsed().as_secs_f64());
        tx
    }

    /// One sample of the pool's gauges.
    pub fn record_metrics(&self) {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        metrics::gauge!("db_pool_max_connections", "pool" => self.name).set(f64::from(self.max));
        metrics::gauge!("db_pool_connections", "pool" => self.name, "state" => "idle")
            .set(f64::from(idle));
        metrics::gauge!("db_pool_connections", "pool" => self.name, "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A bounded Redis pool (no connection is opened until first use): waits, connects and
/// recycles all bounded by `timeout`.
pub fn redis_pool(url: &str, size: usize, timeout: Duration) -> anyhow::Result<deadpool_redis::Pool> {
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
