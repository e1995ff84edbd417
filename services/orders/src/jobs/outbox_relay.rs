//! The outbox relay: order events from the `outbox` table to `shop:events:orders`, by
//! the kit's relay (`shop_service::streams::outbox`: at least once, never lost,
//! replicas share the work, backoff while Redis is down).

use std::time::Duration;

use shop_service::streams::Relay;

use crate::{AppState, events::OUTBOX};

/// The relay of orders' outbox, as the job runs it.
pub fn relay(state: &AppState) -> Relay {
    Relay::new(
        "orders",
        OUTBOX.clone(),
        state.config.outbox.clone(),
        state.db.clone(),
        state.redis.clone(),
        state.config.redis.timeout.max(Duration::from_secs(1)),
    )
}
