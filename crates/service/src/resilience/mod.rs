//! One backoff policy and one circuit breaker for the whole project.
//!
//! - [`backoff`]: exponential backoff with jitter, from the `backon` crate. Every retry
//!   loop (the gateway's proxy, the outbox relay, the cache invalidation listener, the
//!   stream consumers) takes its waits from it.
//! - [`breaker`]: the circuit breaker in front of each remote dependency (the gateway's
//!   upstream, orders' Redis cache). Written here, not taken from a crate: see its docs
//!   and docs/architecture.md ("Resilience: what we took and why").
//!
//! The gateway's retry *budget* is tower's `TpsBudget` (`tower::retry::budget`), used as
//! is.

pub mod backoff;
pub mod breaker;

pub use backoff::Backoff;
pub use breaker::{BreakerConfig, BreakerPermit, BreakerState, CircuitBreaker, Trip};
