//! Settling orders from the payments service's events: orders consumes
//! `shop:events:payments` in the consumer group `orders` with the kit's consumer
//! (`shop_service::streams::consumer`: acknowledged after the commit, retries, dead
//! letters, reclaiming), and moves each order to `paid` or `cancelled`
//! ([`OrderRepository::settle`]).

use serde::Deserialize;
use shop_service::streams::{Delivery, Failure, Handler};
use uuid::Uuid;

use crate::{
    cache::ProductCache,
    orders::{OrderRepository, PaymentOutcome, Settlement},
};

/// orders' consumer group on the payment events stream.
pub const GROUP: &str = "orders";

/// The fields of `PaymentSucceeded` / `PaymentFailed` that settlement needs.
#[derive(Debug, Deserialize)]
struct PaymentEvent {
    order_id: Uuid,
    #[serde(default)]
    reason: Option<String>,
}

/// The handler: one payment event, one settlement.
#[derive(Clone, Debug)]
pub struct Settler {
    pub orders: OrderRepository,
    pub cache: ProductCache,
}

impl Handler for Settler {
    async fn handle(&self, delivery: &Delivery) -> Result<&'static str, Failure> {
        let succeeded = match delivery.event_type() {
            Some("PaymentSucceeded") => true,
            Some("PaymentFailed") => false,
            Some(_) => return Ok("ignored"),
            None => return Err(Failure::Poison("the entry has no type field".into())),
        };
        let event: PaymentEvent = delivery.payload()?;
        let outcome = if succeeded {
            PaymentOutcome::Succeeded
        } else {
            PaymentOutcome::Failed {
                reason: event.reason.unwrap_or_else(|| "payment_failed".into()),
            }
        };
        let order_id = event.order_id;
        match self.orders.settle(order_id, &outcome).await? {
            Settlement::Paid { user_id, placed_at } => {
                record_settlement("paid", placed_at);
                tracing::info!(%order_id, %user_id, status = "paid", "order paid");
                Ok("paid")
            }
            Settlement::Cancelled {
                user_id,
                placed_at,
                released,
            } => {
                record_settlement("cancelled", placed_at);
                // After the commit, never before. Unlike a sale, a release always
                // invalidates: a product shown sold out must come back (docs/cache.md).
                for (product, _stock) in &released {
                    self.cache.invalidate(*product).await;
                }
                let reason = match &outcome {
                    PaymentOutcome::Failed { reason } => reason.as_str(),
                    PaymentOutcome::Succeeded => "",
                };
                tracing::info!(%order_id, %user_id, status = "cancelled", reason, "order cancelled");
                Ok("cancelled")
            }
            Settlement::AlreadySettled { status } => {
                tracing::debug!(%order_id, %status, "order already settled: event ignored");
                Ok("duplicate")
            }
            Settlement::Unknown => Err(Failure::Poison(format!("unknown order {order_id}"))),
        }
    }
}

/// `order_settlement_seconds{status}`: from placement to settlement.
fn record_settlement(status: &'static str, placed_at: chrono::DateTime<chrono::Utc>) {
    let seconds = (chrono::Utc::now() - placed_at)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    metrics::histogram!("order_settlement_seconds", "status" => status).record(seconds.max(0.0));
    metrics::counter!("orders_settled_total", "status" => status).increment(1);
}
