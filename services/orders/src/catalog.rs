//! The product catalog: reads from Postgres (single products are read through
//! [`ProductCache`](crate::cache::ProductCache), which calls [`ProductRepository::get`] on a miss).
//!
//! Order placement never reads products from here: it locks and checks stock in its
//! own transaction (see `orders.rs`).

use serde::{Deserialize, Serialize};
use shop_telemetry::db::pg_span;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

/// A product as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i32,
}

/// Catalog queries.
#[derive(Clone, Debug)]
pub struct ProductRepository {
    db: PgPool,
}

impl ProductRepository {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// One product, or `None` when it does not exist.
    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
        sqlx::query_as::<_, Product>(
            "select id, sku, name, description, price_cents, currency, stock from products where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db)
        .instrument(pg_span("SELECT", "SELECT products by id"))
        .await
    }

    /// Sets the price of `id`; `false` when it does not exist. Callers that hold a
    /// [`ProductCache`](crate::cache::ProductCache) use its `update_price`, which also
    /// invalidates the cached copies.
    pub async fn update_price(&self, id: Uuid, price_cents: i64) -> Result<bool, sqlx::Error> {
        let result =
            sqlx::query("update products set price_cents = $2, updated_at = now() where id = $1")
                .bind(id)
                .bind(price_cents)
                .execute(&self.db)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Up to `limit` products with an id greater than `after`, by id (keyset pagination).
    pub async fn list(&self, limit: i64, after: Option<Uuid>) -> Result<Vec<Product>, sqlx::Error> {
        sqlx::query_as::<_, Product>(
            "select id, sku, name, description, price_cents, currency, stock from products \
             where ($1::uuid is null or id > $1) order by id limit $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .instrument(pg_span("SELECT", "SELECT products page"))
        .await
    }
}
