//! The Postgres pool: bounded, with every limit explicit (pitfall 5), and migrations.

use sqlx::{
    ConnectOptions, PgPool, Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

/// Every migration of the shop database (the root `migrations/` folder), embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Builds the pool for `config.database_url`. Connections are opened lazily;
/// `min_connections` are kept warm by sqlx's own maintenance once the first one exists.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    Ok(pool_with(config, config.database_url.parse()?))
}

/// Builds the pool with the sizes and timeouts of `config` for the database `options` name.
pub fn pool_with(config: &Config, options: PgConnectOptions) -> PgPool {
    let options = options
        .application_name("shop-orders")
        // The server-side backstop for deadlines: a query nobody waits for any more
        // stops by itself.
        .options([(
            "statement_timeout",
            format!("{}ms", config.db_statement_timeout.as_millis()),
        )])
        .log_slow_statements(
            tracing::log::LevelFilter::Warn,
            std::time::Duration::from_millis(500),
        );
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(config.db_min_connections.min(config.db_max_connections))
        .acquire_timeout(config.db_acquire_timeout)
        .idle_timeout(Some(config.db_idle_timeout))
        .max_lifetime(Some(config.db_max_lifetime))
        .connect_lazy_with(options)
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

/// Starts a transaction, recording how long it waited: `db_pool_acquire_duration_seconds`
/// (the wait for a pooled connection, plus `BEGIN`'s round trip, which sqlx sends on
/// acquiring). A rising tail is the pool saturating before it times out.
pub async fn begin(db: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let started = std::time::Instant::now();
    let tx = db.begin().await;
    metrics::histogram!("db_pool_acquire_duration_seconds").record(started.elapsed().as_secs_f64());
    tx
}
