//! `spawn_app`: the real Application on port 0, driven over HTTP; the shared test kit
//! (`shop_testkit`: `eventually`, ports, child guards, a private Redis) re-exported.

use std::{net::SocketAddr, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_auth::TokenSigner;
use shop_lifecycle::{CancellationToken, Lifecycle, ShutdownReport};
use shop_orders::{AppState, Application, Config};
pub use shop_testkit::{
    ChildGuard, PrivateRedis, database_url, eventually, eventually_ok, free_port, redis_url,
};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const DEV_PRIVATE_KEY: &str = include_str!("../../../../deploy/dev-keys/private.pem");

/// A running orders service for one test.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    pub signer: TokenSigner,
    stop: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<ShutdownReport>>>,
    /// Owns the test's own tasks (the server): tests follow the same rule as the code.
    pub tasks: Lifecycle,
}

/// The defaults, on a free local port, with a per-test events stream.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.migrate_on_start = false;
    config.redis.url = redis_url();
    config.outbox.stream = format!("shop:test:{}:events", Uuid::new_v4());
    config.payment_events_stream = format!("shop:test:{}:payments", Uuid::new_v4());
    config.database.max_connections = 8;
    config.database.min_connections = 0;
    // The concurrency tests fire hundreds of placements at one hot row from a debug
    // build on a shared machine: they test correctness, so they wait for connections.
    // The exhaustion test sets its own short timeout.
    config.database.acquire_timeout = Duration::from_secs(20);
    config.outbox.poll_interval = Duration::from_millis(20);
    config
}

impl TestApp {
    /// Starts the service against the test's database with the default test config.
    pub async fn spawn(db: &PgPool) -> Self {
        Self::spawn_with(db, test_config()).await
    }

    /// Starts the service against the test's database with `config`.
    pub async fn spawn_with(db: &PgPool, config: Config) -> Self {
        let pool = shop_orders::db::pool_with(&config, (*db.connect_options()).clone());
        let app = Application::build_with_pool(config, pool)
            .await
            .expect("the application builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let stop = CancellationToken::new();
        let tasks = Lifecycle::new();
        let server = tasks.spawn_task(
            "orders under test",
            app.run_until_stopped(stop.clone().cancelled_owned()),
        );
        Self {
            addr,
            client: reqwest::Client::new(),
            state,
            signer: TokenSigner::from_pem(DEV_PRIVATE_KEY, "dev", Duration::from_secs(600))
                .unwrap(),
            stop,
            server: Some(server),
            tasks,
        }
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token(&self, user: Uuid) -> String {
        self.signer.issue(user)
    }

    /// POST /v1/orders with `body` as `user` under `key`.
    pub async fn place(&self, user: Uuid, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/orders"))
            .bearer_auth(self.token(user))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("the request is sent")
    }

    /// Stops the service as SIGTERM would and returns its shutdown report.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.stop.cancel();
        let report = self
            .server
            .take()
            .unwrap()
            .await
            .expect("the server task does not panic")
            .expect("the server stops cleanly");
        self.tasks.shutdown(Duration::from_secs(5)).await;
        report
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that did not call shutdown() still stops its server.
        self.stop.cancel();
    }
}

/// One line of an order body.
pub fn line(product: Uuid, quantity: i64) -> Value {
    json!({ "product_id": product, "quantity": quantity })
}

/// An order body.
pub fn order(lines: &[Value]) -> Value {
    json!({ "items": lines })
}

/// Inserts a product with `stock` units at 250 cents.
pub async fn create_product(db: &PgPool, stock: i32) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into products (id, sku, name, price_cents, stock) values ($1, $2, 'Test product', 250, $3)",
    )
    .bind(id)
    .bind(format!("TEST-{id}"))
    .bind(stock)
    .execute(db)
    .await
    .unwrap();
    id
}

pub async fn stock(db: &PgPool, product: Uuid) -> i32 {
    sqlx::query_scalar("select stock from products where id = $1")
        .bind(product)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Rows in `table` (a fixed table name from the test itself).
pub async fn count(db: &PgPool, table: &'static str) -> i64 {
    let sql = format!("select count(*) from {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(db)
        .await
        .unwrap()
}

/// Asserts a problem+json response with `status` and problem type `slug`; returns the body.
pub async fn assert_problem(response: reqwest::Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
