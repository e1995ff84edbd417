//! The correctness check: after the load, prove against Postgres and the events stream
//! that nothing went wrong.
//!
//! Before the load, [`Checker::before`] takes one consistent snapshot of every
//! product's stock and units sold (a single statement), the database's clock, and the
//! last entry id of the events stream. After the load, [`Checker::verify`] waits until
//! the outbox relay has published every event (unpublished outbox rows → 0, bounded by
//! LOADTEST_DRAIN_TIMEOUT) and then checks:
//!
//! 1. for every product, initial stock − current stock = units in the orders placed
//!    since (and no stock is negative);
//! 2. every 201 the generator saw has exactly one order row, by id, with the lines it
//!    sent and the 201 answered; no order id was answered twice;
//! 3. every order placed during the run has exactly one outbox row, and its event is
//!    in the stream (entries after the snapshot's last id);
//! 4. every replay of an order answered 201 got the same order back, status 201, with
//!    `Idempotent-Replayed: true`;
//! 5. settlement (after waiting, up to LOADTEST_SETTLE_TIMEOUT, for every order of the
//!    run to leave `placed`): every order is `paid` or `cancelled`, with exactly one
//!    `payments` row that agrees (succeeded ↔ paid, failed ↔ cancelled) and exactly one
//!    of `OrderPaid` / `OrderCancelled` in its outbox, never both; no entry is left
//!    pending in either consumer group, and no entry was dead-lettered during the run
//!    (unless LOADTEST_ALLOWED_DEAD_LETTERS says the run injected poison).
//!
//! Invariant 1 counts units of orders *not cancelled*: a cancelled order gave its stock
//! back, so initial stock = current stock + units in orders not cancelled.
//!
//! The report also shows settlement latency (`updated_at − created_at`, placed → paid
//! or cancelled) and orders settled per second next to orders placed per second.
//!
//! The check only reads: it never writes to the database or the stream.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::Context;
use redis::streams::StreamRangeReply;
use sqlx::{PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::{
    cli::CheckArgs,
    record::{Line, PlacedOrder, Recorder},
};

/// Orders created up to this long before the snapshot still count as "during the run"
/// (the services' clocks and the database's may differ a little).
const CLOCK_SLACK_SECS: f64 = 5.0;
/// Ids per `= any($1)` query.
const CHUNK: usize = 5_000;
/// Stream entries per XRANGE.
const STREAM_PAGE: usize = 5_000;
/// Violations listed at most (the count is always complete).
const LISTED: usize = 50;

/// Read access to the stack's Postgres and Redis.
#[derive(Debug)]
pub struct Checker {
    db: PgPool,
    redis: redis::aio::MultiplexedConnection,
    stream: String,
    payment_stream: String,
    drain_timeout: Duration,
    settle_timeout: Duration,
    allowed_dead_letters: usize,
}

/// Stock and units sold of one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stock {
    stock: i64,
    sold: i64,
}

/// The state before the load.
#[derive(Debug)]
pub struct Before {
    products: HashMap<Uuid, Stock>,
    /// The database's clock, in seconds since the epoch.
    db_now: f64,
    /// Orders already there whose `created_at` is within the clock slack of `db_now`:
    /// they are not the run's.
    earlier: HashSet<Uuid>,
    /// The last entry of the events stream, if it had any.
    stream_last: Option<String>,
    /// Entries in the two dead-letter streams.
    dead_letters: usize,
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Each broken invariant, one line each.
    pub violations: Vec<String>,
    /// What was checked, for the report.
    pub facts: Vec<(String, String)>,
}

impl Verdict {
    /// True when nothing is wrong.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn fact(&mut self, name: &str, value: impl ToString) {
        self.facts.push((name.to_owned(), value.to_string()));
    }

    /// Prints the facts and, if any, the violations (at most [`LISTED`] of them).
    #[allow(clippy::print_stdout)] // the verdict is the program's output
    pub fn print(&self) {
        println!();
        println!("== correctness check");
        for (name, value) in &self.facts {
            println!("  {name:<48} {value}");
        }
        if self.passed() {
            println!("  PASSED: no violation");
        } else {
            println!("  FAILED: {} violation(s)", self.violations.len());
            for violation in self.violations.iter().take(LISTED) {
                println!("  - {violation}");
            }
            if self.violations.len() > LISTED {
                println!("  ... and {} more", self.violations.len() - LISTED);
            }
        }
    }
}

