//! Configuration: one typed struct, read from the command line and the environment.
//!
//! Every setting has a default that works on a developer machine (Postgres and Redis on
//! localhost, the development keys), so `orders` runs with no configuration at all.
//! Durations take humantime syntax (`500ms`, `5s`, `2h`).

use std::{fmt, net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use shop_service::{
    DatabaseConfig, RedisConfig, ServerConfig,
    config::{Rename, Unit, redact},
    streams::OutboxConfig,
};

shop_service::consumer_config!(ConsumerConfig, "ORDERS", "orders");

/// `orders`: product catalog and order placement.
#[derive(Debug, Parser)]
#[command(name = "orders", version, about, long_about = None)]
// orders keeps two connections warm (placement is its hot path); the kit's default is 0.
#[command(mut_arg("database_min_connections", |a| a.default_value("2")))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and run the background jobs (the default).
    Serve,
    /// Create the database if it is missing and apply every pending migration.
    Migrate,
    /// Fill the database with demo products and users (development and load tests only; idempotent).
    Seed(SeedArgs),
    /// Exit 0 when this service answers `GET /healthz` at ORDERS_ADDR, 1 otherwise (for container health checks).
    Healthcheck,
    /// Start, show or end the live leak demo of the service at ORDERS_ADDR (needs LEAK_DEMO=1 there; docs/leaks.md).
    LeakDemo(LeakDemoArgs),
}

/// Options of `orders leak-demo`: a client of `/admin/leak-demo` for images without curl.
#[derive(Clone, Debug, Args)]
pub struct LeakDemoArgs {
    #[command(subcommand)]
    pub action: LeakDemoAction,
}

/// What `orders leak-demo` does.
#[derive(Clone, Debug, Subcommand)]
pub enum LeakDemoAction {
    /// Open a window: `POST /admin/leak-demo`.
    Start {
        /// The pitfall to switch on.
        #[arg(long, default_value = "spawn-per-request")]
        pitfall: String,
        /// Length of the window (humantime: `90s`, `10m`).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Show the demo's state: `GET /admin/leak-demo`.
    Status,
    /// End the open window early: `DELETE /admin/leak-demo`.
    Stop,
}

/// Options of `orders seed`.
#[derive(Clone, Debug, Args)]
pub struct SeedArgs {
    /// How many products (`SKU-00001` ...).
    #[arg(long, default_value_t = 100)]
    pub products: u32,
    /// How many demo users (`user{i}@shop.test` / `password{i}`).
    #[arg(long, default_value_t = 10)]
    pub users: u32,
    /// Initial stock of each new product.
    #[arg(long, default_value_t = 1000)]
    pub stock: i32,
}

/// The service's settings. `Debug` never prints secrets (the database and Redis URLs may
/// carry passwords).
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ORDERS_ADDR", default_value = "0.0.0.0:8081")]
    pub addr: SocketAddr,

    /// Postgres (`DATABASE_*`, shared by every service; docs/operations.md).
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Apply pending migrations when `serve` starts.
    #[arg(long, env = "ORDERS_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Redis (`REDIS_URL`, `REDIS_POOL_SIZE`, `REDIS_TIMEOUT`): the events stream, and
    /// the cache unless `CACHE_REDIS_URL` says otherwise.
    #[command(flatten)]
    pub redis: RedisConfig,

    /// Comma-separated PEM files of the public keys that may sign tokens. Unset: the
    /// development key from deploy/dev-keys (a warning is logged).
    #[arg(long, env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<String>,

    /// Deadline of a request when the caller sends none (`x-timeout-ms` lowers it).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Requests served at once; beyond it the service answers 503 at once (load shedding).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Largest request body, in bytes (413 beyond).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// The HTTP server and the stop (`HEADER_READ_TIMEOUT`, `SHUTDOWN_DRAIN_TIMEOUT`,
    /// `SHUTDOWN_JOBS_TIMEOUT`, `METRICS_SAMPLE_INTERVAL`).
    #[command(flatten)]
    pub server: ServerConfig,

