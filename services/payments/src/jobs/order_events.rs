//! Charging placed orders: payments consumes `shop:events:orders` in the consumer group
//! `payments` with the kit's consumer (`shop_service::streams::consumer`: acknowledged
//! after the commit, bounded concurrency, retries, dead letters, reclaiming) and, for
//! each `order.placed`, charges the order once and records the outcome
//! ([`PaymentRepository::record`]).
//!
//! | provider answer | what happens |
//! |---|---|
//! | approved | a `succeeded` payment and `PaymentSucceeded` |
//! | declined | a `failed` payment (`declined`, final) and `PaymentFailed` |
//! | transient error or timeout | retried with backoff ([`Failure::Retry`]); on the last delivery the consumer allows, a `failed` payment (`payment_failed`) and `PaymentFailed`, so that orders cancels the order rather than leaving it `placed` |
//!
//! An order already paid for is not charged again (`duplicate`). Postgres errors sort
//! themselves ([`Failure::from_db`]): an outage is retried without counting.

use serde::Deserialize;
use shop_service::streams::{Delivery, Failure, Handler};
use uuid::Uuid;

use crate::{
    payments::{NewPayment, PaymentOutcome, PaymentRepository},
    provider::{Charge, Provider},
};

/// payments' consumer group on the order events stream.
pub const GROUP: &str = "payments";
/// The event that asks for a payment.
pub const ORDER_PLACED: &str = "order.placed";

/// `order.placed`'s payload: `{"type":"order.placed","order":{...}}`.
#[derive(Debug, Deserialize)]
struct OrderPlaced {
    order: PlacedOrder,
}

/// The fields of the placed order that a payment needs.
#[derive(Debug, Deserialize)]
struct PlacedOrder {
    id: Uuid,
    user_id: Uuid,
    total_cents: i64,
    currency: String,
}

/// The handler: one placed order, one payment.
#[derive(Clone, Debug)]
pub struct Charger {
    pub payments: PaymentRepository,
    pub provider: Provider,
}

impl Handler for Charger {
    async fn handle(&self, delivery: &Delivery) -> Result<&'static str, Failure> {
        match delivery.event_type() {
            Some(ORDER_PLACED) => {}
            Some(_) => return Ok("ignored"),
            None => return Err(Failure::Poison("the entry has no type field".into())),
        }
        let OrderPlaced { order } = delivery.payload()?;
        if order.total_cents < 0 {
            return Err(Failure::Poison(format!(
                "order {} has a negative total",
                order.id
            )));
        }
        if self.payments.exists(order.id).await? {
            tracing::debug!(order_id = %order.id, "order already charged: event ignored");
            return Ok("duplicate");
        }
        let outcome = match self.provider.charge(order.id, order.total_cents).await {
            Ok(Charge::Approved { charge_id }) => PaymentOutcome::Succeeded { charge_id },
            Ok(Charge::Declined) => PaymentOutcome::Failed { reason: "declined" },
            Err(error) if delivery.is_last_attempt() => {
                tracing::warn!(order_id = %order.id, %error, attempt = delivery.attempt, "the provider failed on the last attempt: the payment fails");
                PaymentOutcome::Failed {
                    reason: "payment_failed",
                }
            }
            Err(error) => return Err(Failure::Retry(error.into())),
        };
        let label = match &outcome {
            PaymentOutcome::Succeeded { .. } => "succeeded",
            PaymentOutcome::Failed { reason: "declined" } => "declined",
            PaymentOutcome::Failed { .. } => "failed",
        };
        let payment = NewPayment {
            order_id: order.id,
            user_id: order.user_id,
            amount_cents: order.total_cents,
            currency: order.currency,
            outcome,
            attempts: i32::try_from(delivery.attempt).unwrap_or(i32::MAX),
        };
        if !self.payments.record(&payment).await? {
            // Another delivery of this event got there first (a reclaim, a replica).
            return Ok("duplicate");
        }
        tracing::info!(order_id = %payment.order_id, user_id = %payment.user_id, amount_cents = payment.amount_cents, outcome = label, "payment recorded");
        Ok(label)
    }
}
