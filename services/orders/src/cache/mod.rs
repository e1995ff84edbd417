//! The product cache: moka (L1, per process) over Redis (L2, shared) over Postgres.
//!
//! [`ProductCache::get`] is the one entry point for product reads; handlers know
//! nothing of the layers. It is safe in the ways caches fail (docs/cache.md):
//!
//! * **breakdown**: concurrent L1 misses for one id coalesce into one load
//!   (moka's `or_try_insert_with`), so a hot key expiring costs one Postgres query;
//! * **penetration**: an id that does not exist is cached as absent, in both layers,
//!   for `CACHE_NEGATIVE_TTL`;
//! * **avalanche**: every TTL is jittered (±`CACHE_TTL_JITTER`);
//! * **staleness across replicas**: writes go through [`ProductCache::invalidate`],
//!   which deletes the L2 key and publishes the id; every replica's
//!   `cache_invalidation` job evicts it from its L1 (and clears L1 after a reconnect);
//! * **Redis outages**: every Redis call has a short timeout and sits behind a
//!   [`breaker`]; a read never fails because of Redis, it falls through to Postgres.
//!
//! Order placement never reads from here: it checks stock in its own transaction.

mod breaker;
mod l1;
mod l2;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::future::Cache;
use uuid::Uuid;

pub(crate) use self::l2::RedisLayer;
use shop_service::resilience::CircuitBreaker;

use self::{l1::Entry, l2::Stored};
use crate::{
    catalog::{Product, ProductRepository},
    config::Config,
    error::ApiError,
};

pub use self::l1::jittered;

/// The cache's settings, taken from [`Config`] (`CACHE_*`).
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// `false`: every read goes to Postgres (benchmarks, debugging).
    pub enabled: bool,
    /// L1 entries at most; 0 turns L1 off (reads start at Redis).
    pub l1_capacity: u64,
    pub l1_ttl: Duration,
    pub l2_ttl: Duration,
    /// TTL of "this id does not exist", in both layers.
    pub negative_ttl: Duration,
    /// Every TTL is moved at random by up to ± this fraction.
    pub ttl_jitter: f64,
    /// An order that leaves a product's stock below this invalidates it.
    pub stock_invalidate_below: i32,
}

impl CacheSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            enabled: config.cache_enabled,
            l1_capacity: config.cache_l1_capacity,
            l1_ttl: config.cache_l1_ttl,
            l2_ttl: config.cache_l2_ttl,
            negative_ttl: config.cache_negative_ttl,
            ttl_jitter: config.cache_ttl_jitter,
            stock_invalidate_below: config.cache_stock_invalidate_below,
        }
    }
}

/// The product cache. Cheap to clone (one `Arc`); every clone shares the same layers.
#[derive(Clone, Debug)]
pub struct ProductCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: CacheSettings,
    /// `None` when `CACHE_L1_CAPACITY=0`.
    l1: Option<Cache<Uuid, Entry>>,
    /// Redis (always present today; an `Option` so a Redis-less cache is one line away).
    l2: Option<RedisLayer>,
    breaker: CircuitBreaker,
    repository: ProductRepository,
    /// Bumped by every invalidation and L1 clear. A load that saw it change while it
    /// ran may have read a value older than the invalidation: its answer is returned
    /// to its callers but kept in neither layer.
    epoch: AtomicU64,
    /// Postgres loads so far (the tests' query counter; also `cache_loads_total`).
    db_loads: AtomicU64,
}

impl ProductCache {
    /// Builds the cache from the service's config (its own bounded Redis pool at
    /// `CACHE_REDIS_URL`, default `REDIS_URL`). Opens no connection yet.
    pub fn new(config: &Config, repository: ProductRepository) -> anyhow::Result<Self> {
        let l2 = RedisLayer::new(
            config.cache_redis_url(),
            config.cache_redis_pool_size,
            config.cache_redis_timeout,
            config.cache_redis_prefix.clone(),
            config.cache_invalidation_channel.clone(),
        )?;
        Ok(Self::with_layers(
            CacheSettings::from_config(config),
            Some(l2),
            breaker::new(config.cache_breaker_failures, config.cache_breaker_cooldown),
            repository,
        ))
    }

    fn with_layers(
        settings: CacheSettings,
        l2: Option<RedisLayer>,
        breaker: CircuitBreaker,
        repository: ProductRepository,
    ) -> Self {
        let l1 =
            (settings.enabled && settings.l1_capacity > 0).then(|| l1::build(settings.l1_capacity));
        Self {
            inner: Arc::new(Inner {
                settings,
                l1,
                l2,
                breaker,
                repository,
                epoch: AtomicU64::new(0),
                db_loads: AtomicU64::new(0),
            }),
        }
    }