    /// The outbox relay (`OUTBOX_POLL_INTERVAL`, `OUTBOX_BATCH_SIZE`, `EVENTS_STREAM`,
    /// `EVENTS_STREAM_MAXLEN`): order events to `shop:events:orders`.
    #[command(flatten)]
    pub outbox: OutboxConfig,

    /// Redis stream of payment events that orders settles orders from (group `orders`).
    #[arg(
        long,
        env = "PAYMENT_EVENTS_STREAM",
        default_value = "shop:events:payments"
    )]
    pub payment_events_stream: String,

    /// The payment-events consumer (`ORDERS_MAX_DELIVERIES`, `ORDERS_CLAIM_IDLE`, ...).
    #[command(flatten)]
    pub consumer: ConsumerConfig,

    /// How long idempotency keys are kept (at least 24h by contract).
    #[arg(long, env = "IDEMPOTENCY_RETENTION", default_value = "48h", value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,

    /// Product cache (docs/cache.md): `false` sends every product read to Postgres.
    #[arg(long, env = "CACHE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache_enabled: bool,

    /// Products kept in each process's in-memory cache (L1); 0 turns L1 off.
    #[arg(long, env = "CACHE_L1_CAPACITY", default_value_t = 100_000)]
    pub cache_l1_capacity: u64,

    /// Time to live of an L1 entry (jittered; never longer than the L2 value it copied).
    #[arg(long, env = "CACHE_L1_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cache_l1_ttl: Duration,

    /// Time to live of a product in Redis (L2, jittered). With the jitter, the bound on
    /// how stale a catalog read can be (docs/cache.md).
    #[arg(long, env = "CACHE_L2_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cache_l2_ttl: Duration,

    /// Time to live of "this product does not exist", in both layers (jittered).
    #[arg(long, env = "CACHE_NEGATIVE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub cache_negative_ttl: Duration,

    /// Every cache TTL is moved at random by up to ± this fraction (0.1 = ±10%).
    #[arg(long, env = "CACHE_TTL_JITTER", default_value_t = 0.1)]
    pub cache_ttl_jitter: f64,

    /// Redis URL of the cache (L2 and the invalidation channel). Unset: `REDIS_URL`.
    #[arg(long, env = "CACHE_REDIS_URL", hide_env_values = true)]
    pub cache_redis_url: Option<String>,

    /// Largest number of connections in the cache's own Redis pool.
    #[arg(long, env = "CACHE_REDIS_POOL_SIZE", default_value_t = 16)]
    pub cache_redis_pool_size: usize,

    /// Timeout of each cache Redis call (connection and command together); past it the
    /// read goes to Postgres.
    #[arg(long, env = "CACHE_REDIS_TIMEOUT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub cache_redis_timeout: Duration,

    /// Prefix of the cache's Redis keys (`{prefix}:product:{id}`).
    #[arg(long, env = "CACHE_REDIS_PREFIX", default_value = "shop:cache")]
    pub cache_redis_prefix: String,

    /// Redis pub/sub channel on which product invalidations are published.
    #[arg(
        long,
        env = "CACHE_INVALIDATION_CHANNEL",
        default_value = "shop:cache:invalidations"
    )]
    pub cache_invalidation_channel: String,

    /// Consecutive Redis failures that open the cache's breaker (Redis then skipped).
    #[arg(long, env = "CACHE_BREAKER_FAILURES", default_value_t = 3)]
    pub cache_breaker_failures: u32,

    /// How long the open breaker skips Redis before one probe request tries it again.
    #[arg(long, env = "CACHE_BREAKER_COOLDOWN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub cache_breaker_cooldown: Duration,

    /// Longest wait between two reconnection attempts of the invalidation listener.
    #[arg(long, env = "CACHE_LISTENER_MAX_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub cache_listener_max_backoff: Duration,

    /// An order that leaves a product's stock below this invalidates its cached copies
    /// (so "sold out" shows at once); smaller changes show within the TTL bound.
    #[arg(long, env = "CACHE_STOCK_INVALIDATE_BELOW", default_value_t = 10)]
    pub cache_stock_invalidate_below: i32,

    /// Allow the live leak demo (docs/leaks.md): `POST /admin/leak-demo` may switch
    /// `GET /v1/products/{id}` to a leaky variant for a bounded time. Off: the admin route
    /// answers 403 and nothing leaky is reachable. Never enable it in production.
    #[arg(long, env = "LEAK_DEMO", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub leak_demo: bool,

    /// Longest leak demo window `POST /admin/leak-demo` accepts (`duration_secs`).
    #[arg(long, env = "LEAK_DEMO_MAX_DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub leak_demo_max_duration: Duration,

    /// How long each task leaked by the demo lives (it waits on a stalled sink) before it
    /// ends on its own: the service is back to its baseline this long after the window.
    #[arg(long, env = "LEAK_DEMO_TASK_LIFETIME", default_value = "30m", value_parser = humantime::parse_duration)]
    pub leak_demo_task_lifetime: Duration,

    /// Most leaked tasks alive at once; past it requests are served without leaking
    /// (counted in `shop_leak_demo_tasks_capped_total`), so the demo cannot exhaust memory.
    #[arg(long, env = "LEAK_DEMO_MAX_TASKS", default_value_t = 100_000)]
    pub leak_demo_max_tasks: usize,
}

