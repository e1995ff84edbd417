//! [`AppState`]: everything a request needs, cheap to clone (one reference count: axum
//! clones the state for every extractor and middleware of every request).

use std::{ops::Deref, sync::Arc};

use shop_auth::{TokenSigner, TokenVerifier};
use shop_lifecycle::Lifecycle;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::{
    config::Config, middleware::client_ip::TrustedProxies, middleware::rate_limit::RateLimiter,
    proxy::Upstream,
};

#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    /// Reads `users` (the gateway owns that table). Bounded, with an acquire timeout.
    pub db: PgPool,
    pub signer: TokenSigner,
    pub verifier: TokenVerifier,
    /// Bounds concurrent password checks (argon2id is CPU-heavy): `try_acquire`, and a
    /// 503 when none is free, so a login flood never queues without bound.
    pub hash_permits: Arc<Semaphore>,
    pub orders: Upstream,
    pub limiter: RateLimiter,
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Owns every task: password checks run through its `spawn_blocking`.
    pub lifecycle: Lifecycle,
}
