//! Background jobs, one file per job. Each is started through the lifecycle supervisor
//! in [`start`] and ends when its token is cancelled.

pub mod metrics_sampler;
pub mod order_events;

use std::time::Duration;

use shop_lifecycle::PeriodicConfig;
use shop_service::streams::{Consumer, Relay};

use crate::{AppState, payments::OUTBOX};

/// Starts every background job of the service: the outbox relay, the order-events
/// consumer (and its metrics), the metrics sampler.
pub fn start(state: &AppState) {
    let config = &state.config;
    let relay = Relay::new(
        "payments",
        OUTBOX.clone(),
        config.outbox.clone(),
        state.db.clone(),
        state.redis.clone(),
        config.redis.timeout.max(Duration::from_secs(1)),
    );
    state
        .lifecycle
        .spawn_job("outbox_relay", move |token| relay.run(token));

    Consumer::new(
        config.order_events_stream.clone(),
        order_events::GROUP,
        (&config.consumer).into(),
        &config.redis,
        state.redis.clone(),
        order_events::Charger {
            payments: state.payments.clone(),
            provider: state.provider.clone(),
        },
    )
    .start(&state.lifecycle, config.server.metrics_sample_interval);

    let sampler_state = state.clone();
    state.lifecycle.spawn_periodic(
        "metrics_sampler",
        PeriodicConfig::new(config.server.metrics_sample_interval)
            .with_timeout(Duration::from_secs(2)),
        move |_token| metrics_sampler::run(sampler_state.clone()),
    );
}
