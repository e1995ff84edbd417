//! Integration tests for `shop-lifecycle`: one test binary, one module per concern.
//!
//! Each test names the pitfall of `docs/leaks.md` it proves. Time is paused
//! (`start_paused`) wherever the runtime allows it, so "an hour-long job" costs nothing
//! and no assertion depends on how fast this machine is.

mod jobs;
mod metrics;
mod periodic;
mod queue;
mod shutdown;
mod spans;
