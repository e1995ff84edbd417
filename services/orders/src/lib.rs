//! shop's orders service: the product catalog and idempotent, never-oversold order
//! placement, with events leaving through a transactional outbox.
//!
//! [`Application::build`] wires everything from a [`Config`]; [`Application::run_until_stopped`]
//! serves until its stop signal, then drains in-flight requests, stops the background
//! jobs (all owned by one [`Lifecycle`]) and closes the pools.

pub mod cache;
pub mod catalog;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod extract;
pub mod jobs;
pub mod leak_alarm;
pub mod leak_demo;
pub mod leak_demo_command;
pub mod orders;
pub mod routes;
pub mod seed;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use shop_auth::TokenVerifier;
use shop_lifecycle::{Lifecycle, ShutdownReport};
use shop_service::Server;
use sqlx::PgPool;

pub use crate::config::Config;
use crate::{
    cache::ProductCache, catalog::ProductRepository, leak_alarm::LeakAlarm, leak_demo::LeakDemo,
    orders::OrderRepository,
};

/// What every handler and job shares. Cheap to clone (handles and `Arc`s only).
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: deadpool_redis::Pool,
    pub verifier: Arc<TokenVerifier>,
    pub products: ProductRepository,
    /// Product reads: moka over Redis over Postgres (docs/cache.md). Its Redis pool is
    /// closed at shutdown, after the jobs (its invalidation listener) have stopped.
    pub cache: ProductCache,
    pub orders: OrderRepository,
    /// Owns every background job; its shutdown stops them all.
    pub lifecycle: Lifecycle,
    /// The leak detector fed by the metrics sampler, and the API requests in flight.
    pub leak_alarm: LeakAlarm,
    /// The live leak demo: refused unless `LEAK_DEMO=1` (docs/leaks.md).
    pub leak_demo: LeakDemo,
}

/// Loads the token verifier from `AUTH_PUBLIC_KEY_FILE`, or the development key.
pub fn token_verifier(config: &Config) -> anyhow::Result<TokenVerifier> {
    Ok(shop_auth::keys::verifier(
        config.auth_public_key_file.as_deref(),
    )?)
}

/// The built service: bound to its port, jobs started, ready to serve.
#[derive(Debug)]
pub struct Application {
    server: Server,
    state: AppState,
}

impl Application {
    /// Connects, migrates (if configured), binds `config.addr` (port 0 picks a free
    /// port) and starts the background jobs.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::pool(&config)?;
        Self::build_with_pool(config, db).await
    }

    /// [`Application::build`] with a given Postgres pool (tests pass their own database).
    pub async fn build_with_pool(config: Config, db: PgPool) -> anyhow::Result<Self> {
        // Idempotent; here so that no metric recorded before the first scrape is lost.
        shop_telemetry::metrics::install();
        let verifier = token_verifier(&config)?;
        if config.migrate_on_start {
            db::MIGRATOR.run(&db).await.context("applying migrations")?;
        }
        let redis = events::pool(&config)?;
        let server = Server::bind("orders", config.addr).await?;
        let products = ProductRepository::new(db.clone());
        let leak_demo = LeakDemo::new(&config);
        let state = AppState {
            cache: ProductCache::new(&config, products.clone())?,
            products,
            orders: OrderRepository::new(db.clone()),
            config: Arc::new(config),
            db,
            redis,
            verifier: Arc::new(verifier),
            lifecycle: Lifecycle::new(),
            leak_alarm: LeakAlarm::new(),
            leak_demo,
        };
        jobs::start(&state);
        Ok(Self { server, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The shared state (tests inspect the lifecycle and pools through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` resolves, then shuts down in the kit's order
    /// ([`shop_service::server`]): stop accepting and drain in-flight requests (up to
    /// `SHUTDOWN_DRAIN_TIMEOUT`), stop the jobs (up to `SHUTDOWN_JOBS_TIMEOUT`, naming any
    /// that did not finish), close the pools.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<ShutdownReport> {
        let Self { server, state } = self;
        let router = routes::router(state.clone());
        let mut pools: Vec<Box<dyn shop_service::server::Close>> =
            vec![Box::new(state.db.clone()), Box::new(state.redis.clone())];
        if let Some(cache) = state.cache.redis_pool() {
            pools.push(Box::new(cache.clone()));
        }
        let report = server
            .run(
                router,
                state.lifecycle.clone(),
                &state.config.server,
                stop,
                pools,
            )
            .await?;
        if state.leak_demo.tasks_alive() > 0 {
            // Not tracked, so not waited for: that is the leak the demo shows.
            tracing::warn!(
                tasks = state.leak_demo.tasks_alive(),
                "leak demo tasks still alive at shutdown; nothing owns them, so they end \
                 only when the runtime is dropped"
            );
        }
        Ok(report)
    }
}
