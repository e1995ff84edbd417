//! Order placement as a domain operation: idempotent, atomic, never oversold.
//!
//! [`OrderRepository::place`] answers with a [`Placement`] (created, replayed, refused
//! with a reason) or a [`PlaceError`]; it knows nothing of HTTP. The handler
//! (`routes/orders.rs`) alone turns either into a response.
//!
//! # One round trip
//! Placement is one call of the SQL function `place_order`
//! (`migrations/20261203000002_place_order_function.sql`), sent as one prepared
//! statement outside any explicit transaction: the call is its own transaction, which
//! commits when the function returns and rolls back, whole, when it raises. Nothing is
//! ever half-written. The steps, in the order they run (steps 2 to 5 in the function,
//! whose comments carry the same numbers):
//!
//! 1. Here: [`validate`] the lines and [`request_hash`] the body (pure, before any
//!    I/O); [`draft_order`]: the order's id, creation time and JSON, with the prices,
//!    currency and total left for the database to fill in.
//! 2. `pg_try_advisory_xact_lock(hash(user, key))` ([`lock_key`]): a second request with
//!    the same Idempotency-Key while the first is running gets
//!    [`PlaceError::KeyInProgress`] at once. "In progress" is a lock, not a row, so a
//!    crash can never leave a key stuck. Then the key's stored answer, read with a
//!    snapshot taken *after* the lock: a request with the same key has either committed
//!    (its answer is seen) or not begun.
//! 3. [`replay`]: a stored answer is replayed as it was (status and body) or, if the body
//!    differs, refused with [`PlaceError::KeyReused`].
//! 4. The products, locked `FOR NO KEY UPDATE` in id order — one global order, so
//!    concurrent multi-line orders cannot deadlock — and checked: unknown ids, then short
//!    stock, are a [`Refusal`]; mixed currencies are [`PlaceError::MixedCurrencies`].
//! 5. Accepted: the stock decrement, the order, its lines, the outbox event and the
//!    idempotency record (`CHECK (stock >= 0)` backs the check). Refused: the refusal's
//!    answer is stored for the key, so a retry gets the same answer even after a restock
//!    (see "Why the caller words a refusal").
//! 6. The commit, as the statement ends; then, here and never before, the cache hook
//!    (each product's stock after the order goes to `ProductCache::stock_changed`,
//!    docs/cache.md).
//!
//! Before this function, the same steps were four statements in a transaction (six
//! round trips with `BEGIN`, `COMMIT` and the pool's ping); docs/performance.md has the
//! profiles and figures that moved them into the database.
//!
//! # Deadlines
//! A dropped future cannot roll back a statement the server is already running: it would
//! commit after the caller had answered 504. So the request's remaining budget, less
//! [`DEADLINE_MARGIN`], travels with the call: it bounds the wait for the products' locks
//! (`lock_timeout`), and the function raises `query_canceled` — rolling everything back —
//! if it finishes after it. The database's deadline passes first, so whatever it decided
//! reaches orders before orders' own timer answers 504 (the margin covers the trip back);
//! only a commit whose answer takes longer than the margin to arrive can be committed
//! after a 504, and a retry with the same key replays it. The server's
//! `statement_timeout` stays the backstop.
//!
//! # Why the caller words a refusal
//! The Idempotency-Key contract is "the first response again, status and body", so what
//! is stored for a refusal must be the problem document the client was first sent —
//! `trace_id` included. That document is the API's wording, not the domain's, so `place`
//! takes the function that words a [`Refusal`] as a [`StoredAnswer`] (plain data: a
//! status number and a JSON body). A call that comes to a refusal writes nothing and
//! returns it; `place` words it and calls again with the wording, which the function
//! stores if it comes to the same refusal (if the stock changed in between, the new
//! outcome stands, up to [`ROUNDS`] calls). The fresh answer and every replay are the
//! same document by construction, and rows stored before this module existed (the same
//! columns, the same shape) replay unchanged. Refusals are rare; an order that is placed
//! costs one call.

use std::{collections::HashSet, time::Duration};

use chrono::{SubsecRound, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shop_telemetry::db::pg_span;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    MAX_LINES, MAX_QUANTITY, ORDER_TOPIC, Order, OrderItem, OrderRepository, PlaceOrderRequest,
};
use crate::cache::ProductCache;

