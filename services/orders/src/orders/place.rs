//! Order placement as a domain operation: idempotent, atomic, never oversold.
//!
//! [`OrderRepository::place`] answers with a [`Placement`] (created, replayed, refused
//! with a reason) or a [`PlaceError`]; it knows nothing of HTTP. The handler
//! (`routes/orders.rs`) alone turns either into a response.
//!
//! One Postgres transaction does everything, so nothing is ever half-written — not on
//! an error, not when the client goes away, not when the deadline passes (a dropped
//! transaction is rolled back by sqlx before its connection is reused). The steps, each
//! a small function below, in the order they run:
//!
//! 1. [`validate`] the lines and [`request_hash`] the body (pure, before any I/O).
//! 2. [`lock_key_and_read_answer`]: `pg_try_advisory_xact_lock(hash(user, key))` and the
//!    key's stored answer, in one round trip. A second request with the same
//!    Idempotency-Key while the first is running gets [`PlaceError::KeyInProgress`] at
//!    once. "In progress" is a lock, not a row, so a crash can never leave a key stuck.
//! 3. [`replay`]: a stored answer is replayed as it was (status and body) or, if the body
//!    differs, refused with [`PlaceError::KeyReused`].
//! 4. [`lock_products`] `FOR NO KEY UPDATE` in id order — one global order, so concurrent
//!    multi-line orders cannot deadlock — and [`check`] and price them: unknown ids, then short
//!    stock, are a [`Refusal`]; mixed currencies are [`PlaceError::MixedCurrencies`].
//! 5. Accepted: [`new_order`], then [`write_order`]: one statement decrements stock,
//!    inserts the order, its lines, the outbox event and the idempotency record.
//!    `CHECK (stock >= 0)` backs the check. Refused: [`store_refusal`] records the
//!    refusal as the key's answer, so a retry gets the same answer even after a restock.
//! 6. [`commit`]; then, never before, the cache hook ([`stock_after`] the order goes to
//!    `ProductCache::stock_changed`, docs/cache.md).
//!
//! # The key race
//! Step 2's snapshot is taken before the lock is tried, so a request with the same key
//! that committed between the two is not seen; its `idempotency_keys` row then makes our
//! insert fail on `idempotency_keys_pkey`. That is [`Attempt::KeyRace`], a signal private
//! to this module: [`OrderRepository::place`] runs the attempt once more, which replays
//! the winner's answer. A second race in a row is a [`PlaceError::Database`].
//!
//! # Why the caller words a refusal
//! The Idempotency-Key contract is "the first response again, status and body", so what
//! is stored for a refusal must be the problem document the client was first sent —
//! `trace_id` included. That document is the API's wording, not the domain's, so `place`
//! takes the function that words a [`Refusal`] as a [`StoredAnswer`] (plain data: a
//! status number and a JSON body). It is called once per refusal; its answer is both
//! stored with the key and returned in [`Placement::Refused`], so the fresh answer and
//! every replay are the same document by construction, and rows stored before this
//! module existed (the same columns, the same shape) replay unchanged.

use std::collections::HashSet;

use chrono::{SubsecRound, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shop_telemetry::db::pg_span;
use sqlx::{Postgres, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    MAX_LINES, MAX_QUANTITY, ORDER_TOPIC, Order, OrderItem, OrderRepository, PlaceOrderRequest,
};
use crate::cache::ProductCache;

/// The constraint whose violation is the key race (see the module docs).
const KEY_CONSTRAINT: &str = "idempotency_keys_pkey";

/// The stored status of a created order (the `201` in [`write_order`]'s statement).
const CREATED_STATUS: u16 = 201;

/// How a placement ended, when it ended as the domain intends.
#[derive(Clone, Debug)]
pub enum Placement {
    /// A new order, committed. `answer` is what was stored for the key: the created
    /// status and the order's JSON.
    Created { order: Order, answer: StoredAnswer },
    /// An earlier request with the same key and body answered this; here it is again.
    Replayed(StoredAnswer),
    /// Nothing was ordered, for `refusal`; `answer` (worded by the caller) was stored
    /// for the key and is the answer to give.
    Refused {
        refusal: Refusal,
        answer: StoredAnswer,
    },
}

/// Why an order was refused. Deterministic for its request and the stock at the time,
/// so it is stored for the key and replayed (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// These products (in request order) do not exist.
    UnknownProducts(Vec<Uuid>),
    /// These products (in request order) have less stock than ordered.
    InsufficientStock(Vec<Uuid>),
}

