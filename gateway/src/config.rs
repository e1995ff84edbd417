//! The gateway's configuration: one typed struct, every field settable by flag or
//! environment variable, with defaults that work on a developer machine.
//!
//! `gateway --help` lists every option with its variable and default; docs/gateway.md
//! explains them. Secrets (the database URL may carry a password) never appear in
//! `Debug` output.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand};
use shop_service::{
    DatabaseConfig, RedisConfig, ServerConfig,
    config::{Rename, Unit},
};

/// The command line: `gateway [serve]` or `gateway healthcheck`.
#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "shop's public entry point: auth, rate limiting, a resilient proxy to orders"
)]
// The gateway's pool serves logins only: smaller, and a login may wait a little longer.
#[command(mut_arg("database_max_connections", |a| a.default_value("8")))]
#[command(mut_arg("database_acquire_timeout", |a| a.default_value("2s")))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// GET this gateway's own /healthz (at GATEWAY_ADDR's port on 127.0.0.1); exit 0 if
    /// it answers 200, else 1. For container health checks.
    Healthcheck,
}

/// Every setting of the gateway.
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,

    /// Base URL of the orders service (the upstream).
    #[arg(long, env = "ORDERS_URL", default_value = "http://127.0.0.1:8081")]
    pub orders_url: String,

    /// Postgres (`DATABASE_*`, shared by every service; the gateway reads `users`).
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Redis (`REDIS_URL`: the shared rate-limit state; the limiter multiplexes one
    /// connection, so `REDIS_POOL_SIZE` is not used by the gateway).
    #[command(flatten)]
    pub redis: RedisConfig,

    /// PEM file of the Ed25519 private key that signs tokens. Unset: the development key
    /// (a loud warning is logged).
    #[arg(long, env = "AUTH_PRIVATE_KEY_FILE")]
    pub auth_private_key_file: Option<PathBuf>,

    /// Comma-separated PEM files of the public keys accepted (several during a key
    /// rotation). Unset: the development keys (current and next).
    #[arg(long, env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<String>,

    /// Lifetime of issued access tokens.
    #[arg(long, env = "AUTH_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub auth_token_ttl: Duration,

    /// Password checks (argon2id) allowed to run at once; beyond it logins get 503.
    #[arg(long, env = "AUTH_MAX_CONCURRENT_HASHES", default_value_t = 4)]
    pub auth_max_concurrent_hashes: usize,

    /// Login attempts per client IP (`N/s`, `N/m` or `N/h`).
    #[arg(long, env = "RATE_LIMIT_LOGIN", default_value = "10/m")]
    pub rate_limit_login: Rate,
    /// Burst of the login policy (default: N).
    #[arg(long, env = "RATE_LIMIT_LOGIN_BURST")]
    pub rate_limit_login_burst: Option<u32>,

    /// Order placements (POST /v1/orders) per user.
    #[arg(long, env = "RATE_LIMIT_ORDERS", default_value = "60/m")]
    pub rate_limit_orders: Rate,
    /// Burst of the orders policy (default: N).
    #[arg(long, env = "RATE_LIMIT_ORDERS_BURST")]
    pub rate_limit_orders_burst: Option<u32>,

    /// Every other /v1 request, per client (user id if authenticated, else IP).
    #[arg(long, env = "RATE_LIMIT_DEFAULT", default_value = "100/s")]
    pub rate_limit_default: Rate,
    /// Burst of the default policy (default: N).
    #[arg(long, env = "RATE_LIMIT_DEFAULT_BURST")]
    pub rate_limit_default_burst: Option<u32>,

    /// Prefix of the rate-limit keys in Redis (tests give each test its own).
    #[arg(
        long,
        env = "RATE_LIMIT_REDIS_PREFIX",
        default_value = "shop:ratelimit:"
    )]
    pub rate_limit_redis_prefix: String,

    /// Timeout of one rate-limit round trip to Redis; beyond it the local
    /// limiter decides.
    #[arg(long, env = "RATE_LIMIT_REDIS_TIMEOUT", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub rate_limit_redis_timeout: Duration,

    /// Comma-separated IPs or CIDRs of proxies whose `X-Forwarded-For` is believed.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        default_value = "",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Total deadline of a proxied request (including retries).
    #[arg(long, env = "UPSTREAM_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// Total deadline of POST /v1/orders.
    #[arg(long, env = "UPSTREAM_ORDERS_POST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub upstream_orders_post_timeout: Duration,
    /// TCP connect timeout to orders.
    #[arg(long, env = "UPSTREAM_CONNECT_TIMEOUT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Idle connections kept per upstream host.
    #[arg(long, env = "UPSTREAM_POOL_MAX_IDLE", default_value_t = 128)]
    pub upstream_pool_max_idle: usize,

    /// Attempts per request at most (1 = no retry).
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 3)]
    pub retry_max_attempts: u32,
    /// First wait of the retry backoff (the kit's policy: doubling, with jitter).
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "25ms", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Retries allowed, as a percentage of recent requests (global budget).
    #[arg(long, env = "RETRY_BUDGET_PERCENT", default_value_t = 10.0)]
    pub retry_budget_percent: f32,
    /// Retries always allowed per second on top of the percentage.
    #[arg(long, env = "RETRY_BUDGET_MIN_PER_SEC", default_value_t = 5)]
    pub retry_budget_min_per_sec: u32,

    /// Failure rate (0..1) over the window that opens the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURE_RATE", default_value_t = 0.5)]
    pub breaker_failure_rate: f64,
    /// Requests needed in the window before the breaker may open.
    #[arg(long, env = "BREAKER_MIN_REQUESTS", default_value_t = 20)]
    pub breaker_min_requests: u32,
    /// Length of the breaker's sliding window.
    #[arg(long, env = "BREAKER_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub breaker_window: Duration,
    /// How long the breaker stays open before probing.
    #[arg(long, env = "BREAKER_OPEN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub breaker_open: Duration,
    /// Probes let through while half-open; all must succeed to close.
    #[arg(long, env = "BREAKER_HALF_OPEN_PROBES", default_value_t = 3)]
    pub breaker_half_open_probes: u32,

    /// Requests in flight at most; beyond it 503 at once (load shedding).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Time a client has to send its request body.
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,
    /// Comma-separated origins allowed by CORS (`*` for any; empty: CORS off).
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        default_value = "",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
    /// Base URL of the Jaeger UI: the storefront links every API call's `x-trace-id`
    /// to `{JAEGER_UI_URL}/trace/{id}` (learned from `GET /v1/config`).
    #[arg(long, env = "JAEGER_UI_URL", default_value = "http://localhost:16686")]
    pub jaeger_ui_url: String,
    /// One JSON line per request (method, route, status, duration, bytes, user id,
    /// request id, trace id), target `access`, like nginx's access log; `false`: off.
    #[arg(long, env = "ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// The HTTP server and the stop (`HEADER_READ_TIMEOUT`, `SHUTDOWN_DRAIN_TIMEOUT`,
    /// `SHUTDOWN_JOBS_TIMEOUT`, `METRICS_SAMPLE_INTERVAL`).
    #[command(flatten)]
    pub server: ServerConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry credentials: print only that they are set.
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("orders_url", &self.orders_url)
            .field("database", &self.database)
            .field("redis", &self.redis)
            .field("auth_private_key_file", &self.auth_private_key_file)
            .field("auth_public_key_file", &self.auth_public_key_file)
            .field("rate_limit_login", &self.rate_limit_login)
            .field("rate_limit_orders", &self.rate_limit_orders)
            .field("rate_limit_default", &self.rate_limit_default)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// Variables the gateway read before the shared kit; they work for one more release,