/// Variables orders read before the shared kit; they work for one more release, with a
/// warning naming the new one (docs/operations.md, "Configuration").
pub const LEGACY_ENV: &[Rename] = &[
    Rename::new("DB_MAX_CONNECTIONS", "DATABASE_MAX_CONNECTIONS", Unit::Same),
    Rename::new("DB_MIN_CONNECTIONS", "DATABASE_MIN_CONNECTIONS", Unit::Same),
    Rename::new("DB_ACQUIRE_TIMEOUT", "DATABASE_ACQUIRE_TIMEOUT", Unit::Same),
    Rename::new("DB_IDLE_TIMEOUT", "DATABASE_IDLE_TIMEOUT", Unit::Same),
    Rename::new("DB_MAX_LIFETIME", "DATABASE_MAX_LIFETIME", Unit::Same),
    Rename::new(
        "DB_STATEMENT_TIMEOUT",
        "DATABASE_STATEMENT_TIMEOUT",
        Unit::Same,
    ),
];

impl Config {
    /// The configuration with every default, as if no flag and no variable were set.
    pub fn defaults() -> Self {
        Cli::parse_from(["orders"]).config
    }

    /// The cache's Redis URL: `CACHE_REDIS_URL`, else `REDIS_URL`.
    pub fn cache_redis_url(&self) -> &str {
        self.cache_redis_url.as_deref().unwrap_or(&self.redis.url)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("redis", &self.redis)
            .field("auth_public_key_file", &self.auth_public_key_file)
            .field("request_timeout", &self.request_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("cache_enabled", &self.cache_enabled)
            .field("leak_demo", &self.leak_demo)
            .field(
                "cache_redis_url",
                &self.cache_redis_url.as_deref().map(redact),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_passwords_in_urls() {
        let mut config = Config::defaults();
        config.database.url = "postgres://shop:s3cret@db:5432/shop".into();
        config.redis.url = "redis://:hunter2@cache:6379".into();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://shop:***@db:5432/shop"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_point_at_localhost() {
        let config = Config::defaults();
        assert_eq!(config.addr.port(), 8081);
        assert!(config.database.url.contains("127.0.0.1:5432"));
        assert_eq!(config.database.min_connections, 2, "orders keeps two warm");
        assert_eq!(config.outbox.stream, "shop:events:orders");
        assert_eq!(config.cache_redis_url(), config.redis.url);
        assert!(!config.leak_demo, "the leak demo is off by default");
    }

    #[test]
    fn leak_demo_accepts_1_as_on() {
        for (value, on) in [("1", true), ("true", true), ("0", false), ("false", false)] {
            let cli = Cli::parse_from(["orders", "--leak-demo", value]);
            assert_eq!(cli.config.leak_demo, on, "{value}");
        }
    }
}