/// The answer stored for an Idempotency-Key: `idempotency_keys.response_status` and
/// `response_body` (and `order_id` when an order was created).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAnswer {
    /// The HTTP status number as stored; the domain only stores and returns it.
    pub status: u16,
    pub body: Value,
    /// The order created by the request, if any.
    pub order_id: Option<Uuid>,
}

/// Why a placement did not end in a [`Placement`]. Nothing was stored for the key, so a
/// retry runs again. The `Display` of the client's mistakes is their problem detail.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The request's values are out of range (the detail says which).
    #[error("{0}")]
    Invalid(String),
    /// A request with the same key is running right now.
    #[error("a request with this Idempotency-Key is still being processed")]
    KeyInProgress,
    /// The key was used before with a different body.
    #[error("this Idempotency-Key was used with a different request body")]
    KeyReused,
    /// The products of the order are priced in more than one currency.
    #[error("all products of one order must have the same currency")]
    MixedCurrencies,
    /// The database failed (a timeout, a lost connection, a second key race in a row).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The request could not be hashed, or the order not serialised.
    #[error("encoding JSON")]
    Json(#[from] serde_json::Error),
    /// The write took stock from fewer products than were locked and checked; cannot
    /// happen, and rolled back rather than committed if it does.
    #[error("decremented {decremented} of {expected} products")]
    StockNotTaken { decremented: i64, expected: usize },
}

/// How one attempt ended short of a result: the key race (retried once), or an error.
#[derive(Debug)]
enum Attempt {
    KeyRace(sqlx::Error),
    Failed(PlaceError),
}

impl From<PlaceError> for Attempt {
    fn from(error: PlaceError) -> Self {
        Self::Failed(error)
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(error: sqlx::Error) -> Self {
        Self::Failed(error.into())
    }
}

impl From<serde_json::Error> for Attempt {
    fn from(error: serde_json::Error) -> Self {
        Self::Failed(error.into())
    }
}

/// A line as validated: the product and a quantity in `1..=MAX_QUANTITY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Line {
    product_id: Uuid,
    quantity: i32,
}

impl OrderRepository {
    /// Places an order for `user` under Idempotency-Key `key` (see the module docs).
    /// `word_refusal` gives a refusal's answer as the client will see it; it is stored
    /// for the key so that retries get it again.
    pub async fn place<F>(
        &self,
        cache: &ProductCache,
        user: Uuid,
        key: &str,
        request: &PlaceOrderRequest,
        word_refusal: &F,
    ) -> Result<Placement, PlaceError>
    where
        F: Fn(&Refusal) -> StoredAnswer + Sync,
    {
        let lines = validate(request)?;
        let request_hash = request_hash(request)?;
        let attempt = || self.attempt(cache, user, key, &lines, &request_hash, word_refusal);
        let result = match attempt().await {
            // Another request with this key committed after our snapshot: once more,
            // which replays its answer.
            Err(Attempt::KeyRace(_)) => attempt().await,
            other => other,
        };
        result.map_err(|error| match error {
            Attempt::KeyRace(e) => PlaceError::Database(e),
            Attempt::Failed(e) => e,
        })
    }

