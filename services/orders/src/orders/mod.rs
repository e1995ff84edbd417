//! Orders: the types the API shows, the reads of a caller's orders, and placement.
//!
//! [`OrderRepository`] holds the pool. Its reads ([`OrderRepository::get`],
//! [`OrderRepository::list`]) are here; placement ([`OrderRepository::place`]), built
//! from small steps and answering with a domain result, is in [`place`], whose module
//! docs explain the transaction step by step. Nothing here knows HTTP: the handlers in
//! `routes/orders.rs` map results and errors to answers.

pub mod place;
pub mod settle;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_telemetry::db::pg_span;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

pub use self::{
    place::{PlaceError, Placement, Refusal, StoredAnswer},
    settle::{PaymentOutcome, Settlement},
};

/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 1000;
/// The outbox topic of order events.
pub const ORDER_TOPIC: &str = "orders";

/// Body of `POST /v1/orders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub items: Vec<OrderLineRequest>,
}

/// One line of [`PlaceOrderRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    pub product_id: Uuid,
    /// Wider than the stored type so that out-of-range values get a clear 422.
    pub quantity: i64,
}

/// An order as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `placed`, then `paid` or `cancelled` ([`settle`]).
    pub status: String,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    /// When the status last changed (placement: `created_at`).
    pub updated_at: DateTime<Utc>,
    /// Why the order was cancelled (`declined`, `payment_failed`); only while cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
}

/// One line of an [`Order`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderItem {
    pub product_id: Uuid,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    cancel_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: Uuid,
    product_id: Uuid,
    quantity: i32,
    unit_price_cents: i64,
}

/// Orders in Postgres: the reads below and placement ([`place`]).
#[derive(Clone, Debug)]
pub struct OrderRepository {
    db: PgPool,
}

/// A position in the caller's order list (newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl OrderCursor {
    /// The opaque text form used in `next_cursor`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    /// Parses [`OrderCursor::encode`]'s output.
    pub fn decode(text: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (micros, id) = raw.split_once(':')?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.parse().ok()?,
        })
    }
}

impl OrderRepository {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// The order `id` if `user` owns it.
    pub async fn get(&self, user: Uuid, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
        let row = sqlx::query_as::<_, OrderRow>(
            "select id, user_id, status, total_cents, currency, created_at, updated_at, \
             cancel_reason from orders where id = $1 and user_id = $2",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(&self.db)
        .instrument(pg_span("SELECT", "SELECT orders"))
        .await?;
        match row {
            Some(row) => Ok(self.with_items(vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    /// Up to `limit` of `user`'s orders after `cursor`, newest first.
    pub async fn list(
        &self,
        user: Uuid,
        limit: i64,
        cursor: Option<OrderCursor>,
    ) -> Result<Vec<Order>, sqlx::Error> {
        let rows = sqlx::query_as::<_, OrderRow>(
            "select id, user_id, status, total_cents, currency, created_at, updated_at, \
             cancel_reason from orders where user_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, $3)) \
             order by created_at desc, id desc limit $4",
        )
        .bind(user)
        .bind(cursor.map(|c| c.created_at))
        .bind(cursor.map(|c| c.id))
        .bind(limit)
        .fetch_all(&self.db)
        .instrument(pg_span("SELECT", "SELECT orders"))
        .await?;
        self.with_items(rows).await
    }

    async fn with_items(&self, rows: Vec<OrderRow>) -> Result<Vec<Order>, sqlx::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let items = sqlx::query_as::<_, ItemRow>(
            "select order_id, product_id, quantity, unit_price_cents from order_items \
             where order_id = any($1) order by order_id, line",
        )
        .bind(&ids)
        .fetch_all(&self.db)
        .instrument(pg_span("SELECT", "SELECT order_items"))
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Order {
                items: items
                    .iter()
                    .filter(|i| i.order_id == row.id)
                    .map(|i| OrderItem {
                        product_id: i.product_id,
                        quantity: i.quantity,
                        unit_price_cents: i.unit_price_cents,
                    })
                    .collect(),
                id: row.id,
                user_id: row.user_id,
                status: row.status,
                total_cents: row.total_cents,
                currency: row.currency,
                created_at: row.created_at,
                updated_at: row.updated_at,
                cancel_reason: row.cancel_reason,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::SubsecRound;

    use super::*;

    #[test]
    fn a_cursor_survives_its_text_form_and_garbage_is_refused() {
        let cursor = OrderCursor {
            created_at: Utc::now().trunc_subsecs(6),
            id: Uuid::now_v7(),
        };
        assert_eq!(OrderCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(OrderCursor::decode("garbage!"), None);
    }
}
