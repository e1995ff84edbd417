//! The scratch database of the lab: created and migrated with the orders schema if
//! missing, and pools built with `shop-orders`' own [`pool_with`](shop_orders::db::pool_with).
//!
//! The lab only ever touches its own database (`leaklab` by default) and, in it, only
//! rows it created (a product and orders under a per-run user id, deleted at the end).

use std::time::Duration;

use anyhow::Context as _;
use shop_orders::Config;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, migrate::MigrateDatabase};

/// The lab's own database on the developer machine's Postgres.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/leaklab";

/// Creates the database if it is missing and applies the orders migrations.
pub async fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(database_url)
        .await
        .context("cannot reach Postgres")?
        && let Err(error) = Postgres::create_database(database_url).await
    {
        // Two test processes may race to create it: "already exists" is success.
        let code = error
            .as_database_error()
            .and_then(|db| db.code())
            .map(|code| code.into_owned());
        if !matches!(code.as_deref(), Some("42P04" | "23505")) {
            return Err(error).context("cannot create the leak lab database");
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    // sqlx takes an advisory lock while migrating, so concurrent runs are safe.
    shop_orders::db::MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// The pool limits a scenario cares about; everything else is `Config::defaults()`.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    pub max_connections: u32,
    /// `None` is the bug of pitfall 5: a wait for a connection with no end (an hour).
    pub acquire_timeout: Option<Duration>,
    /// `None` is the bug of pitfall 3: no server-side backstop (`statement_timeout` 0).
    pub statement_timeout: Option<Duration>,
}

/// A pool built exactly as the orders service builds its own, with `limits` applied.
pub fn pool(database_url: &str, limits: PoolLimits) -> anyhow::Result<PgPool> {
    let mut config = Config::defaults();
    config.database.max_connections = limits.max_connections;
    config.database.min_connections = 0;
    config.database.acquire_timeout = limits.acquire_timeout.unwrap_or(Duration::from_secs(3600));
    config.database.statement_timeout = limits.statement_timeout.unwrap_or(Duration::ZERO);
    let options: PgConnectOptions = database_url.parse()?;
    Ok(shop_orders::db::pool_with(&config, options))
}

/// Acquires a connection for the lab's own setup, retrying a few times: on a loaded
/// machine opening a connection can take longer than a short acquire timeout, and the
/// setup is not what is being measured.
pub async fn acquire_for_setup(
    pool: &PgPool,
) -> Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
    let mut attempt = 1;
    loop {
        match pool.acquire().await {
            Err(sqlx::Error::PoolTimedOut) if attempt < 20 => attempt += 1,
            other => return other,
        }
    }
}
