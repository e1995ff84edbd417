//! shop's payments service: charges each placed order exactly once in effect through a
//! simulated provider, and publishes the outcome through its own outbox.
//!
//! The saga (docs/architecture.md, "Event streams"): orders publishes `order.placed` to
//! `shop:events:orders`; payments consumes it in the group `payments`
//! ([`jobs::order_events`]), records one `payments` row per order and writes
//! `PaymentSucceeded` / `PaymentFailed` to `payments_outbox` in the same transaction;
//! the relay publishes those to `shop:events:payments`, where orders settles the order.
//!
//! [`Application::build`] wires everything from a [`Config`];
//! [`Application::run_until_stopped`] serves until its stop signal, then stops reading
//! (entries in flight get a short grace, then stay pending for a later delivery), stops
//! the jobs and closes the pools, in the kit's order ([`shop_service::server`]).

pub mod config;
pub mod jobs;
pub mod payments;
pub mod provider;
pub mod provider_command;
pub mod routes;

use std::{future::Future, net::SocketAddr, sync::Arc};

use shop_lifecycle::{Lifecycle, ShutdownReport};
use shop_service::Server;
use sqlx::PgPool;

pub use crate::config::Config;
use crate::{payments::PaymentRepository, provider::Provider};

/// What every handler and job shares. Cheap to clone (handles and `Arc`s only).
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    /// The streams' pool: acks, claims, dead letters, the relay's publishes.
    pub redis: deadpool_redis::Pool,
    pub payments: PaymentRepository,
    /// The simulated provider; its settings change through `PUT /admin/provider`.
    pub provider: Provider,
    /// Owns every background job; its shutdown stops them all.
    pub lifecycle: Lifecycle,
}

/// The built service: bound to its port, jobs started, ready to serve.
#[derive(Debug)]
pub struct Application {
    server: Server,
    state: AppState,
}

impl Application {
    /// Builds the pools, binds `config.addr` (port 0 picks a free port) and starts the
    /// background jobs.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = shop_service::pools::pg_pool(
            "payments",
            &config.database,
            config.database.url.parse()?,
        );
        Self::build_with_pool(config, db).await
    }

    /// [`Application::build`] with a given Postgres pool (tests pass their own database).
    pub async fn build_with_pool(config: Config, db: PgPool) -> anyhow::Result<Self> {
        // Idempotent; here so that no metric recorded before the first scrape is lost.
        shop_telemetry::metrics::install();
        let redis = shop_service::pools::redis_pool_from(&config.redis)?;
        let server = Server::bind("payments", config.addr).await?;
        let settings = config.provider.settings();
        tracing::info!(
            consumes = %config.order_events_stream,
            publishes = %config.outbox.stream,
            provider = %settings,
            "payments starting"
        );
        if config.consumer.claim_idle <= config.provider.timeout {
            // A charge still running when its entry is reclaimed would run twice at once
            // (harmless, the charge is idempotent and the row unique, but wasted).
            tracing::warn!(
                claim_idle = ?config.consumer.claim_idle,
                provider_timeout = ?config.provider.timeout,
                "PAYMENTS_CLAIM_IDLE should be well above PAYMENTS_PROVIDER_TIMEOUT"
            );
        }
        let state = AppState {
            payments: PaymentRepository::new(db.clone()),
            provider: Provider::new(settings, config.provider.timeout),
            config: Arc::new(config),
            db,
            redis,
            lifecycle: Lifecycle::new(),
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

    /// The shared state (tests inspect the lifecycle and the provider through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` resolves, then shuts down in the kit's order: stop accepting
    /// and drain (up to `SHUTDOWN_DRAIN_TIMEOUT`), stop the jobs — the consumer stops
    /// reading, unfinished entries stay pending — (up to `SHUTDOWN_JOBS_TIMEOUT`, naming
    /// any that did not finish), close the pools.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<ShutdownReport> {
        let Self { server, state } = self;
        let router = routes::router(state.clone());
        let pools: Vec<Box<dyn shop_service::server::Close>> =
            vec![Box::new(state.db.clone()), Box::new(state.redis.clone())];
        server
            .run(
                router,
                state.lifecycle.clone(),
                &state.config.server,
                stop,
                pools,
            )
            .await
    }
}
