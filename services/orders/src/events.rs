//! Events: the bounded Redis pool of the streams, and orders' outbox table (relayed to
//! `shop:events:orders` by the kit's relay, `shop_service::streams::outbox`).

use std::sync::LazyLock;

use deadpool_redis::Pool;

use shop_service::streams::Table;

use crate::config::Config;

/// orders' outbox table (written by placement and settlement, read by the relay).
pub static OUTBOX: LazyLock<Table> = LazyLock::new(|| Table::new("outbox"));

/// Builds the bounded Redis pool of the events stream (no connection is opened until
/// first use).
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    shop_service::pools::redis_pool_from(&config.redis)
}
