//! Forgets the rate limiter's idle clients, so that its memory follows the number of
//! recent clients rather than every client ever seen.

use crate::middleware::rate_limit::RateLimiter;

/// One pass.
pub async fn run(limiter: RateLimiter) -> anyhow::Result<()> {
    limiter.forget_idle_clients();
    Ok(())
}
