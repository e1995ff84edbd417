//! The gateway's integration tests: one test binary (faster to link), one module per
//! area. Every test runs against real Postgres (its own database via `#[sqlx::test]`)
//! and real Redis (its own key prefix), with the gateway bound on port 0.

mod auth;
mod browser;
mod e2e;
mod helpers;
mod metrics;
mod openapi;
mod proxy;
mod rate_limit;
mod server;
mod shutdown;
mod storefront;
mod trace;
