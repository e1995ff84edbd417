//! The gateway's Postgres pool: it reads `users` for logins, nothing else.
//!
//! Bounded and lazy: at most `DATABASE_MAX_CONNECTIONS`, none opened before the first
//! login (so the gateway starts while Postgres is down), and every acquire gives up after
//! `DATABASE_ACQUIRE_TIMEOUT` instead of queueing forever (pitfall 5).

use anyhow::Context as _;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::Config;

/// The pool described by `config`; connects lazily.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(0)
        .acquire_timeout(config.database_acquire_timeout)
        .max_lifetime(config.database_max_lifetime)
        .idle_timeout(config.database_idle_timeout)
        .connect_lazy(&config.database_url)
        .context("DATABASE_URL")
}
