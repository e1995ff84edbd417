//! The saga's test bench: the real `orders` and `payments` binaries as child processes
//! against the test's own database (`#[sqlx::test]`) and a pair of streams of its own,
//! driven over HTTP, observed in Postgres, in Redis and at `/metrics`.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use redis::{AsyncCommands as _, streams::StreamRangeReply};
use serde_json::{Value, json};
use shop_auth::TokenSigner;
pub use shop_testkit::{
    ChildGuard, PrivateRedis, TcpProxy, database_url, eventually, eventually_ok, free_port,
    redis_url, sibling_binary,
};
use sqlx::PgPool;
use uuid::Uuid;

pub const DEV_PRIVATE_KEY: &str = include_str!("../../../../deploy/dev-keys/private.pem");

/// Price of every test product; order totals are multiples of it.
pub const PRICE_CENTS: i64 = 250;

/// Long enough for a debug build on a shared two-core machine to settle a few dozen
/// orders; a bound on a wait, never a performance assertion.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Where one test's services meet: its database, its Redis, its two streams.
#[derive(Clone, Debug)]
pub struct Bench {
    pub db: PgPool,
    pub database_url: String,
    pub redis_url: String,
    /// `order.placed`, `OrderPaid`, `OrderCancelled` (orders publishes, payments reads).
    pub orders_stream: String,
    /// `PaymentSucceeded`, `PaymentFailed` (payments publishes, orders reads).
    pub payments_stream: String,
}

/// A service started as a child process; killed when dropped.
#[derive(Debug)]
pub struct Process {
    pub url: String,
    pub child: ChildGuard,
}

impl Bench {
    /// This test's bench on the shared Redis.
    pub fn new(db: &PgPool) -> Self {
        Self::with_redis(db, redis_url())
    }

    /// This test's bench on the Redis at `redis_url`.
    pub fn with_redis(db: &PgPool, redis_url: String) -> Self {
        let id = Uuid::new_v4();
        Self {
            db: db.clone(),
            database_url: database_url(db),
            redis_url,
            orders_stream: format!("test:{id}:orders"),
            payments_stream: format!("test:{id}:payments"),
        }
    }

    /// Starts `orders serve`; `env` adds to or overrides the bench's settings.
    pub async fn orders(&self, env: &[(&str, &str)], log: Stdio) -> Process {
        let port = free_port();
        let child = Command::new(sibling_binary("orders"))
            .arg("serve")
            .env("ORDERS_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDERS_MIGRATE_ON_START", "false")
            .env("EVENTS_STREAM", &self.orders_stream)
            .env("PAYMENT_EVENTS_STREAM", &self.payments_stream)
            .env("ORDERS_CONSUMER_BLOCK", "200ms")
            .env(
                "CACHE_REDIS_PREFIX",
                format!("{}:cache", self.orders_stream),
            )
            .envs(self.common_env())
            .envs(env.iter().copied())
            .stdout(log)
            .spawn()
            .expect("orders starts");
        self.started(port, child).await
    }

    /// Starts `payments serve`; `env` adds to or overrides the bench's settings.
    pub async fn payments(&self, env: &[(&str, &str)], log: Stdio) -> Process {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_payments"))
            .arg("serve")
            .env("PAYMENTS_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDER_EVENTS_STREAM", &self.orders_stream)
            .env("EVENTS_STREAM", &self.payments_stream)
            .env("PAYMENTS_CONSUMER_BLOCK", "200ms")
            .env("PAYMENTS_LATENCY", "5ms")
            .envs(self.common_env())
            .envs(env.iter().copied())
            .stdout(log)
            .spawn()
            .expect("payments starts");
        self.started(port, child).await
    }

