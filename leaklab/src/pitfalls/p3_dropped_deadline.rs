//! Pitfall 3: a deadline that does not reach the dependency call.
//!
//! Workload, against the real Postgres (the lab's scratch database, orders schema):
//! order placements with a 100 ms deadline, while another transaction holds the row
//! lock of the product (a slow dependency). Each placement writes the order row,
//! takes the stock, writes the order line. `iterations` placements at once, then two
//! per sample during the window.
//!
//! * leaky: the deadline wraps the `JoinHandle` of a spawned placement, not the work:
//!   at the deadline the caller answers "timed out" and the placement goes on alone,
//!   statement by statement (no transaction), stuck on the lock with no
//!   `statement_timeout`, holding its connection; later ones wait for a connection
//!   with no acquire timeout. The order row is already written: a half-written order.
//! * fixed: the deadline wraps the placement itself (`tokio::time::timeout` around the
//!   request future, as `services/orders/src/routes/mod.rs` does), the placement is one
//!   transaction (as in `services/orders/src/orders.rs`), and the pool carries the
//!   server-side backstop `statement_timeout` (as `services/orders/src/db.rs` does).
//!   At the deadline the future is dropped, the stuck statement is cancelled by the
//!   server, the transaction rolls back: nothing is written.
//!
//! After the window the lab counts, in Postgres, the half-written orders (no line);
//! then releases the lock and counts the orders written after their client was told
//! they had failed.

use std::time::Duration;

use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{PoolLimits, acquire_for_setup, ensure_database, pool};
use crate::probe::{Gauge, Probe, observe};
use crate::report::{Check, VariantReport};
use crate::{LabConfig, Pitfall, Variant};

/// The request's deadline.
const DEADLINE: Duration = Duration::from_millis(100);
/// The server-side backstop of the fixed pool, just above the deadline.
const STATEMENT_TIMEOUT: Duration = Duration::from_millis(150);

/// What one placement needs.
#[derive(Clone)]
struct Placement {
    pool: PgPool,
    user: Uuid,
    product: Uuid,
    /// Statements stuck on the row lock, and placements waiting for a connection.
    waiters: Gauge,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Placed,
    TimedOut,
    /// Failed before the deadline, with the error (e.g. the `statement_timeout`).
    Failed(String),
}

mod leaky {
    use super::*;

    /// One placement, without a transaction: each statement commits on its own.
    pub(super) async fn place_statement_by_statement(p: Placement) -> anyhow::Result<()> {
        let waiting = p.waiters.enter();
        let mut conn = p.pool.acquire().await?;
        drop(waiting);
        let order = Uuid::new_v4();
        sqlx::query(
            "insert into orders (id, user_id, total_cents, currency) values ($1, $2, 100, 'EUR')",
        )
        .bind(order)
        .bind(p.user)
        .execute(&mut *conn)
        .await?;
        let stuck = p.waiters.enter();
        sqlx::query("update products set stock = stock - 1 where id = $1")
            .bind(p.product)
            .execute(&mut *conn)
            .await?;
        drop(stuck);
        sqlx::query(
            "insert into order_items (order_id, line, product_id, quantity, unit_price_cents) \
             values ($1, 0, $2, 1, 100)",
        )
        .bind(order)
        .bind(p.product)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The request: a deadline around the wrong thing.
    // This is the bug, on purpose: the deadline covers waiting for the JoinHandle, so
    // when it passes only the waiting stops; the spawned placement goes on alone.
    pub(super) async fn place_order(p: Placement, in_flight: Gauge) -> Outcome {
        let _in_flight = in_flight.enter();
        #[expect(
            clippy::disallowed_methods,
            reason = "the leaky variant: the deadline covers only the wait, on purpose"
        )]
        let placement = tokio::spawn(place_statement_by_statement(p));
        match tokio::time::timeout(DEADLINE, placement).await {
            Err(_elapsed) => Outcome::TimedOut,
            Ok(Ok(Ok(()))) => Outcome::Placed,
            Ok(Ok(Err(error))) => Outcome::Failed(error.to_string()),
            Ok(Err(error)) => Outcome::Failed(error.to_string()),
        }
    }
}

/// One placement in one transaction: it commits whole or not at all. The request's
/// deadline is carried into the transaction as its `statement_timeout`, so Postgres
/// itself stops a stuck statement in time and the transaction is rolled back on a
/// healthy connection, rather than the future being dropped mid-statement.
async fn place_in_transaction(p: &Placement, deadline: tokio::time::Instant) -> anyhow::Result<()> {
    let waiting = p.waiters.enter();
    let mut tx = p.pool.begin().await?;
    drop(waiting);
    // A margin for the round trip, so the server gives up just before the caller does.
    let budget = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .saturating_sub(Duration::from_millis(20))
        .max(Duration::from_millis(1));
    sqlx::query("select set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", budget.as_millis()))
        .execute(&mut *tx)
        .await?;
    let order = Uuid::new_v4();
    sqlx::query(
        "insert into orders (id, user_id, total_cents, currency) values ($1, $2, 100, 'EUR')",
    )
    .bind(order)
    .bind(p.user)
    .execute(&mut *tx)
    .await?;
    let _stuck = p.waiters.enter();
    sqlx::query("update products set stock = stock - 1 where id = $1")
        .bind(p.product)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into order_items (order_id, line, product_id, quantity, unit_price_cents) \
         values ($1, 0, $2, 1, 100)",
    )
    .bind(order)
    .bind(p.product)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The request: the deadline around the work itself. When it passes, the placement
