//! [`Application`]: builds everything from a [`Config`], binds, serves until stopped.
//!
//! The parts live elsewhere, each in the file named after it: the keys in
//! `shop_auth::keys`, the Postgres pool in [`crate::db`], the background jobs in
//! [`crate::jobs`], the router and its middleware in [`crate::routes`]. What is left here
//! is putting them together, the accept loop and the shutdown.
//!
//! The server loop is hand-written over hyper-util (rather than `axum::serve`) for two
//! things `axum::serve` does not offer: a header read timeout against slow clients
//! (slowloris), and connection tasks owned by the lifecycle supervisor, so that a
//! shutdown waits for them and names them if they miss the deadline.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, http::Request};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use shop_lifecycle::Lifecycle;
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;

use crate::{
    config::Config,
    db, jobs,
    middleware::{
        client_ip::{ClientIp, PeerAddr, TrustedProxies},
        rate_limit::{Policies, RateLimiter},
    },
    proxy::Upstream,
    routes,
    state::{AppState, Shared},
};

/// A built gateway: bound, not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
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
            Duration::from_secs(config.auth_token_ttl_secs),
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
        let listener = TcpListener::bind(state.config.addr)
            .await
            .with_context(|| format!("binding {}", state.config.addr))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            router,
            state,
            port,
        })
    }

    /// The bound port (the one picked, when `config.addr` asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the lifecycle's token is cancelled (a signal, or a test), then stops
    /// accepting, lets in-flight requests finish within the shutdown deadline, and
    /// stops every job. Returns once everything has stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            ..
        } = self;
        let lifecycle = state.lifecycle.clone();
        let config = Arc::clone(&state.config);
        let token = lifecycle.token();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
            .keep_alive(true);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let trusted = Arc::clone(&state.trusted_proxies);
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");

        loop {
            let (stream, peer) = tokio::select! {
                () = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Usually EMFILE: back off a little instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let trusted = Arc::clone(&trusted);
            let service =
                router
                    .clone()
                    .map_request(move |mut request: Request<hyper::body::Incoming>| {
                        let client = trusted.client_ip(peer.ip(), request.headers());
                        request.extensions_mut().insert(PeerAddr(peer));
                        request.extensions_mut().insert(ClientIp(client));
                        request
                    });
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .into_owned();
            let connection = graceful.watch(connection);
            drop(
                lifecycle.spawn_connection_task("http_connection", async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, error = %error, "connection ended with an error");
                    }
                }),
            );
        }

        drop(listener);
        let deadline = config.shutdown_timeout();
        tracing::info!(?deadline, "stopped accepting; draining in-flight requests");
        if tokio::time::timeout(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections were still busy at the shutdown deadline");
        }
        // The last handles on the state: dropping them drops the upstream client, whose
        // pooled connections then close and their (tracked) tasks end.
        drop(router);
        drop(state);
        let report = lifecycle.shutdown(deadline).await;
        if !report.is_clean() {
            tracing::warn!(?report, "shutdown was not clean");
        }
        Ok(())
    }
}

/// The rate limiter, its shared state in Redis. The connection is lazy and every Redis
/// call is bounded by `RATE_LIMIT_REDIS_TIMEOUT_MS`: while Redis is down or slow the
/// limiter falls back to its local state instead of making requests wait.
fn rate_limiter(config: &Config) -> anyhow::Result<RateLimiter> {
    let redis_client = redis::Client::open(config.redis_url.as_str()).context("REDIS_URL")?;
    let redis_timeout = Duration::from_millis(config.rate_limit_redis_timeout_ms);
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