    /// The product `id`, or `None` when it does not exist: from L1, else Redis, else
    /// Postgres (filling both). Redis trouble never fails a read; a Postgres error does.
    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, ApiError> {
        let inner = &self.inner;
        if !inner.settings.enabled {
            return Ok(inner
                .load_from_db(id)
                .await?
                .product
                .map(Arc::unwrap_or_clone));
        }
        let entry = match &inner.l1 {
            Some(l1) => {
                // Concurrent misses for `id` wait for the one load that runs; an error
                // is not cached and reaches every waiter.
                let entry = l1
                    .entry(id)
                    .or_try_insert_with(inner.load(id))
                    .await
                    .map_err(unshare)?;
                let result = if entry.is_fresh() { "miss" } else { "hit" };
                metrics::counter!("cache_requests_total", "layer" => "l1", "result" => result)
                    .increment(1);
                if entry.is_fresh() {
                    metrics::gauge!("cache_entries").set(l1.entry_count() as f64);
                }
                entry.into_value()
            }
            None => inner.load(id).await?,
        };
        Ok(entry.product.map(Arc::unwrap_or_clone))
    }

    /// Forgets `id` everywhere: this replica's L1, Redis, and (through the
    /// invalidation channel) every other replica's L1. Call it after a change commits.
    ///
    /// While Redis is degraded only the local L1 is cleared; other replicas converge
    /// when their listener reconnects (it clears their L1) or at the latest within the
    /// TTL bound in docs/cache.md.
    pub async fn invalidate(&self, id: Uuid) {
        let inner = &self.inner;
        inner.evict_local(id).await;
        let Some(l2) = &inner.l2 else { return };
        if !inner.settings.enabled {
            return;
        }
        let Ok(permit) = inner.breaker.acquire() else {
            tracing::warn!(%id, "cache degraded: invalidation not published");
            return;
        };
        match l2.invalidate(id).await {
            Ok(()) => permit.record(true),
            Err(error) => {
                let error = format!("{error:#}");
                tracing::warn!(%id, %error, "cache invalidation not published");
                permit.record_failure(&error);
            }
        }
    }

    /// The invalidation hook of order placement: `changes` are `(product, stock after
    /// the order)`; products whose stock fell below `CACHE_STOCK_INVALIDATE_BELOW`
    /// (so in particular those sold out) are invalidated. Others may show a stock that
    /// is stale within the TTL bound.
    pub async fn stock_changed(&self, changes: &[(Uuid, i32)]) {
        for &(id, stock) in changes {
            if stock < self.inner.settings.stock_invalidate_below {
                self.invalidate(id).await;
            }
        }
    }

    /// Sets a product's price and invalidates it (the catalog's write path; there is
    /// no admin route yet). `false` when the product does not exist.
    pub async fn update_price(&self, id: Uuid, price_cents: i64) -> Result<bool, ApiError> {
        let updated = self.inner.repository.update_price(id, price_cents).await?;
        if updated {
            self.invalidate(id).await;
        }
        Ok(updated)
    }

    /// Evicts `id` from this replica's L1 only (the listener's action on a message).
    pub async fn evict_local(&self, id: Uuid) {
        self.inner.evict_local(id).await;
    }

    /// Empties this replica's L1 (after the listener reconnects: it may have missed
    /// invalidations while it was away).
    pub fn clear_local(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(l1) = &self.inner.l1 {
            l1.invalidate_all();
        }
    }

    /// Postgres loads made so far by this cache (each is one query).
    pub fn db_loads(&self) -> u64 {
        self.inner.db_loads.load(Ordering::Relaxed)
    }

    /// Whether Redis is being bypassed right now (`cache_degraded`).
    pub fn is_degraded(&self) -> bool {
        !self.inner.breaker.is_closed()
    }

    /// Whether the cache is on (`CACHE_ENABLED`).
    pub fn is_enabled(&self) -> bool {
        self.inner.settings.enabled
    }

    /// The TTL chosen for `id`'s L1 entry, if it has one (for tests and debugging).
    pub async fn l1_ttl(&self, id: Uuid) -> Option<Duration> {
        let l1 = self.inner.l1.as_ref()?;
        l1.get(&id).await.map(|entry| entry.ttl)
    }

    /// The listener's report on Redis: a failure to connect counts against the
    /// breaker, a successful subscription closes it.
    pub(crate) fn redis_reachable(&self, reachable: bool, error: &dyn std::fmt::Display) {
        self.inner.breaker.observe(reachable, &error.to_string());
    }