/// Calls of `place_order` one placement may take: the first, and a second with a
/// refusal's wording; a third only if the stock changed between those two.
const ROUNDS: usize = 3;

/// How much sooner than the request's deadline the database's passes (module docs,
/// "Deadlines"): its answer — an order, or `query_canceled` — reaches us before our own
/// timer fires, so an order is never committed after the caller was answered 504.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

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

impl Refusal {
    /// Its name in `place_order`'s outcome and parameters.
    fn kind(&self) -> &'static str {
        match self {
            Self::UnknownProducts(_) => "unknown_products",
            Self::InsufficientStock(_) => "insufficient_stock",
        }
    }

    fn product_ids(&self) -> &[Uuid] {
        match self {
            Self::UnknownProducts(ids) | Self::InsufficientStock(ids) => ids,
        }
    }
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
    /// The database failed (a timeout, a lost connection, an answer not as documented).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The request could not be hashed, or the order not serialised.
    #[error("encoding JSON")]
    Json(#[from] serde_json::Error),
    /// The stock changed under every one of [`ROUNDS`] calls, each time to another
    /// refusal, so none could be stored.
    #[error("the order's refusal changed in each of {ROUNDS} attempts")]
    RefusalUnsettled,
}

/// A line as validated: the product and a quantity in `1..=MAX_QUANTITY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Line {
    product_id: Uuid,
    quantity: i32,
}

impl OrderRepository {
    /// Places an order for `user` under Idempotency-Key `key` (see the module docs),
    /// giving up at `deadline` (the request's; `None`: the server's statement timeout
    /// only). `word_refusal` gives a refusal's answer as the client will see it; it is
    /// stored for the key so that retries get it again.
    pub async fn place<F>(
        &self,
        cache: &ProductCache,
        user: Uuid,
        key: &str,
        request: &PlaceOrderRequest,
        deadline: Option<Instant>,
        word_refusal: &F,
    ) -> Result<Placement, PlaceError>
    where
        F: Fn(&Refusal) -> StoredAnswer + Sync,
    {
        let lines = validate(request)?;
        let call = Call {
            user,
            key,
            request_hash: request_hash(request)?,
            draft: draft_order(user, &lines),
            lines: &lines,
            deadline,
        };
        let draft_json = serde_json::to_value(&call.draft)?;
        let mut worded: Option<(Refusal, StoredAnswer)> = None;
        for _ in 0..ROUNDS {
            match self.call(&call, &draft_json, worded.as_ref()).await? {
                Outcome::InProgress => return Err(PlaceError::KeyInProgress),
                Outcome::Stored(stored) => {
                    return Ok(Placement::Replayed(replay(stored, &call.request_hash)?));
                }
                Outcome::MixedCurrencies => return Err(PlaceError::MixedCurrencies),
                Outcome::Refusal(refusal) => {
                    let answer = StoredAnswer {
                        order_id: None,
                        ..word_refusal(&refusal)
                    };
                    worded = Some((refusal, answer));
                }
                Outcome::Refused => {
                    // Only returned for the wording this call carried.
                    let Some((refusal, answer)) = worded else {
                        return Err(unexpected("refused", "a worded refusal"));
                    };
                    return Ok(Placement::Refused { refusal, answer });
                }
                Outcome::Created(created) => {
                    let order = priced(call.draft, &created.prices, created.currency);
                    metrics::counter!("orders_placed_total").increment(1);
                    tracing::info!(
                        order_id = %order.id,
                        user_id = %order.user_id,
                        total_cents = order.total_cents,
                        "order placed"
                    );
                    // After the commit, never before: the cache hook (docs/cache.md).
                    let stock: Vec<(Uuid, i32)> = lines
                        .iter()
                        .map(|l| l.product_id)
                        .zip(created.stock_after)
                        .collect();
                    cache.stock_changed(&stock).await;
                    return Ok(Placement::Created {
                        order,
                        answer: created.answer,
                    });
                }
            }
        }
        Err(PlaceError::RefusalUnsettled)
    }

