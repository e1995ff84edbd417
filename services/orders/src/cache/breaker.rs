//! The cache's Redis breaker: while Redis is down or slow, a read costs one short
//! timeout per cooldown, not one per request.
//!
//! It is the kit's [`CircuitBreaker`] with the consecutive-failure rule: closed (Redis
//! used) → open after `CACHE_BREAKER_FAILURES` failures in a row (Redis skipped for
//! `CACHE_BREAKER_COOLDOWN`) → half-open (one probe goes to Redis) → closed on its
//! success, open again on its failure. Every state but closed is "degraded": the
//! `cache_degraded` gauge is 1 and a log line marks the transitions both ways.

use std::time::Duration;

use shop_service::resilience::{BreakerConfig, BreakerState, CircuitBreaker, Trip};

/// The breaker in front of the cache's Redis.
pub(crate) fn new(failures_to_open: u32, cooldown: Duration) -> CircuitBreaker {
    CircuitBreaker::new(
        BreakerConfig {
            name: "cache_redis",
            trip: Trip::ConsecutiveFailures(failures_to_open.max(1)),
            open_for: cooldown,
            half_open_probes: 1,
        },
        move |state, reason| match state {
            BreakerState::Closed => {
                metrics::gauge!("cache_degraded").set(0.0);
                if reason != "started" {
                    tracing::info!("cache recovered: Redis answers again, L2 back in use");
                }
            }
            BreakerState::Open => {
                metrics::gauge!("cache_degraded").set(1.0);
                tracing::warn!(
                    error = reason,
                    ?cooldown,
                    "cache degraded: Redis unusable, reads fall through to Postgres"
                );
            }
            BreakerState::HalfOpen => {}
        },
    )
}
