//! [`Application`]: builds everything from a [`Config`], binds, serves until stopped.
//!
//! The parts live elsewhere, each in the file named after it: the keys in
//! `shop_auth::keys`, the Postgres pool in [`crate::db`], the background jobs in
//! [`crate::jobs`], the router and its middleware in [`crate::routes`]. What is left here
//! is putting them together, the accept loop and the shutdown.
//!
//! Binding, serving (header read timeout, supervised connection tasks), draining and
//! stopping are the kit's [`shop_service::Server`], as in every service.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use shop_lifecycle::Lifecycle;
use shop_service::Server;
use tokio::sync::Semaphore;

use crate::{
    config::Config,
    db, jobs,
    middleware::{
        client_ip::TrustedProxies,
        rate_limit::{Policies, RateLimiter},
    },
    proxy::Upstream,
    routes,
    state::{AppState, Shared},
};

/// A built gateway: bound, not yet serving.
#[derive(Debug)]
pub struct Application {
    server: Server,
    router: Router,
    state: AppState,
    port: u16,
}

impl Application {
    /// Builds the state, the router and binds `config.addr` (port 0 picks a free one).
    /// Nothing connects yet: Postgres and Redis are reached lazily, so the gateway
    /// starts (and limits locally) while they are down.
    pub async fn build(config: Config, lifecycle: Lifecycle) -> anyhow::Result<Self> {
        let (signer, verifier) = shop_auth::keys::signer_and_verifier(
            config.auth_private_key_file.as_deref(),
            config.auth_public_key_file.as_deref(),
            config.auth_token_ttl,
        )?;
        let db = db::pool(&config)?;
        let limiter = rate_limiter(&config)?;
        let trusted_proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(anyhow::Error::msg)?;

        let state = AppState::new(Shared {
            orders: Upstream::from_config("orders", &config, &lifecycle)?,
            db,
            signer,
            verifier,
            hash_permits: Arc::new(Semaphore::new(config.auth_max_concurrent_hashes.max(1))),
            limiter,
            trusted_proxies: Arc::new(trusted_proxies),
            lifecycle: lifecycle.clone(),
            config: Arc::new(config),
        });

        jobs::start(&state, &lifecycle);

        let router = routes::router(state.clone())?;
        let server = Server::bind("gateway", state.config.addr).await?;
        let port = server.local_addr()?.port();
        Ok(Self {
            server,
            router,
            state,
            port,
        })
    }

    /// The bound port (the one picked, when `config.addr` asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the lifecycle's token is cancelled (a signal, or a test), then shuts
    /// down in the kit's order ([`shop_service::server`]): stop accepting, drain
    /// in-flight requests, stop every job, close the pool. Returns once everything has
    /// stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            router,
            state,
            ..
        } = self;
        let lifecycle = state.lifecycle.clone();
        let config = Arc::clone(&state.config);
        let pools: Vec<Box<dyn shop_service::server::Close>> = vec![Box::new(state.db.clone())];
        // The router holds the last handles on the state: the server drops it after the
        // drain, which drops the upstream client, whose pooled connections then close and
        // their (tracked) tasks end before the jobs' deadline.
        drop(state);
        server
            .run(
                router,
                lifecycle,
                &config.server,
                std::future::pending(),
                pools,
            )
            .await?;
        Ok(())
    }
}

/// The rate limiter, its shared state in Redis. The connection is lazy and every Redis
/// call is bounded by `RATE_LIMIT_REDIS_TIMEOUT`: while Redis is down or slow the
/// limiter falls back to its local state instead of making requests wait.
fn rate_limiter(config: &Config) -> anyhow::Result<RateLimiter> {
    let redis_client = redis::Client::open(config.redis.url.as_str()).context("REDIS_URL")?;
    let redis_timeout = config.rate_limit_redis_timeout;
    let redis = redis::aio::ConnectionManager::new_lazy_with_config(
        redis_client,
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis_timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(redis_timeout))
            .set_number_of_retries(1),
    )
    .context("redis connection manager")?;
    Ok(RateLimiter::new(
        Policies::from_config(config),
        redis,
        config.rate_limit_redis_prefix.clone(),
        redis_timeout,
    ))
}
