//! The kit every shop service starts from, so that a service is mostly its own logic.
//!
//! What a service takes from here, and what it adds itself:
//!
//! | concern | here | the service adds |
//! |---|---|---|
//! | configuration | [`config`]: Postgres, Redis, server/shutdown settings, one name and one duration format each, old names mapped with a warning | its own settings and its listen address |
//! | errors | [`problem::Problem`]: the one RFC 9457 renderer | its error enum, mapped to a `Problem` |
//! | start and stop | [`server::Server`]: bind, serve (header timeout, supervised connections), drain, stop jobs, close pools | its router and jobs |
//! | pools | [`pools`]: bounded Postgres and Redis pools, and the same gauges for every pool | which pools it needs |
//! | resilience | [`resilience`]: one backoff policy (backon) and one circuit breaker | where it retries and what trips its breakers |
//! | probes | [`healthcheck`]: the `healthcheck` subcommand, a real HTTP client | nothing |
//! | events | [`streams`]: the outbox relay, and the consumer-group reader (retries, dead letters, reclaiming) | its outbox table and its [`streams::Handler`] |
//!
//! Telemetry (tracing, OpenTelemetry, metrics) lives in `shop-telemetry`, task ownership in
//! `shop-lifecycle`; this crate wires them into the server's start and stop.

pub mod config;
pub mod healthcheck;
pub mod pools;
pub mod problem;
pub mod resilience;
pub mod server;
pub mod streams;

pub use config::{DatabaseConfig, LegacyEnv, RedisConfig, ServerConfig};
pub use problem::Problem;
pub use server::Server;
