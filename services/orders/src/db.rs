//! The Postgres pool: bounded, with every limit explicit (pitfall 5), and migrations.

use sqlx::{
    PgPool, Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

/// Every migration of the shop database (the root `migrations/` folder), embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Builds the pool for `config.database.url`. Connections are opened lazily;
/// `min_connections` are kept warm by sqlx's own maintenance once the first one exists.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    Ok(pool_with(config, config.database.url.parse()?))
}

/// Builds the pool with the sizes and timeouts of `config` for the database `options`
/// names (the kit's [`shop_service::pools::pg_pool`]).
pub fn pool_with(config: &Config, options: PgConnectOptions) -> PgPool {
    shop_service::pools::pg_pool("orders", &config.database, options)
}

/// Creates the database if it does not exist, then applies pending migrations.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(database_url).await? {
        tracing::info!("creating the database");
        Postgres::create_database(database_url).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Starts a transaction through the kit, which counts the callers waiting for a
/// connection (`db_pool_waiters{pool="orders"}`) and records
/// `db_pool_acquire_duration_seconds` (the wait plus `BEGIN`'s round trip).
pub async fn begin(db: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    shop_service::pools::begin("orders", db).await
}

/// A connection for one statement that is its own transaction (order placement's
/// `place_order`), counted like [`begin`].
pub async fn acquire(
    db: &PgPool,
) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
    shop_service::pools::acquire("orders", db).await
}
