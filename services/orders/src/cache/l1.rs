//! L1: the in-process moka cache. Bounded by entry count, each entry with its own
//! (jittered) time to live, used through `entry().or_try_insert_with()` so concurrent
//! misses for one id run a single load (the cure for cache breakdown).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache, notification::RemovalCause};
use uuid::Uuid;

use crate::catalog::Product;

/// What L1 (and the loader) hold for an id: the product, or its known absence
/// (negative caching), and how long this entry may live.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// `None`: the product does not exist (a negative entry).
    pub(crate) product: Option<Arc<Product>>,
    /// Chosen when the entry was made (jittered); zero means "answer, do not keep".
    pub(crate) ttl: Duration,
}

/// Per-entry expiry: each entry lives for the ttl it carries.
struct PerEntryTtl;

impl Expiry<Uuid, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &Uuid, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Uuid,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Builds L1 holding at most `capacity` entries.
pub(crate) fn build(capacity: u64) -> Cache<Uuid, Entry> {
    Cache::builder()
        .name("products")
        .max_capacity(capacity)
        .expire_after(PerEntryTtl)
        .eviction_listener(|_id, _entry, cause| {
            // Runs inside moka's housekeeping: keep it to a counter increment.
            let cause = match cause {
                RemovalCause::Expired => "expired",
                RemovalCause::Size => "size",
                RemovalCause::Explicit => "invalidated",
                RemovalCause::Replaced => return,
            };
            metrics::counter!("cache_evictions_total", "cause" => cause).increment(1);
        })
        .build()
}

/// `ttl` moved at random by up to ±`fraction` of itself (millisecond resolution), so
/// entries written together do not all expire together (the cure for avalanche).
pub fn jittered(ttl: Duration, fraction: f64) -> Duration {
    use rand::Rng as _;
    let ms = ttl.as_millis() as f64;
    let spread = (ms * fraction.clamp(0.0, 1.0)).round();
    if spread < 1.0 {
        return ttl;
    }
    let offset = rand::rng().random_range(-spread..=spread);
    Duration::from_millis((ms + offset).max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_ttls_stay_within_the_fraction_and_differ() {
        let ttl = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(ttl, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "{} distinct values", distinct.len());
    }

    #[test]
    fn no_jitter_keeps_the_ttl() {
        assert_eq!(
            jittered(Duration::from_secs(3), 0.0),
            Duration::from_secs(3)
        );
    }
}
