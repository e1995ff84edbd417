//! Rate limiting: GCRA limits per client, shared by every gateway replica through
//! Redis, with a local fast path and a local fallback.
//!
//! How one request is decided ([`RateLimiter::check`]):
//! 1. **Local limiter first** (governor's keyed GCRA, same quota). It only sees this
//!    replica's share of the traffic, so when *it* says no, the shared quota is
//!    certainly exhausted too: the request is refused without a Redis round trip.
//!    That makes floods, the case where Redis load matters, cheap.
//! 2. **Local lease.** For generous policies (burst ≥ 64) the gateway takes a small
//!    batch of tokens from Redis at once and spends them locally for up to a second;
//!    tokens left when the lease expires are dropped, so the shared quota is never
//!    exceeded (it can only be under-used by a few tokens). Small policies (login: 10
//!    per minute) lease one token at a time, i.e. every request is exact.
//! 3. **Redis**: one `EVALSHA` of a GCRA script (see `redis_gcra.rs`), atomic, one
//!    round trip, with a short timeout.
//! 4. **Redis down**: the local limiter's answer stands (each replica then enforces
//!    the full quota on its own share), `gateway_ratelimit_redis_up` drops to 0 and a
//!    warning is logged once; Redis is probed again every second and the shared state
//!    resumes by itself (the kit's circuit breaker: open on one failure, one probe a
//!    second).

mod layer;
mod limiter;
mod policy;
mod redis_gcra;

pub use layer::{RateLimit, RateLimitLayer};
pub use limiter::{Decision, RateLimiter};
pub use policy::{Policies, Policy, PolicyKind};
