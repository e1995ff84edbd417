//! Configuration: one typed struct, read from the command line and the environment.
//!
//! Every setting has a default that works on a developer machine (Postgres and Redis on
//! localhost), so `payments` runs with no configuration at all. Durations take humantime
//! syntax (`500ms`, `5s`, `2h`). The variables are listed in the crate's README.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use shop_service::{DatabaseConfig, RedisConfig, ServerConfig, streams::OutboxConfig};

use crate::provider::{ProviderSettings, parse_failure_rate, parse_latency};

shop_service::consumer_config!(ConsumerConfig, "PAYMENTS", "payments");

/// `payments`: charges placed orders and publishes the outcome.
#[derive(Debug, Parser)]
#[command(name = "payments", version, about, long_about = None)]
// payments publishes its own events to its own stream.
#[command(mut_arg("events_stream", |a| a.default_value("shop:events:payments")))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume order events, charge the orders, serve the internal HTTP routes (the default).
    Serve,
    /// Exit 0 when this service answers `GET /healthz` at PAYMENTS_ADDR, 1 otherwise (for container health checks).
    Healthcheck,
    /// Show or change the simulated provider of the service at PAYMENTS_ADDR (`/admin/provider`).
    Provider(ProviderArgs),
}

/// Options of `payments provider`: a client of `/admin/provider` for images without curl.
#[derive(Clone, Debug, Args)]
pub struct ProviderArgs {
    #[command(subcommand)]
    pub action: ProviderAction,
}

/// What `payments provider` does.
#[derive(Clone, Debug, Subcommand)]
pub enum ProviderAction {
    /// Show the provider's settings: `GET /admin/provider`.
    Get,
    /// Change some settings (the others keep their value): `GET`, then `PUT /admin/provider`.
    Set {
        /// Latency of each charge (humantime: `20ms`, `1s`; at most 60s).
        #[arg(long, value_parser = parse_latency)]
        latency: Option<Duration>,
        /// Share of charges that fail transiently (0.0–1.0).
        #[arg(long, value_parser = parse_failure_rate)]
        failure_rate: Option<f64>,
        /// Decline orders whose total is above this many cents.
        #[arg(long, conflicts_with = "decline_none")]
        decline_above_cents: Option<i64>,
        /// Decline nothing.
        #[arg(long)]
        decline_none: bool,
    },
}

/// The simulated payment provider's initial settings (changeable at run time through
/// `PUT /admin/provider`) and the bound on each call.
#[derive(Clone, Debug, Args)]
pub struct ProviderConfig {
    /// Latency of each charge (at most 60s).
    #[arg(long = "payments-latency", env = "PAYMENTS_LATENCY", default_value = "20ms", value_parser = parse_latency)]
    pub latency: Duration,

    /// Share of charges that fail transiently (0.0–1.0); those are retried with backoff.
    #[arg(long = "payments-failure-rate", env = "PAYMENTS_FAILURE_RATE", default_value_t = 0.0, value_parser = parse_failure_rate)]
    pub failure_rate: f64,

    /// Orders whose total is above this many cents are declined (final). Unset: none.
    #[arg(
        long = "payments-decline-above-cents",
        env = "PAYMENTS_DECLINE_ABOVE_CENTS"
    )]
    pub decline_above_cents: Option<i64>,

    /// Bound on one provider call; past it the call counts as a transient failure.
    #[arg(long = "payments-provider-timeout", env = "PAYMENTS_PROVIDER_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ProviderConfig {
    /// The settings the provider starts with.
    pub fn settings(&self) -> ProviderSettings {
        ProviderSettings {
            latency: self.latency,
            failure_rate: self.failure_rate,
            decline_above_cents: self.decline_above_cents,
        }
    }
}

/// The service's settings. `Debug` never prints secrets (the database and Redis URLs may
/// carry passwords: the kit's pieces redact them).
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address to listen on (internal routes only: health, metrics, jobs, provider).
    #[arg(long, env = "PAYMENTS_ADDR", default_value = "0.0.0.0:8082")]
    pub addr: SocketAddr,

    /// Postgres (`DATABASE_*`, shared by every service).
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Redis (`REDIS_URL`, `REDIS_POOL_SIZE`, `REDIS_TIMEOUT`): both streams.
    #[command(flatten)]
    pub redis: RedisConfig,

    /// The HTTP server and the stop (`HEADER_READ_TIMEOUT`, `SHUTDOWN_DRAIN_TIMEOUT`,
    /// `SHUTDOWN_JOBS_TIMEOUT`, `METRICS_SAMPLE_INTERVAL`).
    #[command(flatten)]
    pub server: ServerConfig,

    /// The outbox relay (`OUTBOX_POLL_INTERVAL`, `OUTBOX_BATCH_SIZE`, `EVENTS_STREAM`,
    /// `EVENTS_STREAM_MAXLEN`): payment events to `shop:events:payments`.
    #[command(flatten)]
    pub outbox: OutboxConfig,

    /// Redis stream of order events that payments charges orders from (group `payments`).
    #[arg(
        long,
        env = "ORDER_EVENTS_STREAM",
        default_value = "shop:events:orders"
    )]
    pub order_events_stream: String,

    /// The order-events consumer (`PAYMENTS_MAX_DELIVERIES`, `PAYMENTS_CLAIM_IDLE`, ...).
    #[command(flatten)]
    pub consumer: ConsumerConfig,

    /// The simulated provider (`PAYMENTS_LATENCY`, `PAYMENTS_FAILURE_RATE`,
    /// `PAYMENTS_DECLINE_ABOVE_CENTS`, `PAYMENTS_PROVIDER_TIMEOUT`).
    #[command(flatten)]
    pub provider: ProviderConfig,
}

impl Config {
    /// The configuration with every default, as if no flag and no variable were set.
    pub fn defaults() -> Self {
        Cli::parse_from(["payments"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_localhost_and_the_payments_stream() {
        let config = Config::defaults();
        assert_eq!(config.addr.port(), 8082);
        assert_eq!(config.outbox.stream, "shop:events:payments");
        assert_eq!(config.order_events_stream, "shop:events:orders");
        assert_eq!(config.consumer.max_deliveries, 5);
        assert_eq!(config.provider.latency, Duration::from_millis(20));
        assert_eq!(config.provider.decline_above_cents, None);
        assert_eq!(config.provider.timeout, Duration::from_secs(2));
    }

    #[test]
    fn an_out_of_range_failure_rate_or_latency_is_refused_at_start() {
        for args in [
            ["payments", "--payments-failure-rate", "1.5"],
            ["payments", "--payments-failure-rate", "-0.1"],
            ["payments", "--payments-failure-rate", "NaN"],
            ["payments", "--payments-latency", "2m"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn debug_output_hides_passwords_in_urls() {
        let mut config = Config::defaults();
        config.database.url = "postgres://shop:s3cret@db:5432/shop".into();
        config.redis.url = "redis://:hunter2@cache:6379".into();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