    /// One call of `place_order`: steps 2 to 6 of the module docs, one round trip.
    async fn call(
        &self,
        call: &Call<'_>,
        draft_json: &Value,
        worded: Option<&(Refusal, StoredAnswer)>,
    ) -> Result<Outcome, PlaceError> {
        let ids: Vec<Uuid> = call.lines.iter().map(|l| l.product_id).collect();
        let quantities: Vec<i32> = call.lines.iter().map(|l| l.quantity).collect();
        let mut conn = crate::db::acquire(&self.db).await?;
        // Measured once the connection is ours: the wait for it (or its opening) is spent.
        let budget_ms = call.deadline.map(|deadline| {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(DEADLINE_MARGIN)
                .as_millis();
            i32::try_from(left).unwrap_or(i32::MAX)
        });
        let row: OutcomeRow = sqlx::query_as(
            "select * from place_order($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                                       $13, $14, $15, $16)",
        )
        .bind(call.user)
        .bind(call.key)
        .bind(lock_key(call.user, call.key))
        .bind(&call.request_hash[..])
        .bind(&ids)
        .bind(&quantities)
        .bind(call.draft.id)
        .bind(call.draft.created_at)
        .bind(draft_json)
        .bind(ORDER_TOPIC)
        .bind(shop_telemetry::outbox::trace_context_json())
        .bind(budget_ms)
        .bind(worded.map(|(refusal, _)| refusal.kind()))
        .bind(worded.map(|(refusal, _)| refusal.product_ids()))
        // An HTTP status (100..=599) fits the smallint column.
        .bind(worded.map(|(_, answer)| answer.status as i16))
        .bind(worded.map(|(_, answer)| &answer.body))
        .fetch_one(&mut *conn)
        .instrument(pg_span("SELECT", "SELECT place_order"))
        .await?;
        row.outcome()
    }
}

/// What one placement sends with each call.
struct Call<'a> {
    user: Uuid,
    key: &'a str,
    request_hash: [u8; 32],
    /// The order if it is placed, prices, currency and total still to fill in.
    draft: Order,
    lines: &'a [Line],
    deadline: Option<Instant>,
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

/// Step 3: the stored answer, if it was given to the same request body.
fn replay(stored: StoredKey, request_hash: &[u8; 32]) -> Result<StoredAnswer, PlaceError> {
    if stored.request_hash != request_hash {
        return Err(PlaceError::KeyReused);
    }
    Ok(stored.answer)
}

/// Step 1: the order as it will be if it is placed: its id, its creation time, its lines;
/// each price, the currency and the total are zero or empty until the database fills
/// them in (step 5) with what it read under the rows' locks.
fn draft_order(user: Uuid, lines: &[Line]) -> Order {
    // Postgres keeps microseconds: the answer shows what a later read returns.
    let created_at = Utc::now().trunc_subsecs(6);
    Order {
        id: Uuid::now_v7(),
        user_id: user,
        status: "placed".into(),
        items: lines
            .iter()
            .map(|l| OrderItem {
                product_id: l.product_id,
                quantity: l.quantity,
                unit_price_cents: 0,
            })
            .collect(),
        total_cents: 0,
        currency: String::new(),
        created_at,
        updated_at: created_at,
        cancel_reason: None,
    }
}

/// Step 6: the draft with the prices (in line order) and currency the database used, as
/// it filled them into the stored answer.
fn priced(mut order: Order, prices: &[i64], currency: String) -> Order {
    for (item, price) in order.items.iter_mut().zip(prices) {
        item.unit_price_cents = *price;
    }
    order.total_cents = order
        .items
        .iter()
        .map(|i| i.unit_price_cents * i64::from(i.quantity))
        .sum();
    order.currency = currency;
    order
}

/// What one call of `place_order` came to (its `placement_outcome`, decoded).
#[derive(Debug)]
enum Outcome {
    InProgress,
    Stored(StoredKey),
    /// A refusal, not stored: to be worded and sent with the next call.
    Refusal(Refusal),
    /// The refusal worded in this call is the key's answer now.
    Refused,
    MixedCurrencies,
    Created(Created),
}

/// A placed order, as `place_order` reports it.
#[derive(Debug)]
struct Created {
    /// Unit prices and each product's stock after the order, both in line order.
    prices: Vec<i64>,
    stock_after: Vec<i32>,
    currency: String,
    answer: StoredAnswer,
}

/// `place_order`'s row; which columns are set depends on `outcome` (the migration).
#[derive(Debug, sqlx::FromRow)]
struct OutcomeRow {
    outcome: String,
    product_ids: Option<Vec<Uuid>>,
    prices: Option<Vec<i64>>,
    currency: Option<String>,
    stock_after: Option<Vec<i32>>,
    request_hash: Option<Vec<u8>>,
    response_status: Option<i16>,
    response_body: Option<Value>,
    order_id: Option<Uuid>,
}

