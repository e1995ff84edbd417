//! shop's gateway: the only public entry point.
//!
//! It authenticates (issues and verifies Ed25519 JWTs), rate limits (GCRA, shared
//! through Redis, local fallback), sheds load, and proxies to orders with deadlines,
//! retries within a budget and a circuit breaker. See `docs/gateway.md`.
//!
//! Layout: [`config`] (every setting), [`startup`] ([`Application`]: build, bind,
//! serve, shut down), [`middleware`] (one module per middleware), [`proxy`] (the
//! upstream client, retries, breaker), [`routes`] (handlers), [`error`] (the one error
//! enum, RFC 9457).

pub mod config;
pub mod error;
pub mod middleware;
pub mod proxy;
pub mod routes;
pub mod startup;
pub mod state;

pub use config::{Cli, Command, Config};
pub use startup::Application;