impl Checker {
    /// Connects to the stack's Postgres and Redis.
    pub async fn connect(args: &CheckArgs) -> anyhow::Result<Self> {
        let db = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&args.database_url)
            .await
            .context("connecting to Postgres (DATABASE_URL) for the correctness check")?;
        let redis = redis::Client::open(args.redis_url.as_str())
            .context("REDIS_URL")?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis (REDIS_URL) for the correctness check")?;
        Ok(Self {
            db,
            redis,
            stream: args.events_stream.clone(),
            payment_stream: args.payment_events_stream.clone(),
            drain_timeout: args.drain_timeout,
            settle_timeout: args.settle_timeout,
            allowed_dead_letters: args.allowed_dead_letters,
        })
    }

    /// Snapshots the state before the load. The stream's last id is read first: an
    /// order committed after the database snapshot is published after it.
    pub async fn before(&mut self) -> anyhow::Result<Before> {
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis)
            .await
            .context("reading the events stream's last entry")?;
        let (products, db_now) = self.stock().await.context("stock snapshot")?;
        let earlier: Vec<Uuid> =
            sqlx::query_scalar("select id from orders where created_at >= to_timestamp($1)")
                .bind(db_now - CLOCK_SLACK_SECS)
                .fetch_all(&self.db)
                .await
                .context("orders of the last seconds")?;
        let dead_letters = self.dead_letters().await?;
        Ok(Before {
            products,
            db_now,
            earlier: earlier.into_iter().collect(),
            stream_last: last.ids.into_iter().next().map(|entry| entry.id),
            dead_letters,
        })
    }

    /// Every product's stock and units sold, and the database's clock, at one instant.
    async fn stock(&self) -> anyhow::Result<(HashMap<Uuid, Stock>, f64)> {
        let rows: Vec<(Uuid, i64, i64, f64)> = sqlx::query_as(
            "select p.id, p.stock::int8, coalesce(s.sold, 0)::int8, \
                    extract(epoch from now())::float8 \
             from products p \
             left join (select i.product_id, sum(i.quantity) as sold from order_items i \
                        join orders o on o.id = i.order_id where o.status <> 'cancelled' \
                        group by i.product_id) s on s.product_id = p.id",
        )
        .fetch_all(&self.db)
        .await?;
        let now = match rows.first() {
            Some(row) => row.3,
            None => {
                sqlx::query_scalar("select extract(epoch from now())::float8")
                    .fetch_one(&self.db)
                    .await?
            }
        };
        let products = rows
            .into_iter()
            .map(|(id, stock, sold, _)| (id, Stock { stock, sold }))
            .collect();
        Ok((products, now))
    }

    /// Waits for the relay to publish everything, then checks every invariant.
    pub async fn verify(
        &mut self,
        before: &Before,
        recorder: &Recorder,
    ) -> anyhow::Result<Verdict> {
        let mut verdict = Verdict::default();
        let drained = self.drain().await?;
        match drained {
            Ok(waited) => verdict.fact("outbox drained after", format!("{waited:.1?}")),
            Err(left) => verdict.violations.push(format!(
                "{left} outbox row(s) still unpublished after {:?} (LOADTEST_DRAIN_TIMEOUT): is the outbox relay running?",
                self.drain_timeout
            )),
        }

        let placed = recorder.placed_orders();
        verdict.fact("orders answered 201 (seen by the generator)", placed.len());
        self.check_orders(&placed, &mut verdict)
            .await
            .context("checking the orders")?;
        let orders = self
            .check_events(before, &placed, &mut verdict)
            .await
            .context("checking the outbox and the events stream")?;
        check_replays(recorder, &mut verdict);
        self.check_settlement(before, &orders, &mut verdict)
            .await
            .context("checking settlement")?;
        // After settlement: cancelled orders have given their stock back.
        let (after, _) = self.stock().await.context("stock after the run")?;
        self.check_stock(before, &after, &mut verdict);
        Ok(verdict)
    }

    /// Polls the unpublished outbox rows until there are none: `Ok(waited)`, or
    /// `Err(rows left)` after the drain timeout.
    async fn drain(&self) -> anyhow::Result<Result<Duration, i64>> {
        let started = Instant::now();
        loop {
            let left: i64 =
                sqlx::query_scalar("select count(*) from outbox where published_at is null")
                    .fetch_one(&self.db)
                    .await
                    .context("counting unpublished outbox rows")?;
            if left == 0 {
                return Ok(Ok(started.elapsed()));
            }
            if started.elapsed() >= self.drain_timeout {
                return Ok(Err(left));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Invariant 1: stock taken = units ordered, for every product; no negative stock.
    fn check_stock(&self, before: &Before, after: &HashMap<Uuid, Stock>, verdict: &mut Verdict) {
        let mut units = 0;
        let mut products_ordered = 0;
        for (id, was) in &before.products {
            let Some(now) = after.get(id) else {
                verdict
                    .violations
                    .push(format!("product {id} disappeared during the run"));
                continue;
            };
            let taken = was.stock - now.stock;
            let ordered = now.sold - was.sold;
            if taken != ordered {
                verdict.violations.push(format!(
                    "product {id}: stock went from {} to {} (−{taken}) but {ordered} unit(s) were ordered",
                    was.stock, now.stock
                ));
            }
            if ordered > 0 {
                products_ordered += 1;
            }
            units += ordered;
        }
        for (id, now) in after {
            if now.stock < 0 {
                verdict
                    .violations
                    .push(format!("product {id}: negative stock {}", now.stock));
            }
            if !before.products.contains_key(id) && now.sold > 0 {
                verdict.violations.push(format!(
                    "product {id} was created during the run and already sold {}",
                    now.sold
                ));
            }
        }
        verdict.fact(
            "products checked (stock − stock' = units sold)",
            after.len(),
        );
        verdict.fact("units ordered during the run", units);
        verdict.fact("products ordered during the run", products_ordered);
    }

    /// Invariant 2: each 201 has its one order row with the same lines.
    async fn check_orders(
        &self,
        placed: &[PlacedOrder],
        verdict: &mut Verdict,
    ) -> anyhow::Result<()> {
        let mut seen = HashSet::with_capacity(placed.len());
        for order in placed {
            if !seen.insert(order.id) {
                verdict.violations.push(format!(
                    "order {} was answered 201 twice (two keys, one order)",
                    order.id
                ));
            }
            if order.replayed_header {
                verdict.violations.push(format!(
                    "order {} (fresh key {}) was answered as a replay",
                    order.id, order.key
                ));
            }
            if order.lines != order.sent {
                verdict.violations.push(format!(
                    "order {}: the 201 lists {:?}, the request sent {:?}",
                    order.id, order.lines, order.sent
                ));
            }
        }

        let mut stored: HashMap<Uuid, (Uuid, Vec<Line>)> = HashMap::with_capacity(placed.len());
        let ids: Vec<Uuid> = seen.into_iter().collect();
        for chunk in ids.chunks(CHUNK) {
            let rows: Vec<(Uuid, Uuid, Uuid, i64)> = sqlx::query_as(
                "select o.id, o.user_id, i.product_id, i.quantity::int8 \
                 from orders o join order_items i on i.order_id = o.id \
                 where o.id = any($1) order by o.id, i.line",
            )
            .bind(chunk)
            .fetch_all(&self.db)
            .await?;
            for (id, user_id, product_id, quantity) in rows {
                stored
                    .entry(id)
                    .or_insert_with(|| (user_id, Vec::new()))
                    .1
                    .push(Line {
                        product_id,
                        quantity,
                    });
            }
        }
        for order in placed {
            match stored.get(&order.id) {
                None => verdict.violations.push(format!(
                    "order {} was answered 201 (key {}) but has no row with lines",
                    order.id, order.key
                )),
                Some((user_id, lines)) => {
                    if *user_id != order.user_id {
                        verdict.violations.push(format!(
                            "order {}: stored for user {user_id}, answered for {}",
                            order.id, order.user_id
                        ));
                    }
                    if *lines != order.sent {
                        verdict.violations.push(format!(
                            "order {}: stored lines {lines:?}, sent {:?}",
                            order.id, order.sent
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Invariant 3: every order of the run has one outbox row and a stream entry.
    /// Returns the run's orders.
    async fn check_events(
        &mut self,
        before: &Before,
        placed: &[PlacedOrder],
        verdict: &mut Verdict,
    ) -> anyhow::Result<Vec<Uuid>> {
        let since = before.db_now - CLOCK_SLACK_SECS;
        let mut orders: Vec<Uuid> =
            sqlx::query_scalar("select id from orders where created_at >= to_timestamp($1)")
                .bind(since)
                .fetch_all(&self.db)
                .await?;
        orders.retain(|id| !before.earlier.contains(id));
        verdict.fact("orders in the database since the snapshot", orders.len());
        let in_run: HashSet<Uuid> = orders.iter().copied().collect();
        orders.extend(
            placed
                .iter()
                .map(|o| o.id)
                .filter(|id| !in_run.contains(id)),
        );

        let mut outbox: HashMap<Uuid, i64> = HashMap::with_capacity(orders.len());
        for chunk in orders.chunks(CHUNK) {
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(
                "select aggregate_id, count(*) from outbox \
                 where aggregate_id = any($1) and event_type = 'order.placed' \
                 group by aggregate_id",
            )
            .bind(chunk)
            .fetch_all(&self.db)
            .await?;
            outbox.extend(rows);
        }

        let (streamed, entries) = self.stream_since(before.stream_last.as_deref()).await?;
        verdict.fact("events stream entries since the snapshot", entries);
        let mut missing_outbox = 0;
        let mut missing_stream = 0;
        for id in &orders {
            match outbox.get(id).copied().unwrap_or(0) {
                1 => {}
                0 => {
                    missing_outbox += 1;
                    verdict
                        .violations
                        .push(format!("order {id} has no outbox row"));
                }
                n => verdict
                    .violations
                    .push(format!("order {id} has {n} outbox rows")),
            }
            if !streamed.contains(id) {
                missing_stream += 1;
                verdict.violations.push(format!(
                    "order {id} has no entry in the events stream `{}`",
                    self.stream
                ));
            }
        }
        verdict.fact("orders without their outbox row", missing_outbox);
        verdict.fact("orders without their stream entry", missing_stream);
        Ok(orders)
    }

    /// Entries in the dead-letter streams of both consumers.
    async fn dead_letters(&mut self) -> anyhow::Result<usize> {
        let (orders, payments): (usize, usize) = redis::pipe()
            .cmd("XLEN")
            .arg(format!("{}:dead", self.stream))
            .cmd("XLEN")
            .arg(format!("{}:dead", self.payment_stream))
            .query_async(&mut self.redis)
            .await
            .context("XLEN of the dead-letter streams")?;
        Ok(orders + payments)
    }

    /// Entries pending (delivered, not acknowledged) in a stream's consumer group.
    async fn pending(&mut self, stream: &str, group: &str) -> anyhow::Result<usize> {
        let reply: redis::RedisResult<redis::streams::StreamPendingReply> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .query_async(&mut self.redis)
            .await;
        match reply {
            Ok(reply) => Ok(reply.count()),
            // No group yet: nobody consumed, so nothing is pending.
            Err(e) if e.code() == Some("NOGROUP") => Ok(0),
            Err(e) => Err(e).context("XPENDING"),
        }
    }

    /// Invariant 5: every order of the run settled once, its payment agrees, nothing
    /// pending or dead-lettered; and the settlement figures.
    async fn check_settlement(
        &mut self,
        before: &Before,
        orders: &[Uuid],
        verdict: &mut Verdict,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let unsettled = loop {
            let mut left = 0;
            for chunk in orders.chunks(CHUNK) {
                let n: i64 = sqlx::query_scalar(
                    "select count(*) from orders where id = any($1) and status = 'placed'",
                )
                .bind(chunk)
                .fetch_one(&self.db)
                .await?;
                left += n;
            }
            if left == 0 || started.elapsed() >= self.settle_timeout {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if unsettled > 0 {
            verdict.violations.push(format!(
                "{unsettled} order(s) still `placed` after {:?} (LOADTEST_SETTLE_TIMEOUT): are payments and orders' consumer running?",
                self.settle_timeout
            ));
        } else {
            verdict.fact(
                "every order settled after",
                format!("{:.1?}", started.elapsed()),
            );
        }

        let mut by_status: HashMap<String, i64> = HashMap::new();
        let mut bad = Vec::new();
        let mut latencies: Vec<f64> = Vec::with_capacity(orders.len());
        let mut placed_span = (f64::MAX, f64::MIN);
        let mut settled_span = (f64::MAX, f64::MIN);
        for chunk in orders.chunks(CHUNK) {
            #[allow(clippy::type_complexity)]
            let rows: Vec<(Uuid, String, f64, f64, i64, Option<String>, i64, i64)> = sqlx::query_as(
                "select o.id, o.status, extract(epoch from o.created_at)::float8, \
                        extract(epoch from o.updated_at)::float8, \
                        count(p.order_id), min(p.status), \
                        coalesce(max(x.paid), 0), coalesce(max(x.cancelled), 0) \
                 from orders o \
                 left join payments p on p.order_id = o.id \
                 left join (select aggregate_id, \
                                   count(*) filter (where event_type = 'OrderPaid') as paid, \
                                   count(*) filter (where event_type = 'OrderCancelled') as cancelled \
                            from outbox where aggregate_id = any($1) group by aggregate_id) x \
                        on x.aggregate_id = o.id \
                 where o.id = any($1) group by o.id",
            )
            .bind(chunk)
            .fetch_all(&self.db)
            .await?;
            for (id, status, created, updated, payments, payment, paid_events, cancelled_events) in
                rows
            {
                *by_status.entry(status.clone()).or_default() += 1;
                let expected_payment = match status.as_str() {
                    "paid" => Some("succeeded"),
                    "cancelled" => Some("failed"),
                    _ => None,
                };
                if status != "placed" {
                    latencies.push(updated - created);
                    placed_span = (placed_span.0.min(created), placed_span.1.max(created));
                    settled_span = (settled_span.0.min(updated), settled_span.1.max(updated));
                    if payments != 1 {
                        bad.push(format!(
                            "order {id} ({status}) has {payments} payments rows"
                        ));
                    } else if payment.as_deref() != expected_payment {
                        bad.push(format!(
                            "order {id} is {status} but its payment is {payment:?}"
                        ));
                    }
                    let events = (paid_events, cancelled_events);
                    let expected = if status == "paid" { (1, 0) } else { (0, 1) };
                    if events != expected {
                        bad.push(format!(
                            "order {id} ({status}) has {paid_events} OrderPaid and {cancelled_events} OrderCancelled events"
                        ));
                    }
                }
            }
        }
        verdict.fact(
            "orders paid / cancelled",
            format!(
                "{} / {}",
                by_status.get("paid").copied().unwrap_or(0),
                by_status.get("cancelled").copied().unwrap_or(0)
            ),
        );
        verdict.fact("orders with a wrong payment or settlement event", bad.len());
        verdict.violations.extend(bad);

        let pending = self.pending(&self.stream.clone(), "payments").await?
            + self.pending(&self.payment_stream.clone(), "orders").await?;
        verdict.fact("entries left pending (groups payments, orders)", pending);
        if pending > 0 {
            verdict.violations.push(format!(
                "{pending} stream entries left pending after settlement"
            ));
        }
        let dead = self
            .dead_letters()
            .await?
            .saturating_sub(before.dead_letters);
        verdict.fact("entries dead-lettered during the run", dead);
        if dead > self.allowed_dead_letters {
            verdict.violations.push(format!(
                "{dead} entries dead-lettered during the run (allowed: {}; see `<stream>:dead`)",
                self.allowed_dead_letters
            ));
        }

        if !latencies.is_empty() {
            latencies.sort_by(f64::total_cmp);
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
            verdict.fact(
                "settlement latency p50 / p90 / p99 / max",
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0} ms",
                    at(0.5) * 1e3,
                    at(0.9) * 1e3,
                    at(0.99) * 1e3,
                    at(1.0) * 1e3
                ),
            );
            let rate =
                |(first, last): (f64, f64)| latencies.len() as f64 / (last - first).max(1e-3);
            verdict.fact(
                "orders placed/s vs settled/s (first → last)",
                format!("{:.0} vs {:.0}", rate(placed_span), rate(settled_span)),
            );
        }
        Ok(())
    }

    /// The order ids (`aggregate_id`) of the stream's `order.placed` entries after
    /// `after` (or from the start), and how many entries there were.
    async fn stream_since(
        &mut self,
        after: Option<&str>,
    ) -> anyhow::Result<(HashSet<Uuid>, usize)> {
        let mut ids = HashSet::new();
        let mut entries = 0;
        let mut start = match after {
            Some(id) => format!("({id}"),
            None => "-".to_owned(),
        };
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(STREAM_PAGE)
                .query_async(&mut self.redis)
                .await
                .context("XRANGE on the events stream")?;
            let Some(last) = page.ids.last() else {
                return Ok((ids, entries));
            };
            start = format!("({}", last.id);
            entries += page.ids.len();
            for entry in &page.ids {
                if entry.get::<String>("type").as_deref() != Some("order.placed") {
                    continue;
                }
                if let Some(id) = entry
                    .get::<String>("aggregate_id")
                    .and_then(|s| s.parse::<Uuid>().ok())
                {
                    ids.insert(id);
                }
            }
            if page.ids.len() < STREAM_PAGE {
                return Ok((ids, entries));
            }
        }
    }
}

/// Invariant 4: replays of a 201 got the same order, with `Idempotent-Replayed: true`.
fn check_replays(recorder: &Recorder, verdict: &mut Verdict) {
    let replays = recorder.replay_outcomes();
    let mut verified = 0;
    let mut unverified = 0;
    for replay in &replays {
        match replay.status {
            200..=299 | 404 | 409 | 422 => {
                verified += 1;
                if replay.status != 201 {
                    verdict.violations.push(format!(
                        "replay of key {} (order {}) answered {}, not the stored 201",
                        replay.key, replay.expected, replay.status
                    ));
                } else if replay.got != Some(replay.expected) {
                    verdict.violations.push(format!(
                        "replay of key {} returned order {:?}, not {}",
                        replay.key, replay.got, replay.expected
                    ));
                } else if !replay.replayed_header {
                    verdict.violations.push(format!(
                        "replay of key {} (order {}) lacks `Idempotent-Replayed: true`",
                        replay.key, replay.expected
                    ));
                }
            }
            // No answer, 401, 429, 5xx: the replay never reached a verdict.
            _ => unverified += 1,
        }
    }
    verdict.fact("replays verified (same order, header set)", verified);
    verdict.fact(
        "replays without a verdict (429, 5xx, no answer)",
        unverified,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ReplayOutcome;

    fn replay(status: u16, got: Option<Uuid>, header: bool) -> ReplayOutcome {
        ReplayOutcome {
            key: "k".into(),
            expected: Uuid::from_u128(1),
            status,
            got,
            replayed_header: header,
        }
    }

    #[test]
    fn a_replay_must_return_the_same_order_with_the_header() {
        let recorder = Recorder::default();
        recorder.replayed(replay(201, Some(Uuid::from_u128(1)), true));
        recorder.replayed(replay(429, None, false));
        recorder.replayed(replay(0, None, false));
        let mut verdict = Verdict::default();
        check_replays(&recorder, &mut verdict);
        assert!(verdict.passed(), "{:?}", verdict.violations);

        recorder.replayed(replay(201, Some(Uuid::from_u128(2)), true));
        recorder.replayed(replay(201, Some(Uuid::from_u128(1)), false));
        recorder.replayed(replay(422, None, false));
        let mut verdict = Verdict::default();
        check_replays(&recorder, &mut verdict);
        assert_eq!(verdict.violations.len(), 3, "{:?}", verdict.violations);
    }
}
