//! Order placement: idempotent, atomic, never oversold.
//!
//! One Postgres transaction does everything, so nothing is ever half-written — not on
//! an error, not when the client goes away, not when the deadline passes (a dropped
//! transaction is rolled back by sqlx before its connection is reused):
//!
//! 1. `pg_try_advisory_xact_lock(hash(user, key))`: a second request with the same
//!    Idempotency-Key while the first is running gets 409 `request-in-progress` at once.
//!    "In progress" is a lock, not a row, so a crash can never leave a key stuck.
//! 2. A stored response for the key is replayed (same body) or, if the body differs,
//!    refused with 422 `idempotency-key-reused`.
//! 3. The products are locked `FOR NO KEY UPDATE` in id order — one global order, so
//!    concurrent multi-line orders cannot deadlock — and checked: unknown ids → 404,
//!    short stock → 409. Those answers are stored for the key too.
//! 4. One statement decrements stock, inserts the order, its lines, the outbox event
//!    and the idempotency record; then COMMIT. `CHECK (stock >= 0)` backs the check.

use std::collections::HashSet;

use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shop_telemetry::db::pg_span;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::{cache::ProductCache, error::ApiError};

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
    pub status: String,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// One line of an [`Order`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderItem {
    pub product_id: Uuid,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// What a placement answered, as stored for its Idempotency-Key.
#[derive(Clone, Debug)]
pub struct PlacementResponse {
    pub status: StatusCode,
    pub body: Value,
    pub order_id: Option<Uuid>,
    /// True when this is the stored answer of an earlier request with the same key.
    pub replayed: bool,
}