    /// The cache's own Redis pool, if it has one (its gauges: `redis_pool_*{pool="cache"}`).
    pub fn redis_pool(&self) -> Option<&deadpool_redis::Pool> {
        self.inner.l2.as_ref().map(|l2| l2.pool())
    }

    /// Refreshes the `cache_entries` gauge.
    pub(crate) fn record_entries(&self) {
        if let Some(l1) = &self.inner.l1 {
            metrics::gauge!("cache_entries").set(l1.entry_count() as f64);
        }
    }

    /// The invalidation channel.
    pub fn channel(&self) -> Option<&str> {
        self.inner.l2.as_ref().map(RedisLayer::channel)
    }

    /// Closes the cache's Redis pool (at shutdown, after the jobs stopped).
    pub fn close(&self) {
        if let Some(l2) = &self.inner.l2 {
            l2.close();
        }
    }
}

impl Inner {
    async fn evict_local(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(l1) = &self.l1 {
            l1.invalidate(&id).await;
        }
    }

    /// An L1 miss: Redis, then Postgres (filling Redis).
    async fn load(&self, id: Uuid) -> Result<Entry, ApiError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(stored) = self.l2_get(id).await {
            let ttl = if stored.product.is_some() {
                self.settings.l1_ttl
            } else {
                self.settings.negative_ttl
            };
            // Never keep a copy longer than the L2 value it came from: the staleness
            // bound is then the L2 TTL, not the sum of both.
            let ttl = jittered(ttl, self.settings.ttl_jitter).min(stored.remaining());
            return Ok(Entry {
                product: stored.product.map(Arc::new),
                ttl: self.keep_for(epoch, ttl),
            });
        }

        let loaded = self.load_from_db(id).await?;
        let (l1_ttl, l2_ttl) = if loaded.product.is_some() {
            (self.settings.l1_ttl, self.settings.l2_ttl)
        } else {
            (self.settings.negative_ttl, self.settings.negative_ttl)
        };
        let jitter = self.settings.ttl_jitter;
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.l2_set(id, loaded.product.as_deref(), jittered(l2_ttl, jitter))
                .await;
        }
        Ok(Entry {
            product: loaded.product,
            ttl: self.keep_for(epoch, jittered(l1_ttl, jitter)),
        })
    }

    /// `ttl`, or zero if an invalidation happened since the load began.
    fn keep_for(&self, epoch: u64, ttl: Duration) -> Duration {
        if self.epoch.load(Ordering::Acquire) == epoch {
            ttl
        } else {
            Duration::ZERO
        }
    }

    async fn load_from_db(&self, id: Uuid) -> Result<Entry, ApiError> {
        self.db_loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cache_loads_total").increment(1);
        let started = Instant::now();
        let product = self.repository.get(id).await;
        metrics::histogram!("cache_load_duration_seconds").record(started.elapsed());
        Ok(Entry {
            product: product?.map(Arc::new),
            ttl: Duration::ZERO,
        })
    }

    async fn l2_get(&self, id: Uuid) -> Option<Stored> {
        let l2 = self.l2.as_ref()?;
        let permit = self.breaker.acquire().ok()?;
        match l2.get(id).await {
            Ok(stored) => {
                permit.record(true);
                let result = if stored.is_some() { "hit" } else { "miss" };
                metrics::counter!("cache_requests_total", "layer" => "l2", "result" => result)
                    .increment(1);
                stored
            }
            Err(error) => {
                permit.record_failure(&format!("{error:#}"));
                None
            }
        }
    }

    async fn l2_set(&self, id: Uuid, product: Option<&Product>, ttl: Duration) {
        let Some(l2) = &self.l2 else { return };
        let Ok(permit) = self.breaker.acquire() else {
            return;
        };
        match l2.set(id, product, ttl).await {
            Ok(()) => permit.record(true),
            Err(error) => permit.record_failure(&format!("{error:#}")),
        }
    }
}

/// A load error shared by every coalesced waiter, made owned again for `ApiError`.
fn unshare(error: Arc<ApiError>) -> ApiError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| match &*shared {
        ApiError::Overloaded { retry_after } => ApiError::Overloaded {
            retry_after: *retry_after,
        },
        ApiError::Unavailable(detail) => ApiError::Unavailable(detail.clone()),
        ApiError::DeadlineExceeded => ApiError::DeadlineExceeded,
        other => ApiError::Internal(anyhow::anyhow!("loading a product: {other}")),
    })
}
