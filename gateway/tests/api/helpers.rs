//! The test harness: a gateway in-process (or as a process), a programmable stub
//! upstream, test users; the shared test kit (`shop_testkit`: `eventually`, ports,
//! child-process guards, private Redis servers) re-exported.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::json;
use shop_gateway::{Application, Config};
use shop_lifecycle::Lifecycle;
pub use shop_testkit::{
    ChildGuard, PrivateRedis, database_url, eventually, eventually_ok, free_port, redis_url,
    seed_orders, sibling_binary, wait_for_port,
};
use sqlx::PgPool;
use uuid::Uuid;

/// A gateway running inside the test process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub lifecycle: Lifecycle,
    pub client: reqwest::Client,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET path` with no extra header.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// `GET path`, its body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// Logs in through this gateway and returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        login(&self.client, &self.url(""), email, password).await
    }

    /// Stops the gateway the way SIGTERM would, and waits until it has stopped.
    pub async fn stop(mut self) {
        self.lifecycle.token().cancel();
        if let Some(done) = self.done.take() {
            done.await.expect("gateway task").expect("gateway run");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.lifecycle.token().cancel();
    }
}

/// A config for a test: port 0, this test's database, a unique Redis prefix, an
/// upstream, and limits high enough not to interfere unless the test lowers them.
pub fn test_config(pool: &PgPool, orders_url: &str) -> Config {
    let mut config = Config::default_for_tests();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.database.url = database_url(pool);
    config.redis.url = redis_url();
    config.rate_limit_redis_prefix = format!("test:{}:", Uuid::new_v4());
    config.orders_url = orders_url.to_owned();
    config.rate_limit_default = "10000/s".parse().unwrap();
    config.rate_limit_login = "1000/s".parse().unwrap();
    config.rate_limit_orders = "1000/s".parse().unwrap();
    config.server.shutdown_drain_timeout = Duration::from_secs(5);
    config.server.shutdown_jobs_timeout = Duration::from_secs(5);
    config
}

/// Telemetry as `main` installs it (no exporter; logs discarded), once per test
/// process: the request span, `x-trace-id` and problem `trace_id`s need it.
pub fn init_telemetry() {
    static GUARD: std::sync::OnceLock<Option<shop_telemetry::TelemetryGuard>> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| {
        let config = shop_telemetry::Config::from_lookup("gateway-test", |_| None);
        shop_telemetry::init_with(config, std::io::sink()).ok()
    });
}

pub async fn spawn_gateway(config: Config) -> TestGateway {
    init_telemetry();
    let lifecycle = Lifecycle::new();
    let app = Application::build(config, lifecycle.clone())
        .await
        .expect("gateway builds");
    let addr: SocketAddr = format!("127.0.0.1:{}", app.port()).parse().unwrap();
    // The task that runs the gateway belongs to the harness, not to the gateway's own
    // lifecycle: the gateway's shutdown waits for its own tasks, and would wait for
    // the very task running it.
    let harness = Lifecycle::new();
    let done = harness.spawn_task("test_gateway", app.run_until_stopped());
    TestGateway {
        addr,
        lifecycle,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        done: Some(done),
    }
}

/// Logs in at the gateway at `base` (`http://host:port`) and returns the access token.
pub async fn login(client: &reqwest::Client, base: &str, email: &str, password: &str) -> String {
    let response = client
        .post(format!("{base}/v1/auth/token"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {email}");
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The seeded product with the smallest SKU.
pub async fn first_product(pool: &PgPool) -> Uuid {
    sqlx::query_scalar("select id from products order by sku limit 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Inserts `email` / `password` (argon2id, default parameters) and returns the id.
pub async fn create_user(pool: &PgPool, email: &str, password: &str) -> Uuid {
    use argon2::PasswordHasher as _;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string();
    let id = Uuid::new_v4();
    sqlx::query("insert into users (id, email, password_hash) values ($1, $2, $3)")
        .bind(id)
        .bind(email)
        .bind(hash)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// A stub of the orders service whose behaviour a test programs.
#[derive(Clone, Default)]
pub struct Stub {
    /// Requests received, all routes.
    pub hits: Arc<AtomicUsize>,
    /// `/v1/products/...` sleeps this long (ms) before answering.
    pub delay_ms: Arc<AtomicUsize>,
    /// The next N requests are answered 503.
    pub fail_next: Arc<AtomicUsize>,
    /// Orders "created" (POST /v1/orders answered 201).
    pub created: Arc<AtomicUsize>,
}

impl Stub {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn stub_echo(State(stub): State<Stub>, headers: HeaderMap) -> axum::response::Response {
    stub.hits.fetch_add(1, Ordering::SeqCst);
    if stub
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let delay = stub.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(json!({
        "x-forwarded-for": h("x-forwarded-for"),
        "x-forwarded-proto": h("x-forwarded-proto"),
        "x-request-id": h("x-request-id"),
        "traceparent": h("traceparent"),
        "x-timeout-ms": h("x-timeout-ms"),
        "authorization": h("authorization"),
        "connection": h("connection"),
        "x-custom-hop": h("x-custom-hop"),
    }))
    .into_response()
}

async fn stub_place_order(State(stub): State<Stub>) -> axum::response::Response {
    stub.hits.fetch_add(1, Ordering::SeqCst);
    if stub
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    stub.created.fetch_add(1, Ordering::SeqCst);
    (StatusCode::CREATED, Json(json!({ "id": Uuid::new_v4() }))).into_response()
}

/// Starts the stub on a free port; it stops when `lifecycle` shuts down.
pub async fn spawn_stub(lifecycle: &Lifecycle) -> (String, Stub) {
    let stub = Stub::default();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/products", get(stub_echo))
        .route("/v1/products/{id}", get(stub_echo))
        .route("/v1/orders", post(stub_place_order).get(stub_echo))
        .route("/v1/orders/{id}", get(stub_echo))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token = lifecycle.token();
    lifecycle.spawn_task("stub_upstream", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });
    (url, stub)
}

/// Seeds the test database with `orders seed` (3 products, users `user1`/`user2`) and
/// starts the real `orders serve` process; `env` adds to (or overrides) its environment.
/// Its stdout (the log) goes to `log` if given, else nowhere.
pub fn spawn_orders(pool: &PgPool, env: &[(&str, &str)]) -> (String, ChildGuard) {
    spawn_orders_logging(pool, env, Stdio::null())
}

/// [`spawn_orders`], with the process's stdout sent to `log`.
pub fn spawn_orders_logging(
    pool: &PgPool,
    env: &[(&str, &str)],
    log: impl Into<Stdio>,
) -> (String, ChildGuard) {
    let orders = sibling_binary("orders");
    let database = database_url(pool);
    seed_orders(&database, &["--products", "3", "--users", "2"]);
    let port = free_port();
    let child = Command::new(&orders)
        .arg("serve")
        .env("DATABASE_URL", &database)
        .env("ORDERS_ADDR", format!("127.0.0.1:{port}"))
        .env("ORDERS_MIGRATE_ON_START", "false")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(log)
        .spawn()
        .expect("orders starts");
    let guard = ChildGuard::new(child);
    wait_for_port(port);
    (format!("http://127.0.0.1:{port}"), guard)
}

/// Starts the real `gateway` binary against `orders_url` and this test's database, with
/// high rate limits and its own Redis prefix; `env` adds to (or overrides) that, and
/// stdout (the log) goes to `log`. Returns its port.
pub fn spawn_gateway_process(
    pool: &PgPool,
    orders_url: &str,
    env: &[(&str, &str)],
    log: impl Into<Stdio>,
) -> (u16, ChildGuard) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("ORDERS_URL", orders_url)
        .env("DATABASE_URL", database_url(pool))
        .env(
            "RATE_LIMIT_REDIS_PREFIX",
            format!("test:{}:", Uuid::new_v4()),
        )
        .env("RATE_LIMIT_DEFAULT", "10000/s")
        .env("RATE_LIMIT_LOGIN", "1000/s")
        .env("RATE_LIMIT_ORDERS", "1000/s")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(log)
        .spawn()
        .expect("the gateway binary starts");
    let guard = ChildGuard::new(child);
    wait_for_port(port);
    (port, guard)
}

/// Sends SIGTERM to `child` and waits (up to 30 s) for it to exit; true if it exited 0.
pub async fn terminate(child: &mut ChildGuard) -> bool {
    child.sigterm();
    child.exit_within(Duration::from_secs(30)).await.success()
}

/// The usual setup: a stub upstream and an in-process gateway in front of it, with
/// this test's [`test_config`] adjusted by `configure`. The returned lifecycle owns the
/// stub's server task: keep it for the whole test.
pub async fn gateway_with_stub(
    pool: &PgPool,
    configure: impl FnOnce(&mut Config),
) -> (TestGateway, Stub, Lifecycle) {
    let lifecycle = Lifecycle::new();
    let (orders, stub) = spawn_stub(&lifecycle).await;
    let mut config = test_config(pool, &orders);
    configure(&mut config);
    (spawn_gateway(config).await, stub, lifecycle)
}

/// The real services as separate processes, as in production: `orders` (seeded: 3
/// products, users `user1`/`user2`), the `gateway` binary in front of it and, when
/// asked for, `payments`. Everything stops when it is dropped.
pub struct Stack {
    /// Base URL of the gateway (`http://127.0.0.1:<port>`).
    pub gateway: String,
    _processes: Vec<ChildGuard>,
}

/// What a [`Stack`] runs: extra environment per process; `payments: Some(env)` adds the
/// payments service.
#[derive(Default)]
pub struct StackConfig<'a> {
    pub gateway_env: &'a [(&'a str, &'a str)],
    pub orders_env: &'a [(&'a str, &'a str)],
    pub payments: Option<&'a [(&'a str, &'a str)]>,
}

impl Stack {
    /// Starts the processes against this test's database; each stream of events gets
    /// a name of its own, so tests running at once never see each other's events.
    pub fn start(pool: &PgPool, config: StackConfig<'_>) -> Self {
        let stream = format!("shop:test:{}:events", Uuid::new_v4());
        let payment_stream = format!("shop:test:{}:payments", Uuid::new_v4());
        let orders_env: Vec<(&str, &str)> = [
            ("EVENTS_STREAM", stream.as_str()),
            ("PAYMENT_EVENTS_STREAM", payment_stream.as_str()),
        ]
        .into_iter()
        .chain(config.orders_env.iter().copied())
        .collect();
        let (orders, orders_process) = spawn_orders(pool, &orders_env);
        let (port, gateway_process) =
            spawn_gateway_process(pool, &orders, config.gateway_env, Stdio::null());
        let mut processes = vec![orders_process, gateway_process];
        if let Some(env) = config.payments {
            processes.push(spawn_payments(pool, &stream, &payment_stream, env));
        }
        Self {
            gateway: format!("http://127.0.0.1:{port}"),
            _processes: processes,
        }
    }
}

/// Starts the real `payments serve` process on this test's database, consuming the
/// order events of `orders_stream` and publishing payment events to `payment_stream`;
/// `env` adds to (or overrides) its environment.
pub fn spawn_payments(
    pool: &PgPool,
    orders_stream: &str,
    payment_stream: &str,
    env: &[(&str, &str)],
) -> ChildGuard {
    let port = free_port();
    let child = Command::new(sibling_binary("payments"))
        .arg("serve")
        .env("DATABASE_URL", database_url(pool))
        .env("PAYMENTS_ADDR", format!("127.0.0.1:{port}"))
        .env("ORDER_EVENTS_STREAM", orders_stream)
        .env("EVENTS_STREAM", payment_stream)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("payments starts");
    let guard = ChildGuard::new(child);
    wait_for_port(port);
    guard
}
