//! The gateway's Postgres pool: it reads `users` for logins, nothing else.
//!
//! Bounded and lazy: at most `DATABASE_MAX_CONNECTIONS`, none opened before the first
//! login (so the gateway starts while Postgres is down), and every acquire gives up after
//! `DATABASE_ACQUIRE_TIMEOUT` instead of queueing forever (pitfall 5).

use anyhow::Context as _;
use sqlx::PgPool;

use crate::config::Config;

/// The pool described by `config` (the kit's [`shop_service::pools::pg_pool`]); connects
/// lazily.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    let options = config.database.url.parse().context("DATABASE_URL")?;
    Ok(shop_service::pools::pg_pool(
        "gateway",
        &config.database,
        options,
    ))
}
