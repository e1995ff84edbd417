//! shop's gateway: the only public entry point.
//!
//! It authenticates (issues and verifies Ed25519 JWTs), rate limits (GCRA, shared
//! through Redis, local fallback), sheds load, and proxies to orders with deadlines,
//! retries within a budget and a circuit breaker. See `docs/gateway.md`.
//!
//! Layout: [`config`] (every setting), [`startup`] ([`Application`]: build, bind,
//! serve, shut down), [`db`] (the Postgres pool), [`jobs`] (background jobs, one file
//! each), [`middleware`] (one module per middleware), [`proxy`] (the upstream client,
//! retries, breaker), [`routes`] (handlers, and the router with its middleware),
//! `gateway healthcheck` (the kit's `shop_service::healthcheck`), [`error`] (the one error enum, RFC 9457).
//! The keys come from `shop_auth::keys`.

pub mod config;
pub mod db;
pub mod error;
pub mod jobs;
pub mod middleware;
pub mod proxy;
pub mod routes;
pub mod startup;
pub mod state;

pub use config::{Cli, Command, Config};
pub use startup::Application;
