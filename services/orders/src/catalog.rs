//! The product catalog: reads from Postgres.
//!
//! Order placement never reads products from here: it locks and checks stock in its
//! own transaction (see `orders.rs`).

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
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
        .await
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
        .await
    }
}