impl OutcomeRow {
    fn outcome(self) -> Result<Outcome, PlaceError> {
        let outcome = self.outcome.as_str();
        let need = |what| unexpected(outcome, what);
        Ok(match outcome {
            "in_progress" => Outcome::InProgress,
            "stored" => Outcome::Stored(StoredKey {
                request_hash: self.request_hash.ok_or_else(|| need("request_hash"))?,
                answer: StoredAnswer {
                    // A smallint column holding HTTP statuses: never negative.
                    status: self
                        .response_status
                        .ok_or_else(|| need("response_status"))? as u16,
                    body: self.response_body.ok_or_else(|| need("response_body"))?,
                    order_id: self.order_id,
                },
            }),
            "unknown_products" => Outcome::Refusal(Refusal::UnknownProducts(
                self.product_ids.ok_or_else(|| need("product_ids"))?,
            )),
            "insufficient_stock" => Outcome::Refusal(Refusal::InsufficientStock(
                self.product_ids.ok_or_else(|| need("product_ids"))?,
            )),
            "refused" => Outcome::Refused,
            "mixed_currencies" => Outcome::MixedCurrencies,
            "created" => Outcome::Created(Created {
                prices: self.prices.ok_or_else(|| need("prices"))?,
                stock_after: self.stock_after.ok_or_else(|| need("stock_after"))?,
                currency: self.currency.ok_or_else(|| need("currency"))?,
                answer: StoredAnswer {
                    status: self
                        .response_status
                        .ok_or_else(|| need("response_status"))? as u16,
                    body: self.response_body.ok_or_else(|| need("response_body"))?,
                    order_id: Some(self.order_id.ok_or_else(|| need("order_id"))?),
                },
            }),
            _ => return Err(unexpected(outcome, "a known outcome")),
        })
    }
}

/// `place_order` answered other than its migration documents.
fn unexpected(outcome: &str, missing: &str) -> PlaceError {
    PlaceError::Database(sqlx::Error::Protocol(format!(
        "place_order: outcome {outcome:?} without {missing}"
    )))
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

    fn row(outcome: &str) -> OutcomeRow {
        OutcomeRow {
            outcome: outcome.into(),
            product_ids: None,
            prices: None,
            currency: None,
            stock_after: None,
            request_hash: None,
            response_status: None,
            response_body: None,
            order_id: None,
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
    fn a_draft_is_priced_at_the_prices_the_database_used_in_line_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let user = Uuid::new_v4();
        let draft = draft_order(user, &[line(b, 2), line(a, 3)]);
        assert_eq!(draft.user_id, user);
        assert_eq!(draft.status, "placed");
        assert_eq!(draft.created_at, draft.updated_at);
        let order = priced(draft, &[250, 100], "EUR".into());
        assert_eq!(
            order.items,
            vec![
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
            ]
        );
        assert_eq!(order.currency, "EUR");
        assert_eq!(order.total_cents, 2 * 250 + 3 * 100);
    }

    #[test]
    fn outcomes_decode_with_the_columns_they_need_and_fail_clearly_without() {
        let ids = vec![Uuid::new_v4()];
        let mut short = row("insufficient_stock");
        short.product_ids = Some(ids.clone());
        assert!(matches!(
            short.outcome().unwrap(),
            Outcome::Refusal(Refusal::InsufficientStock(got)) if got == ids
        ));
        assert!(matches!(
            row("in_progress").outcome().unwrap(),
            Outcome::InProgress
        ));
        assert!(matches!(
            row("refused").outcome().unwrap(),
            Outcome::Refused
        ));
        let error = row("created").outcome().unwrap_err().to_string();
        assert!(
            error.contains("created") && error.contains("prices"),
            "{error}"
        );
        assert!(row("stored").outcome().is_err());
        assert!(row("something else").outcome().is_err());
    }

    #[test]
    fn refusals_name_their_kind_as_place_order_does() {
        let ids = vec![Uuid::new_v4()];
        assert_eq!(
            Refusal::UnknownProducts(ids.clone()).kind(),
            "unknown_products"
        );
        assert_eq!(
            Refusal::InsufficientStock(ids.clone()).kind(),
            "insufficient_stock"
        );
        assert_eq!(
            Refusal::InsufficientStock(ids.clone()).product_ids(),
            &ids[..]
        );
    }
}