    /// One transaction: steps 2 to 6 of the module docs.
    async fn attempt<F>(
        &self,
        cache: &ProductCache,
        user: Uuid,
        key: &str,
        lines: &[Line],
        request_hash: &[u8; 32],
        word_refusal: &F,
    ) -> Result<Placement, Attempt>
    where
        F: Fn(&Refusal) -> StoredAnswer + Sync,
    {
        let mut tx = crate::db::begin(&self.db)
            .instrument(pg_span("BEGIN", "BEGIN"))
            .await?;

        let (locked, stored) = lock_key_and_read_answer(&mut tx, user, key).await?;
        if !locked {
            return Err(PlaceError::KeyInProgress.into());
        }
        if let Some(stored) = stored {
            tx.rollback().await?;
            return Ok(Placement::Replayed(replay(stored, request_hash)?));
        }

        let products = lock_products(&mut tx, lines).await?;
        let order = match check(lines, &products)? {
            Verdict::Accept { items, currency } => new_order(user, items, currency),
            Verdict::Refuse(refusal) => {
                let answer = StoredAnswer {
                    order_id: None,
                    ..word_refusal(&refusal)
                };
                store_refusal(&mut tx, user, key, request_hash, &answer).await?;
                commit(tx).await?;
                return Ok(Placement::Refused { refusal, answer });
            }
        };

        let answer = StoredAnswer {
            status: CREATED_STATUS,
            body: serde_json::to_value(&order)?,
            order_id: Some(order.id),
        };
        write_order(&mut tx, key, request_hash, &order, &answer.body).await?;
        commit(tx).await?;
        metrics::counter!("orders_placed_total").increment(1);
        // After the commit, never before: the cache hook (docs/cache.md, stock rule).
        cache.stock_changed(&stock_after(lines, &products)).await;
        Ok(Placement::Created { order, answer })
    }
}

/// Step 1: the request's values, checked (1 to `MAX_LINES` distinct products, each
/// quantity in `1..=MAX_QUANTITY`).
fn validate(request: &PlaceOrderRequest) -> Result<Vec<Line>, PlaceError> {
    if request.items.is_empty() || request.items.len() > MAX_LINES {
        return Err(PlaceError::Invalid(format!(
            "an order has 1 to {MAX_LINES} lines, this one has {}",
            request.items.len()
        )));
    }
    let mut seen = HashSet::with_capacity(request.items.len());
    let mut lines = Vec::with_capacity(request.items.len());
    for (i, line) in request.items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(PlaceError::Invalid(format!(
                "items[{i}].quantity must be between 1 and {MAX_QUANTITY}"
            )));
        }
        if !seen.insert(line.product_id) {
            return Err(PlaceError::Invalid(format!(
                "items[{i}] repeats product {}; put each product on one line",
                line.product_id
            )));
        }
        // In range since MAX_QUANTITY fits an i32; no panic on a request path.
        let quantity = i32::try_from(line.quantity)
            .map_err(|_| PlaceError::Invalid(format!("items[{i}].quantity is out of range")))?;
        lines.push(Line {
            product_id: line.product_id,
            quantity,
        });
    }
    Ok(lines)
}

/// Step 1: what a replay is compared by — the hash of the request's canonical JSON.
fn request_hash(request: &PlaceOrderRequest) -> Result<[u8; 32], PlaceError> {
    Ok(sha256(&[&serde_json::to_vec(request)?]))
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The advisory-lock key of (user, Idempotency-Key).
fn lock_key(user: Uuid, key: &str) -> i64 {
    let digest = sha256(&[b"idempotency", user.as_bytes(), key.as_bytes()]);
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A key's row in `idempotency_keys`.
#[derive(Debug)]
struct StoredKey {
    request_hash: Vec<u8>,
    answer: StoredAnswer,
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
            (Some(request_hash), Some(status), Some(body)) => Some(StoredKey {
                request_hash,
                answer: StoredAnswer {
                    // A smallint column holding HTTP statuses: never negative.
                    status: status as u16,
                    body,
                    order_id: self.order_id,
                },
            }),
            _ => None,
        };
        (self.locked, stored)
    }
}