/// future is dropped; the transaction it owned is rolled back before its connection
/// is reused, and `statement_timeout` ends the statement on the server.
async fn place_order(p: Placement, in_flight: Gauge) -> Outcome {
    let _in_flight = in_flight.enter();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    match tokio::time::timeout_at(deadline, place_in_transaction(&p, deadline)).await {
        Err(_elapsed) => Outcome::TimedOut,
        Ok(Ok(())) => Outcome::Placed,
        Ok(Err(error)) => Outcome::Failed(error.to_string()),
    }
}

async fn request(variant: Variant, p: &Placement, in_flight: &Gauge) -> Outcome {
    match variant {
        Variant::Leaky => leaky::place_order(p.clone(), in_flight.clone()).await,
        Variant::Fixed => place_order(p.clone(), in_flight.clone()).await,
    }
}

/// Orders of this run without any line (half-written), and all orders of this run.
async fn count_orders(admin: &mut PgConnection, user: Uuid) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "select count(*) filter (where not exists \
                (select 1 from order_items i where i.order_id = o.id)), count(*) \
         from orders o where o.user_id = $1",
    )
    .bind(user)
    .fetch_one(admin)
    .await?)
}

pub(super) async fn run(variant: Variant, config: &LabConfig) -> anyhow::Result<VariantReport> {
    ensure_database(&config.database_url).await?;
    let mut admin = PgConnection::connect(&config.database_url).await?;
    let (user, product) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "insert into products (id, sku, name, price_cents, stock) values ($1, $2, 'leak lab', 100, 1000)",
    )
    .bind(product)
    .bind(format!("leaklab-{product}"))
    .execute(&mut admin)
    .await?;

    // The slow dependency: a transaction that holds the product's row lock.
    let mut locker = PgConnection::connect(&config.database_url).await?;
    let mut lock = locker.begin().await?;
    sqlx::query("select 1 from products where id = $1 for update")
        .bind(product)
        .execute(&mut *lock)
        .await?;

    let limits = match variant {
        Variant::Leaky => PoolLimits {
            max_connections: 8,
            acquire_timeout: None,
            statement_timeout: None,
        },
        Variant::Fixed => PoolLimits {
            max_connections: 8,
            acquire_timeout: Some(DEADLINE),
            statement_timeout: Some(STATEMENT_TIMEOUT),
        },
    };
    let probe = Probe::default();
    let placement = Placement {
        pool: pool(&config.database_url, limits)?,
        user,
        product,
        waiters: probe.waiters.clone(),
    };
    // Open one connection first, so the pool's own tasks are in the baseline.
    drop(acquire_for_setup(&placement.pool).await?);

    let alive_before = shop_lifecycle::alive_tasks();
    let outcomes = futures::future::join_all(
        (0..config.iterations).map(|_| request(variant, &placement, &probe.in_flight)),
    )
    .await;
    let alive_after_workload = shop_lifecycle::alive_tasks();
    let later = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let detector = observe(&probe, &config.sampling, || {
        let (placement, in_flight, later) =
            (placement.clone(), probe.in_flight.clone(), later.clone());
        async move {
            let outcome = request(variant, &placement, &in_flight).await;
            later.lock().push(outcome);
        }
    })
    .await;
    let mut report = VariantReport::new(
        Pitfall::DroppedDeadline,
        variant,
        alive_before,
        alive_after_workload,
        &detector,
    );
    let mut outcomes = outcomes;
    outcomes.extend(std::mem::take(&mut *later.lock()));
    let placed = outcomes.iter().filter(|o| **o == Outcome::Placed).count();
    let timed_out = outcomes.iter().filter(|o| **o == Outcome::TimedOut).count();
    let mut errors: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed(error) => Some(error.as_str()),
            _ => None,
        })
        .collect();
    errors.sort_unstable();
    errors.dedup();
    report.notes.push(format!(
        "{} requests: {timed_out} answered 'timed out' at {DEADLINE:?}, {placed} placed, \
         {} failed first ({})",
        outcomes.len(),
        outcomes.len() - timed_out - placed,
        errors.join("; ")
    ));

    // While the lock is still held: what a reader sees right now.
    let (half_written, _) = count_orders(&mut admin, user).await?;
    report.checks.push(Check::new(
        format!("half-written orders (no line) at the deadline = {half_written}"),
        half_written == 0,
    ));

    // The slow dependency recovers: whatever was left running now completes.
    lock.rollback().await?;
    let settle_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while probe.waiters.get() > 0 && tokio::time::Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, written) = count_orders(&mut admin, user).await?;
    let ghost = usize::try_from(written).unwrap_or(0).saturating_sub(placed);
    report.checks.push(Check::new(
        format!("orders written after their client was told they failed = {ghost}"),
        ghost == 0,
    ));

    // Clean up this run's rows (order lines go with their order).
    // Bounded: a leaky pool may still have a connection out.
    let _ = tokio::time::timeout(Duration::from_secs(2), placement.pool.close()).await;
    sqlx::query("delete from orders where user_id = $1")
        .bind(user)
        .execute(&mut admin)
        .await?;
    sqlx::query("delete from products where id = $1")
        .bind(product)
        .execute(&mut admin)
        .await?;
    Ok(report)
}
