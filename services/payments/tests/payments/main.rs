//! Integration tests of the payments service and of the saga it forms with orders: real
//! `orders` and `payments` processes (and the `gateway` for the trace), real Postgres
//! (one database per test), real Redis (streams of each test's own), real HTTP.
//!
//! The `orders` and `gateway` binaries must be built first (`cargo build -p shop-orders
//! -p shop-gateway`, or run the workspace's tests).

mod harness;

mod admin;
mod crash;
mod outage;
mod poison;
mod saga;
mod shutdown;
mod trace;
