//! Background jobs, one file per job. Each is started through the lifecycle supervisor
//! in [`start`] and ends when its token is cancelled.

pub mod cache_invalidation;
pub mod idempotency_cleanup;
pub mod metrics_sampler;
pub mod outbox_relay;
pub mod payment_events;

use shop_lifecycle::PeriodicConfig;
use shop_service::streams::Consumer;

use crate::AppState;

/// Starts every background job of the service.
pub fn start(state: &AppState) {
    if state.cache.is_enabled() {
        let cache = state.cache.clone();
        let config = &state.config;
        let (url, timeout, backoff) = (
            config.cache_redis_url().to_owned(),
            config.redis.timeout,
            config.cache_listener_max_backoff,
        );
        state
            .lifecycle
            .spawn_job("cache_invalidation", move |token| {
                cache_invalidation::run(cache, url, timeout, backoff, token)
            });
    }

    let relay = outbox_relay::relay(state);
    state
        .lifecycle
        .spawn_job("outbox_relay", move |token| relay.run(token));

    Consumer::new(
        state.config.payment_events_stream.clone(),
        payment_events::GROUP,
        (&state.config.consumer).into(),
        &state.config.redis,
        state.redis.clone(),
        payment_events::Settler {
            orders: state.orders.clone(),
            cache: state.cache.clone(),
        },
    )
    .start(
        &state.lifecycle,
        state.config.server.metrics_sample_interval,
    );

    let cleanup_state = state.clone();
    state.lifecycle.spawn_periodic(
        "idempotency_cleanup",
        PeriodicConfig::new(std::time::Duration::from_secs(600))
            .with_timeout(std::time::Duration::from_secs(60)),
        move |_token| idempotency_cleanup::run(cleanup_state.clone()),
    );

    let sampler_state = state.clone();
    state.lifecycle.spawn_periodic(
        "metrics_sampler",
        PeriodicConfig::new(state.config.server.metrics_sample_interval)
            .with_timeout(std::time::Duration::from_secs(2)),
        move |_token| metrics_sampler::run(sampler_state.clone()),
    );
}
