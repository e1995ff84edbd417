//! Integration tests of the orders service: real Postgres (one database per test, via
//! `#[sqlx::test]`), real Redis (a stream per test), real HTTP.

mod harness;

mod cache;
mod idempotency;
mod leak_demo;
mod lifecycle;
mod outbox;
mod overload;
mod placement;
mod settlement;
mod validation;
