//! L2: products in Redis, shared by every orders replica.
//!
//! One key per id (`{prefix}:product:{id}`), a JSON value carrying the product (or
//! `null` for a known-absent id) and the moment the value expires, so an L1 filled from
//! L2 never outlives the L2 value it copied. Every call is bounded by one short timeout
//! (connection and command together); the breaker in `mod.rs` decides whether to call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use deadpool_redis::Pool;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::Product;

/// An L2 value: `{"x": expires_at_unix_ms, "p": Product | null}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// When the value expires (Unix ms); Redis expires the key at the same moment.
    #[serde(rename = "x")]
    pub(crate) expires_at_ms: u64,
    #[serde(rename = "p")]
    pub(crate) product: Option<Product>,
}

impl Stored {
    /// How long the value has left, by this replica's clock.
    pub(crate) fn remaining(&self) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms()))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Redis side of the cache: a bounded pool of its own, the key prefix and the
/// invalidation channel.
#[derive(Clone, Debug)]
pub(crate) struct RedisLayer {
    /// Dedicated to the cache, so that its short timeouts and the outbox relay's
    /// traffic do not interfere; closed by [`RedisLayer::close`] at shutdown.
    pool: Pool,
    prefix: String,
    channel: String,
    timeout: Duration,
}

impl RedisLayer {
    /// Builds the pool (no connection is opened until first use).
    pub(crate) fn new(
        url: &str,
        pool_size: usize,
        timeout: Duration,
        prefix: String,
        channel: String,
    ) -> anyhow::Result<Self> {
        let pool = shop_service::pools::redis_pool(url, pool_size, timeout)
            .context("building the cache's Redis pool")?;
        Ok(Self {
            pool,
            prefix,
            channel,
            timeout,
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn key(&self, id: Uuid) -> String {
        format!("{}:product:{id}", self.prefix)
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// Runs `cmd` on a pooled connection, connection and command together bounded
    /// by the timeout.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        tokio::time::timeout(self.timeout, async {
            let mut conn = self.pool.get().await?;
            anyhow::Ok(cmd.query_async(&mut conn).await?)
        })
        .await
        .context("cache Redis call timed out")?
    }

    /// The stored value for `id`: `Ok(None)` when absent or unreadable.
    pub(crate) async fn get(&self, id: Uuid) -> anyhow::Result<Option<Stored>> {
        let key = self.key(id);
        let raw: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(&key)).await?;
        Ok(raw.and_then(|bytes| match serde_json::from_slice(&bytes) {
            Ok(stored) => Some(stored),
            Err(error) => {
                // A value from another version of the service: treat as a miss.
                tracing::warn!(%error, %key, "unreadable cache value ignored");
                None
            }
        }))
    }

    /// Stores `product` (or its absence) for `ttl`.
    pub(crate) async fn set(
        &self,
        id: Uuid,
        product: Option<&Product>,
        ttl: Duration,
    ) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct StoredRef<'a> {
            x: u64,
            p: Option<&'a Product>,
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let value = serde_json::to_vec(&StoredRef {
            x: now_ms() + ttl_ms,
            p: product,
        })?;
        let key = self.key(id);
        self.query(redis::cmd("SET").arg(&key).arg(value).arg("PX").arg(ttl_ms))
            .await
    }

    /// Deletes `id` from Redis and publishes it on the invalidation channel, in one
    /// round trip, so every replica's listener evicts it from its L1.
    pub(crate) async fn invalidate(&self, id: Uuid) -> anyhow::Result<()> {
        let key = self.key(id);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("PUBLISH")
            .arg(&self.channel)
            .arg(id.to_string())
            .ignore();
        tokio::time::timeout(self.timeout, async {
            let mut conn = self.pool.get().await?;
            anyhow::Ok(pipe.query_async::<()>(&mut conn).await?)
        })
        .await
        .context("cache Redis call timed out")?
    }

    /// Closes the pool (at shutdown).
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}