    fn common_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("REDIS_URL", self.redis_url.clone()),
            ("RUST_LOG", "warn".into()),
            ("OUTBOX_POLL_INTERVAL", "20ms".into()),
            ("METRICS_SAMPLE_INTERVAL", "1s".into()),
            ("DATABASE_ACQUIRE_TIMEOUT", "2s".into()),
        ]
    }

    /// Waits (without blocking the runtime: a test's proxy may be serving) until the
    /// process answers `/healthz`.
    async fn started(&self, port: u16, child: std::process::Child) -> Process {
        let mut child = ChildGuard::new(child);
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        eventually(
            Duration::from_secs(30),
            &format!("{url}/healthz answers"),
            async || {
                assert!(!child.has_exited(), "the process at {url} exited");
                client
                    .get(format!("{url}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
        Process { url, child }
    }

    /// A product with `stock` units at [`PRICE_CENTS`].
    pub async fn product(&self, stock: i32) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into products (id, sku, name, price_cents, stock) values ($1, $2, 'Test product', $3, $4)",
        )
        .bind(id)
        .bind(format!("TEST-{id}"))
        .bind(PRICE_CENTS)
        .bind(stock)
        .execute(&self.db)
        .await
        .unwrap();
        id
    }

    pub async fn stock(&self, product: Uuid) -> i32 {
        sqlx::query_scalar("select stock from products where id = $1")
            .bind(product)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until none of `orders` is `placed` any more; returns each one's status and
    /// cancel reason.
    pub async fn settled(&self, orders: &[Uuid]) -> HashMap<Uuid, (String, Option<String>)> {
        eventually_ok(SETTLE_LIMIT, "every order is settled", async || {
            let rows: Vec<(Uuid, String, Option<String>)> =
                sqlx::query_as("select id, status, cancel_reason from orders where id = any($1)")
                    .bind(orders)
                    .fetch_all(&self.db)
                    .await
                    .map_err(|e| e.to_string())?;
            let placed = rows.iter().filter(|(_, s, _)| s == "placed").count();
            if rows.len() == orders.len() && placed == 0 {
                Ok(rows.into_iter().map(|(id, s, r)| (id, (s, r))).collect())
            } else {
                Err(format!("{placed} of {} still placed", orders.len()))
            }
        })
        .await
    }

    /// Asserts the saga's invariants over `orders`: one `payments` row and one payment
    /// event per order, one settlement event per order, and every order `paid`.
    pub async fn assert_each_paid_once(&self, orders: &[Uuid]) {
        let statuses = self.settled(orders).await;
        assert!(
            statuses.values().all(|(s, _)| s == "paid"),
            "every order is paid: {statuses:?}"
        );
        let per_order = |sql: &'static str| async move {
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(sql)
                .bind(orders)
                .fetch_all(&self.db)
                .await
                .unwrap();
            rows
        };
        for (what, sql) in [
            (
                "payments row",
                "select order_id, count(*) from payments where order_id = any($1) group by 1",
            ),
            (
                "payment event",
                "select aggregate_id, count(*) from payments_outbox where aggregate_id = any($1) group by 1",
            ),
            (
                "OrderPaid event",
                "select aggregate_id, count(*) from outbox where event_type = 'OrderPaid' and aggregate_id = any($1) group by 1",
            ),
        ] {
            let rows = per_order(sql).await;
            assert_eq!(rows.len(), orders.len(), "one {what} for every order");
            assert!(
                rows.iter().all(|(_, n)| *n == 1),
                "exactly one {what} per order: {rows:?}"
            );
        }
        let succeeded: i64 = sqlx::query_scalar(
            "select count(*) from payments where order_id = any($1) and status = 'succeeded' and charge_id is not null",
        )
        .bind(orders)
        .fetch_one(&self.db)
        .await
        .unwrap();
        assert_eq!(succeeded, orders.len() as i64);
    }

    /// The entries of `stream`, oldest first, each as its fields.
    pub async fn entries(&self, stream: &str) -> Vec<(String, HashMap<String, String>)> {
        let mut conn = self.redis().await;
        let reply: StreamRangeReply = conn.xrange_all(stream).await.unwrap();
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let fields = entry
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap()))
                    .collect();
                (entry.id, fields)
            })
            .collect()
    }

    /// The `type` of every entry of `stream`.
    pub async fn types(&self, stream: &str) -> Vec<String> {
        self.entries(stream)
            .await
            .into_iter()
            .filter_map(|(_, mut fields)| fields.remove("type"))
            .collect()
    }

    /// `XADD stream * field value ...`.
    pub async fn append(&self, stream: &str, fields: &[(&str, &str)]) -> String {
        let mut conn = self.redis().await;
        conn.xadd(stream, "*", fields).await.unwrap()
    }

    /// Entries of `stream` delivered to group `group` and not acknowledged.
    pub async fn pending(&self, stream: &str, group: &str) -> usize {
        let mut conn = self.redis().await;
        let reply: redis::streams::StreamPendingReply = conn.xpending(stream, group).await.unwrap();
        reply.count()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Removes the test's streams and their dead letters from Redis.
    pub async fn cleanup(&self) {
        let mut conn = self.redis().await;
        let _: Result<(), _> = conn
            .del(&[
                self.orders_stream.clone(),
                format!("{}:dead", self.orders_stream),
                self.payments_stream.clone(),
                format!("{}:dead", self.payments_stream),
            ])
            .await;
    }
}

/// Places orders at an `orders` process as a customer would (a signed token, an
/// idempotency key).
#[derive(Debug)]
pub struct Customer {
    pub user: Uuid,
    signer: TokenSigner,
    client: reqwest::Client,
}

impl Default for Customer {
    fn default() -> Self {
        Self {
            user: Uuid::new_v4(),
            signer: TokenSigner::from_pem(DEV_PRIVATE_KEY, "dev", Duration::from_secs(600))
                .unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }
}

impl Customer {
    /// `POST /v1/orders` of `quantity` units of `product`; returns the order's id.
    pub async fn place(&self, orders: &Process, product: Uuid, quantity: i64) -> Uuid {
        let response = self
            .client
            .post(format!("{}/v1/orders", orders.url))
            .bearer_auth(self.signer.issue(self.user))
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&json!({ "items": [{ "product_id": product, "quantity": quantity }] }))
            .send()
            .await
            .expect("the order is sent");
        assert_eq!(response.status(), 201, "the order is placed");
        let order: Value = response.json().await.unwrap();
        order["id"].as_str().unwrap().parse().unwrap()
    }

    /// `GET /v1/orders/{id}`.
    pub async fn order(&self, orders: &Process, id: Uuid) -> Value {
        self.client
            .get(format!("{}/v1/orders/{id}", orders.url))
            .bearer_auth(self.signer.issue(self.user))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The sum of the samples of metric `name` at `process`'s `/metrics` whose labels
/// contain every one of `labels` (`key="value"`).
pub async fn metric(process: &Process, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!("{}/metrics", process.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A log file for one process, removed when dropped.
#[derive(Debug)]
pub struct LogFile(pub PathBuf);

impl LogFile {
    pub fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("shop-{name}-{}.log", Uuid::new_v4())))
    }

    pub fn stdio(&self) -> Stdio {
        std::fs::File::create(&self.0).expect("log file").into()
    }

    /// Every JSON line written so far.
    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// JSON logs at `info` (for tests that read a process's log lines).
pub const JSON_LOGS: [(&str, &str); 2] = [("LOG_FORMAT", "json"), ("RUST_LOG", "info")];