/// with a warning naming the new one (docs/operations.md, "Configuration").
pub const LEGACY_ENV: &[Rename] = &[
    Rename::new(
        "HEADER_READ_TIMEOUT_MS",
        "HEADER_READ_TIMEOUT",
        Unit::Millis,
    ),
    Rename::new(
        "SHUTDOWN_TIMEOUT_MS",
        "SHUTDOWN_DRAIN_TIMEOUT",
        Unit::Millis,
    ),
    Rename::new("SHUTDOWN_TIMEOUT_MS", "SHUTDOWN_JOBS_TIMEOUT", Unit::Millis),
    Rename::new("AUTH_TOKEN_TTL_SECS", "AUTH_TOKEN_TTL", Unit::Secs),
    Rename::new(
        "RATE_LIMIT_REDIS_TIMEOUT_MS",
        "RATE_LIMIT_REDIS_TIMEOUT",
        Unit::Millis,
    ),
    Rename::new("UPSTREAM_TIMEOUT_MS", "UPSTREAM_TIMEOUT", Unit::Millis),
    Rename::new(
        "UPSTREAM_ORDERS_POST_TIMEOUT_MS",
        "UPSTREAM_ORDERS_POST_TIMEOUT",
        Unit::Millis,
    ),
    Rename::new(
        "UPSTREAM_CONNECT_TIMEOUT_MS",
        "UPSTREAM_CONNECT_TIMEOUT",
        Unit::Millis,
    ),
    Rename::new("RETRY_BASE_DELAY_MS", "RETRY_BASE_DELAY", Unit::Millis),
    Rename::new("BREAKER_WINDOW_MS", "BREAKER_WINDOW", Unit::Millis),
    Rename::new("BREAKER_OPEN_MS", "BREAKER_OPEN", Unit::Millis),
    Rename::new("BODY_READ_TIMEOUT_MS", "BODY_READ_TIMEOUT", Unit::Millis),
    Rename::new("BODY_LIMIT_BYTES", "MAX_BODY_BYTES", Unit::Same),
];

impl Config {
    /// The defaults, as if no flag and no variable were set (tests start from this).
    pub fn default_for_tests() -> Self {
        Cli::parse_from(["gateway"]).config
    }
}

/// A rate: `N/s`, `N/m` or `N/h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not N/s, N/m or N/h"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a positive integer"))?;
        if count == 0 {
            return Err("a rate needs at least 1 request".into());
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("unknown unit `{other}`: use s, m or h")),
        };
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_all_three_units_and_reject_nonsense() {
        assert_eq!("10/m".parse::<Rate>().unwrap().per, Duration::from_secs(60));
        assert_eq!("5/s".parse::<Rate>().unwrap().count, 5);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10/d".parse::<Rate>().is_err());
        assert!("ten".parse::<Rate>().is_err());
    }

    #[test]
    fn debug_output_never_shows_the_connection_urls() {
        let mut config = Config::default_for_tests();
        config.database.url = "postgres://user:hunter2@db/shop".into();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