/// Step 2, one round trip: try the key's lock and read its stored answer. The read's
/// snapshot is taken before the lock is tried (the key race, module docs).
async fn lock_key_and_read_answer(
    tx: &mut Transaction<'static, Postgres>,
    user: Uuid,
    key: &str,
) -> Result<(bool, Option<StoredKey>), sqlx::Error> {
    Ok(sqlx::query_as::<_, LockAndKey>(
        "select pg_try_advisory_xact_lock($1) as locked, \
                k.request_hash, k.response_status, k.response_body, k.order_id \
         from (select 1) as one \
         left join idempotency_keys k on k.user_id = $2 and k.key = $3",
    )
    .bind(lock_key(user, key))
    .bind(user)
    .bind(key)
    .fetch_one(&mut **tx)
    .instrument(pg_span(
        "SELECT",
        "SELECT pg_try_advisory_xact_lock, idempotency_keys",
    ))
    .await?
    .split())
}

/// Step 3: the stored answer, if it was given to the same request body.
fn replay(stored: StoredKey, request_hash: &[u8; 32]) -> Result<StoredAnswer, PlaceError> {
    if stored.request_hash != request_hash {
        return Err(PlaceError::KeyReused);
    }
    Ok(stored.answer)
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct LockedProduct {
    id: Uuid,
    price_cents: i64,
    currency: String,
    stock: i32,
}

/// Step 4: the order's products that exist, locked in id order (deadlock freedom).
async fn lock_products(
    tx: &mut Transaction<'static, Postgres>,
    lines: &[Line],
) -> Result<Vec<LockedProduct>, sqlx::Error> {
    let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
    sqlx::query_as::<_, LockedProduct>(
        "select id, price_cents, currency, stock from products \
         where id = any($1) order by id for no key update",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .instrument(pg_span("SELECT", "SELECT products FOR NO KEY UPDATE"))
    .await
}

/// What [`check`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every product exists with enough stock, all priced in `currency`; `items` are the
    /// lines at the locked prices, in request order.
    Accept {
        items: Vec<OrderItem>,
        currency: String,
    },
    Refuse(Refusal),
}

/// Step 4: unknown products first, then short stock (both refusals, stored for the key);
/// then one currency for all (a client mistake, not stored).
fn check(lines: &[Line], products: &[LockedProduct]) -> Result<Verdict, PlaceError> {
    let mut found = Vec::with_capacity(lines.len());
    let mut unknown = Vec::new();
    for line in lines {
        match products.iter().find(|p| p.id == line.product_id) {
            Some(product) => found.push((line, product)),
            None => unknown.push(line.product_id),
        }
    }
    if !unknown.is_empty() {
        return Ok(Verdict::Refuse(Refusal::UnknownProducts(unknown)));
    }
    let short: Vec<Uuid> = found
        .iter()
        .filter(|(line, product)| product.stock < line.quantity)
        .map(|(line, _)| line.product_id)
        .collect();
    if !short.is_empty() {
        return Ok(Verdict::Refuse(Refusal::InsufficientStock(short)));
    }
    // The first product in id order, as before; validation guarantees one line, so
    // `None` cannot happen, and it is answered like an empty order rather than a panic.
    let Some(first) = products.first() else {
        return Err(PlaceError::Invalid(format!(
            "an order has 1 to {MAX_LINES} lines, this one has 0"
        )));
    };
    if products.iter().any(|p| p.currency != first.currency) {
        return Err(PlaceError::MixedCurrencies);
    }
    Ok(Verdict::Accept {
        items: found
            .into_iter()
            .map(|(line, product)| OrderItem {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price_cents: product.price_cents,
            })
            .collect(),
        currency: first.currency.clone(),
    })
}

/// Step 5: the new order of `items`, with its id, total and creation time.
fn new_order(user: Uuid, items: Vec<OrderItem>, currency: String) -> Order {
    // Postgres keeps microseconds: the answer shows what a later read returns.
    let created_at = Utc::now().trunc_subsecs(6);
    Order {
        id: Uuid::now_v7(),
        user_id: user,
        status: "placed".into(),
        total_cents: items
            .iter()
            .map(|i| i.unit_price_cents * i64::from(i.quantity))
            .sum(),
        currency,
        created_at,
        updated_at: created_at,
        cancel_reason: None,
        items,
    }
}

/// Step 5, one statement: stock, order, lines, outbox event and the key's answer.
async fn write_order(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
    request_hash: &[u8; 32],
    order: &Order,
    body: &Value,
) -> Result<(), Attempt> {
    let event = serde_json::json!({ "type": "order.placed", "order": body });
    let ids: Vec<Uuid> = order.items.iter().map(|i| i.product_id).collect();
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
             insert into orders (id, user_id, status, total_cents, currency, created_at, updated_at) \
             values ($4, $5, 'placed', $6, $7, $8, $8) \
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
    .bind(order.user_id)
    .bind(order.total_cents)
    .bind(&order.currency)
    .bind(order.created_at)
    .bind(ORDER_TOPIC)
    .bind(&event)
    .bind(shop_telemetry::outbox::trace_context_json())
    .bind(key)
    .bind(&request_hash[..])
    .bind(body)
    .fetch_one(&mut **tx)
    .instrument(pg_span("INSERT", "UPDATE products, INSERT orders order_items outbox idempotency_keys"))
    .await
    .map_err(key_race)?;
    if decremented != ids.len() as i64 {
        // Roll back (the caller drops the transaction) rather than commit an order whose
        // stock was not taken.
        return Err(PlaceError::StockNotTaken {
            decremented,
            expected: ids.len(),
        }
        .into());
    }
    Ok(())
}

/// Step 5, refused: the refusal's answer becomes the key's, so a retry with the same key
/// gets the same answer.
async fn store_refusal(
    tx: &mut Transaction<'static, Postgres>,
    user: Uuid,
    key: &str,
    request_hash: &[u8; 32],
    answer: &StoredAnswer,
) -> Result<(), Attempt> {
    sqlx::query(
        "insert into idempotency_keys (user_id, key, request_hash, response_status, response_body) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(user)
    .bind(key)
    .bind(&request_hash[..])
    // An HTTP status (100..=599) fits the smallint column.
    .bind(answer.status as i16)
    .bind(&answer.body)
    .execute(&mut **tx)
    .instrument(pg_span("INSERT", "INSERT idempotency_keys"))
    .await
    .map_err(key_race)?;
    Ok(())
}

/// A write's error, with a unique violation on the key told apart as the key race.
fn key_race(error: sqlx::Error) -> Attempt {
    let is_key_race = error
        .as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|c| c == KEY_CONSTRAINT);
    if is_key_race {
        Attempt::KeyRace(error)
    } else {
        Attempt::Failed(PlaceError::Database(error))
    }
}

/// Step 6.
async fn commit(tx: Transaction<'static, Postgres>) -> Result<(), sqlx::Error> {
    tx.commit().instrument(pg_span("COMMIT", "COMMIT")).await
}

/// Step 6: each product's stock after the order. The rows were locked until the commit,
/// so locked stock minus the ordered quantity is the new stock.
fn stock_after(lines: &[Line], products: &[LockedProduct]) -> Vec<(Uuid, i32)> {
    products
        .iter()
        .map(|p| {
            let ordered: i32 = lines
                .iter()
                .filter(|l| l.product_id == p.id)
                .map(|l| l.quantity)
                .sum();
            (p.id, p.stock - ordered)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::OrderLineRequest;

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

    fn line(product_id: Uuid, quantity: i32) -> Line {
        Line {
            product_id,
            quantity,
        }
    }

    fn product(id: Uuid, stock: i32, currency: &str) -> LockedProduct {
        LockedProduct {
            id,
            price_cents: 250,
            currency: currency.into(),
            stock,
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
    fn lock_keys_differ_per_user_and_key() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(lock_key(a, "k"), lock_key(b, "k"));
        assert_ne!(lock_key(a, "k"), lock_key(a, "k2"));
        assert_eq!(lock_key(a, "k"), lock_key(a, "k"));
    }

    #[test]
    fn a_stored_answer_is_replayed_only_for_the_same_body() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let hash = request_hash(&request(&[(a, 1)])).unwrap();
        let stored = || StoredKey {
            request_hash: hash.to_vec(),
            answer: StoredAnswer {
                status: 409,
                body: serde_json::json!({ "type": "/problems/insufficient-stock" }),
                order_id: None,
            },
        };
        assert_eq!(replay(stored(), &hash).unwrap(), stored().answer);
        let other = request_hash(&request(&[(b, 1)])).unwrap();
        assert!(matches!(
            replay(stored(), &other),
            Err(PlaceError::KeyReused)
        ));
    }

    #[test]
    fn unknown_products_are_refused_before_short_stock_in_request_order() {
        let (known, gone1, gone2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let lines = [line(gone2, 1), line(known, 99), line(gone1, 1)];
        let verdict = check(&lines, &[product(known, 1, "EUR")]).unwrap();
        assert_eq!(
            verdict,
            Verdict::Refuse(Refusal::UnknownProducts(vec![gone2, gone1]))
        );
    }

    #[test]
    fn short_stock_names_every_short_product_and_exact_stock_is_enough() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let products = [
            product(a, 5, "EUR"),
            product(b, 2, "EUR"),
            product(c, 0, "EUR"),
        ];
        let verdict = check(&[line(c, 1), line(a, 5), line(b, 3)], &products).unwrap();
        assert_eq!(
            verdict,
            Verdict::Refuse(Refusal::InsufficientStock(vec![c, b]))
        );
        let verdict = check(&[line(a, 5), line(b, 2)], &products).unwrap();
        assert!(matches!(verdict, Verdict::Accept { .. }), "{verdict:?}");
    }

    #[test]
    fn products_in_two_currencies_are_a_client_error_not_a_refusal() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let products = [product(a, 5, "EUR"), product(b, 5, "USD")];
        assert!(matches!(
            check(&[line(a, 1), line(b, 1)], &products),
            Err(PlaceError::MixedCurrencies)
        ));
    }

    #[test]
    fn an_accepted_order_is_priced_at_the_locked_prices_in_request_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut cheap = product(a, 10, "EUR");
        cheap.price_cents = 100;
        let products = [cheap, product(b, 10, "EUR")];
        let Ok(Verdict::Accept { items, currency }) = check(&[line(b, 2), line(a, 3)], &products)
        else {
            panic!("accepted");
        };
        let expected = vec![
            OrderItem {
                product_id: b,
                quantity: 2,
                unit_price_cents: 250,
            },
            OrderItem {
                product_id: a,
                quantity: 3,
                unit_price_cents: 100,
            },
        ];
        assert_eq!(items, expected);
        let user = Uuid::new_v4();
        let order = new_order(user, items, currency);
        assert_eq!(order.user_id, user);
        assert_eq!(order.status, "placed");
        assert_eq!(order.currency, "EUR");
        assert_eq!(order.items, expected);
        assert_eq!(order.total_cents, 2 * 250 + 3 * 100);
    }

    #[test]
    fn stock_after_takes_each_line_from_its_product() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let products = [product(a, 10, "EUR"), product(b, 3, "EUR")];
        assert_eq!(
            stock_after(&[line(b, 3), line(a, 4)], &products),
            vec![(a, 6), (b, 0)]
        );
    }
}
