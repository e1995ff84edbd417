//! The `payments` table: one row per order, keyed by the order id, and the event that
//! announces it, written in the same transaction to `payments_outbox` (relayed to
//! `shop:events:payments` by the kit's relay).
//!
//! Exactly once in effect: the row is inserted `on conflict (order_id) do nothing`, and
//! the event is written only if this transaction inserted the row. A second delivery of
//! the same `order.placed` (a crash before the ack, a reclaim, two replicas racing)
//! inserts nothing and publishes nothing.

use std::sync::LazyLock;

use serde_json::json;
use shop_service::streams::{Table, outbox};
use shop_telemetry::db::pg_span;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

/// payments' outbox table.
pub static OUTBOX: LazyLock<Table> = LazyLock::new(|| Table::new("payments_outbox"));

/// The outbox topic of payment events.
pub const PAYMENT_TOPIC: &str = "payments";

/// How a payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Charged; the provider's charge id.
    Succeeded { charge_id: String },
    /// `declined` (the provider's final answer) or `payment_failed` (the provider kept
    /// failing for every delivery the consumer allows).
    Failed { reason: &'static str },
}

impl PaymentOutcome {
    /// The event type announcing it.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "PaymentSucceeded",
            Self::Failed { .. } => "PaymentFailed",
        }
    }
}

/// One payment to record.
#[derive(Clone, Debug)]
pub struct NewPayment {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount_cents: i64,
    pub currency: String,
    pub outcome: PaymentOutcome,
    /// Provider calls made for it (the delivery's attempt).
    pub attempts: i32,
}

/// The payments table.
#[derive(Clone, Debug)]
pub struct PaymentRepository {
    db: PgPool,
}

impl PaymentRepository {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Whether order `order_id` has a payment already (then nothing is charged again).
    pub async fn exists(&self, order_id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("select exists (select 1 from payments where order_id = $1)")
            .bind(order_id)
            .fetch_one(&self.db)
            .instrument(pg_span("SELECT", "SELECT payments"))
            .await
    }

    /// Records `payment` and its event in one transaction; `false` if the order had a
    /// payment already (nothing written).
    pub async fn record(&self, payment: &NewPayment) -> Result<bool, sqlx::Error> {
        let (status, charge_id, reason) = match &payment.outcome {
            PaymentOutcome::Succeeded { charge_id } => {
                ("succeeded", Some(charge_id.as_str()), None)
            }
            PaymentOutcome::Failed { reason } => ("failed", None, Some(*reason)),
        };
        let mut tx = shop_service::pools::begin("payments", &self.db).await?;
        let inserted = sqlx::query(
            "insert into payments \
             (order_id, user_id, status, amount_cents, currency, charge_id, failure_reason, attempts) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (order_id) do nothing",
        )
        .bind(payment.order_id)
        .bind(payment.user_id)
        .bind(status)
        .bind(payment.amount_cents)
        .bind(&payment.currency)
        .bind(charge_id)
        .bind(reason)
        .bind(payment.attempts)
        .execute(&mut *tx)
        .instrument(pg_span("INSERT", "INSERT payments"))
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            tx.rollback().await?;
            return Ok(false);
        }
        let payload = json!({
            "order_id": payment.order_id,
            "user_id": payment.user_id,
            "amount_cents": payment.amount_cents,
            "currency": payment.currency,
            "charge_id": charge_id,
            "reason": reason,
        });
        outbox::insert(
            &mut tx,
            &OUTBOX,
            PAYMENT_TOPIC,
            payment.order_id,
            payment.outcome.event_type(),
            &payload,
        )
        .instrument(pg_span("INSERT", "INSERT payments_outbox"))
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
