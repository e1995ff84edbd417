//! Settlement: the end of an order's lifecycle, driven by the payments service's events.
//!
//! `placed` → `paid` when the payment succeeded; `placed` → `cancelled` when it was
//! declined or failed for good, with the order's stock given back **in the same
//! transaction**. No other transition exists: an order already paid or cancelled is
//! left as it is, so a repeated or late event changes nothing (the consumer delivers at
//! least once). Each transition writes its event (`OrderPaid`, `OrderCancelled`) to the
//! outbox in that transaction too.
//!
//! Locking: the order row first (the `update ... where status = 'placed'` that decides
//! the transition), then its products in id order, as placement locks them, so
//! settling and placing orders that share products cannot deadlock.

use chrono::{DateTime, Utc};
use serde_json::json;
use shop_service::streams::outbox;
use shop_telemetry::db::pg_span;
use tracing::Instrument;
use uuid::Uuid;

use super::{ORDER_TOPIC, OrderRepository};

/// What the payment of an order came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    Succeeded,
    /// Declined, or failed for good; `reason` becomes the order's `cancel_reason`.
    Failed {
        reason: String,
    },
}

/// What settling did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// `placed` → `paid`.
    Paid {
        user_id: Uuid,
        placed_at: DateTime<Utc>,
    },
    /// `placed` → `cancelled`; `released` is each product's stock after its units came back.
    Cancelled {
        user_id: Uuid,
        placed_at: DateTime<Utc>,
        released: Vec<(Uuid, i32)>,
    },
    /// The order was settled before (`status`): nothing changed.
    AlreadySettled { status: String },
    /// No such order.
    Unknown,
}

#[derive(sqlx::FromRow)]
struct Moved {
    user_id: Uuid,
    created_at: DateTime<Utc>,
}

impl OrderRepository {
    /// Moves order `id` out of `placed` according to `outcome`, in one transaction
    /// (see the module docs). The caller updates caches after it returns.
    pub async fn settle(
        &self,
        id: Uuid,
        outcome: &PaymentOutcome,
    ) -> Result<Settlement, sqlx::Error> {
        let (status, reason) = match outcome {
            PaymentOutcome::Succeeded => ("paid", None),
            PaymentOutcome::Failed { reason } => ("cancelled", Some(reason.as_str())),
        };
        let mut tx = crate::db::begin(&self.db).await?;
        let moved = sqlx::query_as::<_, Moved>(
            "update orders set status = $2, cancel_reason = $3, updated_at = now() \
             where id = $1 and status = 'placed' returning user_id, created_at",
        )
        .bind(id)
        .bind(status)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .instrument(pg_span("UPDATE", "UPDATE orders"))
        .await?;
        let Some(moved) = moved else {
            let current: Option<String> =
                sqlx::query_scalar("select status from orders where id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .instrument(pg_span("SELECT", "SELECT orders"))
                    .await?;
            tx.rollback().await?;
            return Ok(match current {
                Some(status) => Settlement::AlreadySettled { status },
                None => Settlement::Unknown,
            });
        };
        let released = if reason.is_some() {
            release_stock(&mut tx, id).await?
        } else {
            Vec::new()
        };
        let (event_type, payload) = match reason {
            None => (
                "OrderPaid",
                json!({ "order_id": id, "user_id": moved.user_id, "status": "paid" }),
            ),
            Some(reason) => (
                "OrderCancelled",
                json!({
                    "order_id": id,
                    "user_id": moved.user_id,
                    "status": "cancelled",
                    "reason": reason,
                }),
            ),
        };
        outbox::insert(
            &mut tx,
            &crate::events::OUTBOX,
            ORDER_TOPIC,
            id,
            event_type,
            &payload,
        )
        .instrument(pg_span("INSERT", "INSERT outbox"))
        .await?;
        tx.commit().await?;
        Ok(match reason {
            None => Settlement::Paid {
                user_id: moved.user_id,
                placed_at: moved.created_at,
            },
            Some(_) => Settlement::Cancelled {
                user_id: moved.user_id,
                placed_at: moved.created_at,
                released,
            },
        })
    }
}

/// Gives the units of order `id` back to their products (locked in id order, as
/// placement locks them); returns each product's stock afterwards.
async fn release_stock(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query(
        "select p.id from products p join order_items i on i.product_id = p.id \
         where i.order_id = $1 order by p.id for no key update of p",
    )
    .bind(id)
    .execute(&mut *tx)
    .instrument(pg_span("SELECT", "SELECT products FOR NO KEY UPDATE"))
    .await?;
    sqlx::query_as::<_, (Uuid, i32)>(
        "update products p set stock = p.stock + i.quantity, updated_at = now() \
         from order_items i where i.order_id = $1 and p.id = i.product_id \
         returning p.id, p.stock",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .instrument(pg_span("UPDATE", "UPDATE products"))
    .await
}