/// Validates the request's values (422 for anything out of range).
fn validate(request: &PlaceOrderRequest) -> Result<Vec<(Uuid, i32)>, ApiError> {
    if request.items.is_empty() || request.items.len() > MAX_LINES {
        return Err(ApiError::unprocessable(
            "invalid-order",
            format!(
                "an order has 1 to {MAX_LINES} lines, this one has {}",
                request.items.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(request.items.len());
    let mut lines = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(ApiError::unprocessable(
                "invalid-order",
                format!("items[{i}].quantity must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if !seen.insert(line.product_id) {
            return Err(ApiError::unprocessable(
                "invalid-order",
                format!(
                    "items[{i}] repeats product {}; put each product on one line",
                    line.product_id
                ),
            ));
        }
        let quantity = i32::try_from(line.quantity).expect("checked range");
        lines.push((line.product_id, quantity));
    }
    Ok(lines)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The advisory-lock key of (user, Idempotency-Key).
fn lock_key(user: Uuid, key: &str) -> i64 {
    let digest = sha256(&[b"idempotency", user.as_bytes(), key.as_bytes()]);
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

struct StoredKey {
    request_hash: Vec<u8>,
    response_status: i16,
    response_body: Value,
    order_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct LockAndKey {
    locked: bool,
    request_hash: Option<Vec<u8>>,
    response_status: Option<i16>,
    response_body: Option<Value>,
    order_id: Option<Uuid>,
}

impl LockAndKey {
    fn split(self) -> (bool, Option<StoredKey>) {
        let stored = match (self.request_hash, self.response_status, self.response_body) {
            (Some(request_hash), Some(response_status), Some(response_body)) => Some(StoredKey {
                request_hash,
                response_status,
                response_body,
                order_id: self.order_id,
            }),
            _ => None,
        };
        (self.locked, stored)
    }
}

#[derive(sqlx::FromRow)]
struct LockedProduct {
    id: Uuid,
    price_cents: i64,
    currency: String,
    stock: i32,
}

/// Places an order for `user` under Idempotency-Key `key` (see the module docs).
pub async fn place_order(
    db: &PgPool,
    cache: &ProductCache,
    user: Uuid,
    key: &str,
    request: &PlaceOrderRequest,
) -> Result<PlacementResponse, ApiError> {
    let lines = validate(request)?;
    let canonical = serde_json::to_vec(request).map_err(anyhow::Error::from)?;
    let request_hash = sha256(&[&canonical]);

    // A unique violation on the key means another request with the same key committed
    // between our lock and our insert (possible only in a narrow race): run once more,
    // which replays its answer.
    match try_place(db, cache, user, key, &lines, &request_hash).await {
        Err(ApiError::Internal(e)) if is_key_conflict(&e) => {
            try_place(db, cache, user, key, &lines, &request_hash).await
        }
        other => other,
    }
}

fn is_key_conflict(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.constraint())
        == Some("idempotency_keys_pkey")
}

async fn try_place(
    db: &PgPool,
    cache: &ProductCache,
    user: Uuid,
    key: &str,
    lines: &[(Uuid, i32)],
    request_hash: &[u8; 32],
) -> Result<PlacementResponse, ApiError> {
    let mut tx = crate::db::begin(db)
        .instrument(pg_span("BEGIN", "BEGIN"))
        .await?;

    // One round trip: try the key's lock and read its stored answer. The read's snapshot
    // is taken before the lock is tried, so a request that committed between the two is
    // not seen here; its idempotency_keys row then makes our insert fail, and
    // `place_order` runs once more, which replays that answer.
    let (locked, stored) = sqlx::query_as::<_, LockAndKey>(
        "select pg_try_advisory_xact_lock($1) as locked, \
                k.request_hash, k.response_status, k.response_body, k.order_id \
         from (select 1) as one \
         left join idempotency_keys k on k.user_id = $2 and k.key = $3",
    )
    .bind(lock_key(user, key))
    .bind(user)
    .bind(key)
    .fetch_one(&mut *tx)
    .instrument(pg_span(
        "SELECT",
        "SELECT pg_try_advisory_xact_lock, idempotency_keys",
    ))
    .await?
    .split();
    if !locked {
        return Err(ApiError::RequestInProgress);
    }
    if let Some(stored) = stored {
        tx.rollback().await?;
        if stored.request_hash != request_hash {
            return Err(ApiError::unprocessable(
                "idempotency-key-reused",
                "this Idempotency-Key was used with a different request body",
            ));
        }
        return Ok(PlacementResponse {
            status: StatusCode::from_u16(stored.response_status as u16)
                .map_err(anyhow::Error::from)?,
            body: stored.response_body,
            order_id: stored.order_id,
            replayed: true,
        });
    }

    let ids: Vec<Uuid> = lines.iter().map(|(id, _)| *id).collect();
    let products = sqlx::query_as::<_, LockedProduct>(
        "select id, price_cents, currency, stock from products \
         where id = any($1) order by id for no key update",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .instrument(pg_span("SELECT", "SELECT products FOR NO KEY UPDATE"))
    .await?;

    let find = |id: &Uuid| products.iter().find(|p| p.id == *id);
    let unknown: Vec<Uuid> = ids
        .iter()
        .filter(|id| find(id).is_none())
        .copied()
        .collect();
    if !unknown.is_empty() {
        let error = ApiError::UnknownProduct(unknown);
        return store_refusal(tx, user, key, request_hash, error).await;
    }
    let short: Vec<Uuid> = lines
        .iter()
        .filter(|(id, qty)| find(id).is_some_and(|p| p.stock < *qty))
        .map(|(id, _)| *id)
        .collect();
    if !short.is_empty() {
        let error = ApiError::InsufficientStock(short);
        return store_refusal(tx, user, key, request_hash, error).await;
    }
    let currency = products[0].currency.clone();
    if products.iter().any(|p| p.currency != currency) {
        return Err(ApiError::unprocessable(
            "mixed-currencies",
            "all products of one order must have the same currency",
        ));
    }

    let items: Vec<OrderItem> = lines
        .iter()
        .map(|(id, quantity)| OrderItem {
            product_id: *id,
            quantity: *quantity,
            unit_price_cents: find(id).expect("checked above").price_cents,
        })
        .collect();
    let order = Order {
        id: Uuid::now_v7(),
        user_id: user,
        status: "placed".into(),
        total_cents: items
            .iter()
            .map(|i| i.unit_price_cents * i64::from(i.quantity))
            .sum(),
        currency,
        created_at: Utc::now().trunc_subsecs(6),
        items,
    };
    let body = serde_json::to_value(&order).map_err(anyhow::Error::from)?;
    let event = serde_json::json!({ "type": "order.placed", "order": &body });

    let quantities: Vec<i32> = order.items.iter().map(|i| i.quantity).collect();
    let prices: Vec<i64> = order.items.iter().map(|i| i.unit_price_cents).collect();
    let decremented: i64 = sqlx::query_scalar(
        "with lines as ( \
             select * from unnest($1::uuid[], $2::int4[], $3::int8[]) with ordinality \
                 as l(product_id, quantity, unit_price_cents, line) \
         ), decremented as ( \
             update products p set stock = p.stock - l.quantity, updated_at = now() \
             from lines l where p.id = l.product_id returning p.id \
         ), placed as ( \
             insert into orders (id, user_id, status, total_cents, currency, created_at) \
             values ($4, $5, 'placed', $6, $7, $8) \
         ), lined as ( \
             insert into order_items (order_id, line, product_id, quantity, unit_price_cents) \
             select $4, l.line - 1, l.product_id, l.quantity, l.unit_price_cents from lines l \
         ), evented as ( \
             insert into outbox (topic, aggregate_id, event_type, payload, trace_context) \
             values ($9, $4, 'order.placed', $10, $11) \
         ), keyed as ( \
             insert into idempotency_keys (user_id, key, request_hash, response_status, response_body, order_id) \
             values ($5, $12, $13, 201, $14, $4) \
         ) \
         select count(*) from decremented",
    )
    .bind(&ids)
    .bind(&quantities)
    .bind(&prices)
    .bind(order.id)
    .bind(user)
    .bind(order.total_cents)
    .bind(&order.currency)
    .bind(order.created_at)
    .bind(ORDER_TOPIC)
    .bind(&event)
    .bind(shop_telemetry::outbox::trace_context_json())
    .bind(key)
    .bind(&request_hash[..])
    .bind(&body)
    .fetch_one(&mut *tx)
    .instrument(pg_span("INSERT", "UPDATE products, INSERT orders order_items outbox idempotency_keys"))
    .await
    .map_err(map_write_error)?;
    if decremented != ids.len() as i64 {
        // Cannot happen: the rows are locked and were checked. Roll back rather than
        // commit an order whose stock was not taken.
        return Err(ApiError::Internal(anyhow::anyhow!(
            "decremented {decremented} of {} products",
            ids.len()
        )));
    }
    tx.commit().instrument(pg_span("COMMIT", "COMMIT")).await?;
    metrics::counter!("orders_placed_total").increment(1);
    // After the commit, never before: the cache hook (docs/cache.md, stock rule). The
    // rows were locked, so locked stock minus the ordered quantity is the new stock.
    let stock_after: Vec<(Uuid, i32)> = products
        .iter()
        .map(|p| {
            let ordered: i32 = lines
                .iter()
                .filter(|(id, _)| *id == p.id)
                .map(|(_, q)| q)
                .sum();
            (p.id, p.stock - ordered)
        })
        .collect();
    cache.stock_changed(&stock_after).await;

    Ok(PlacementResponse {
        status: StatusCode::CREATED,
        body,
        order_id: Some(order.id),
        replayed: false,
    })
}

fn map_write_error(error: sqlx::Error) -> ApiError {
    let is_key_conflict = error
        .as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|c| c == "idempotency_keys_pkey");
    if is_key_conflict {
        ApiError::Internal(anyhow::Error::new(error))
    } else {
        ApiError::from(error)
    }
}

/// Stores a deterministic refusal (404 unknown product, 409 insufficient stock) as the
/// key's answer, so a retry with the same key gets the same answer, and commits it.
async fn store_refusal(
    mut tx: Transaction<'static, Postgres>,
    user: Uuid,
    key: &str,
    request_hash: &[u8; 32],
    error: ApiError,
) -> Result<PlacementResponse, ApiError> {
    let (status, body) = (error.status_code(), error.problem());
    sqlx::query(
        "insert into idempotency_keys (user_id, key, request_hash, response_status, response_body) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(user)
    .bind(key)
    .bind(&request_hash[..])
    .bind(status.as_u16() as i16)
    .bind(&body)
    .execute(&mut *tx)
    .instrument(pg_span("INSERT", "INSERT idempotency_keys"))
    .await
    .map_err(map_write_error)?;
    tx.commit().instrument(pg_span("COMMIT", "COMMIT")).await?;
    Ok(PlacementResponse {
        status,
        body,
        order_id: None,
        replayed: false,
    })
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: Uuid,
    product_id: Uuid,
    quantity: i32,
    unit_price_cents: i64,
}

/// Order reads.
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
            "select id, user_id, status, total_cents, currency, created_at from orders \
             where id = $1 and user_id = $2",
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
            "select id, user_id, status, total_cents, currency, created_at from orders \
             where user_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, $3)) \
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
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(Uuid, i64)]) -> PlaceOrderRequest {
        PlaceOrderRequest {
            items: lines
                .iter()
                .map(|(product_id, quantity)| OrderLineRequest {
                    product_id: *product_id,
                    quantity: *quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn quantities_outside_one_to_a_thousand_are_invalid() {
        let id = Uuid::new_v4();
        for bad in [0, -1, 1001, i64::MAX] {
            assert!(validate(&request(&[(id, bad)])).is_err(), "{bad}");
        }
        assert!(validate(&request(&[(id, 1000)])).is_ok());
    }

    #[test]
    fn an_order_needs_one_to_a_hundred_distinct_lines() {
        assert!(validate(&request(&[])).is_err());
        let many: Vec<_> = (0..101).map(|_| (Uuid::new_v4(), 1)).collect();
        assert!(validate(&request(&many)).is_err());
        let id = Uuid::new_v4();
        assert!(validate(&request(&[(id, 1), (id, 2)])).is_err());
    }

    #[test]
    fn a_cursor_survives_its_text_form_and_garbage_is_refused() {
        let cursor = OrderCursor {
            created_at: Utc::now().trunc_subsecs(6),
            id: Uuid::now_v7(),
        };
        assert_eq!(OrderCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(OrderCursor::decode("garbage!"), None);
    }

    #[test]
    fn lock_keys_differ_per_user_and_key() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(lock_key(a, "k"), lock_key(b, "k"));
        assert_ne!(lock_key(a, "k"), lock_key(a, "k2"));
        assert_eq!(lock_key(a, "k"), lock_key(a, "k"));
    }
}
