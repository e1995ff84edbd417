//! [`Application`]: builds everything from a [`Config`], binds, serves until stopped.
//!
//! The server loop is hand-written over hyper-util (rather than `axum::serve`) for two
//! things `axum::serve` does not offer: a header read timeout against slow clients
//! (slowloris), and connection tasks owned by the lifecycle supervisor, so that a
//! shutdown waits for them and names them if they miss the deadline.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    http::{HeaderValue, Method, Request},
    middleware::from_fn_with_state,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use shop_auth::{PublicKey, TokenSigner, TokenVerifier};
use shop_lifecycle::{Lifecycle, PeriodicConfig};
use sqlx::postgres::PgPoolOptions;
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;
use tower_http::{cors::CorsLayer, timeout::RequestBodyTimeoutLayer};

use crate::{
    config::Config,
    middleware::{
        authenticate::authenticate,
        client_ip::{ClientIp, PeerAddr, TrustedProxies},
        load_shed::LoadShedLayer,
        rate_limit::{Policies, RateLimitLayer, RateLimiter},
    },
    proxy::Upstream,
    routes,
    state::{AppState, Shared},
};

const DEV_PRIVATE_KEY: &str = include_str!("../../deploy/dev-keys/private.pem");
const DEV_PUBLIC_KEY: &str = include_str!("../../deploy/dev-keys/public.pem");
const DEV_PUBLIC_KEY_NEXT: &str = include_str!("../../deploy/dev-keys/public-next.pem");

/// A built gateway: bound, not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    port: u16,
}

fn signing_keys(config: &Config) -> anyhow::Result<(TokenSigner, TokenVerifier)> {
    let ttl = Duration::from_secs(config.auth_token_ttl_secs);
    let signer = match &config.auth_private_key_file {
        Some(path) => TokenSigner::from_pem_file(path, ttl)?,
        None => {
            tracing::warn!(
                "AUTH_PRIVATE_KEY_FILE is not set: signing tokens with the DEVELOPMENT key from deploy/dev-keys. Never do this in production."
            );
            TokenSigner::from_pem(DEV_PRIVATE_KEY, "deploy/dev-keys/private.pem", ttl)?
        }
    };
    let verifier = match &config.auth_public_key_file {
        Some(list) => TokenVerifier::from_pem_files(list)?,
        None => {
            tracing::warn!(
                "AUTH_PUBLIC_KEY_FILE is not set: accepting tokens of the DEVELOPMENT keys from deploy/dev-keys."
            );
            TokenVerifier::new(vec![
                PublicKey::from_pem(DEV_PUBLIC_KEY, "deploy/dev-keys/public.pem")?,
                PublicKey::from_pem(DEV_PUBLIC_KEY_NEXT, "deploy/dev-keys/public-next.pem")?,
            ])?
        }
    };
    anyhow::ensure!(
        verifier
            .keys()
            .iter()
            .any(|k| k.kid() == signer.public_key().kid()),
        "the signing key's public half is not among AUTH_PUBLIC_KEY_FILE: issued tokens would not verify"
    );
    Ok((signer, verifier))
}

fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            axum::http::HeaderName::from_static("x-request-id"),
            axum::http::HeaderName::from_static("x-trace-id"),
            axum::http::HeaderName::from_static("ratelimit"),
            axum::http::HeaderName::from_static("ratelimit-policy"),
            axum::http::header::RETRY_AFTER,
        ]);
    let layer = if origins == ["*"] {
        layer.allow_origin(tower_http::cors::Any)
    } else {
        let parsed = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("bad CORS origin {o}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        layer.allow_origin(parsed)
    };
    Ok(Some(layer))
}

impl Application {
    /// Builds the state, the router and binds `config.addr` (port 0 picks a free one).
    /// Nothing connects yet: Postgres and Redis are reached lazily, so the gateway
    /// starts (and limits locally) while they are down.
    pub async fn build(config: Config, lifecycle: Lifecycle) -> anyhow::Result<Self> {
        let (signer, verifier) = signing_keys(&config)?;
        let db = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .max_lifetime(Duration::from_secs(30 * 60))
            .idle_timeout(Duration::from_secs(5 * 60))
            .connect_lazy(&config.database_url)
            .context("DATABASE_URL")?;
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
        let limiter = RateLimiter::new(
            Policies::from_config(&config),
            redis,
            config.rate_limit_redis_prefix.clone(),
            redis_timeout,
        );
        let trusted_proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(anyhow::Error::msg)?;

        let state = AppState::new(Shared {
            orders: Upstream::from_config("orders", &config, &lifecycle)?,
            db,
            signer,
            verifier,
            hash_permits: Arc::new(Semaphore::new(config.auth_max_concurrent_hashes.max(1))),
            limiter: limiter.clone(),
            trusted_proxies: Arc::new(trusted_proxies),
            lifecycle: lifecycle.clone(),
            config: Arc::new(config),
        });

        // Idle clients are forgotten once a minute, so the limiter's memory follows the
        // number of recent clients, not every client ever seen.
        lifecycle.spawn_periodic(
            "rate_limit_gc",
            PeriodicConfig::new(Duration::from_secs(60)),
            move |_token| {
                let limiter = limiter.clone();
                async move {
                    limiter.forget_idle_clients();
                    Ok(())
                }
            },
        );

        register_event_counters("orders");
        // What reveals a leak before it is an outage: tasks, jobs, pools.
        let sampled = state.clone();
        lifecycle.spawn_periodic(
            "metrics_sampler",
            PeriodicConfig::new(
                sampled
                    .config
                    .metrics_sample_interval
                    .max(Duration::from_millis(100)),
            ),
            move |_token| {
                let state = sampled.clone();
                async move {
                    sample_metrics(&state);
                    Ok(())
                }
            },
        );

        let router = router(state.clone())?;
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

/// The whole router with its middleware, outermost first:
/// telemetry (request span from the client's `traceparent`, `x-request-id`,
/// `x-trace-id`, RED metrics) → CORS → load shedding → body read timeout →
/// identification → [rate limiting → /v1 routes] | unlimited routes.
pub fn router(state: AppState) -> anyhow::Result<Router> {
    let config = Arc::clone(&state.config);
    let limited = Router::new()
        .merge(routes::auth::router())
        .merge(routes::proxy::router())
        .layer(RateLimitLayer::new(state.limiter.clone()));
    let mut app = Router::new()
        .merge(limited)
        .merge(routes::auth::public_router())
        .merge(routes::health::router())
        .merge(routes::openapi::router())
        .fallback(|| async { crate::error::ApiError::NotFound })
        .layer(axum::extract::DefaultBodyLimit::max(
            config.body_limit_bytes,
        ))
        .layer(from_fn_with_state(state.verifier.clone(), authenticate))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(
            config.body_read_timeout_ms,
        )))
        .layer(LoadShedLayer::new(config.max_in_flight));
    if let Some(cors) = cors(&config.cors_allowed_origins)? {
        app = app.layer(cors);
    }
    // `Router::layer`, not a wrapper around the finished service: axum has put the
    // `MatchedPath` in the request by then, so spans and metrics name the route.
    Ok(app.layer(shop_telemetry::http::layer()).with_state(state))
}

/// Counters of rare events start at 0, so that dashboards and alerts see a series (a
/// `rate()` of a missing series is empty, not 0) before the first shed or retry.
fn register_event_counters(upstream: &'static str) {
    metrics::counter!("gateway_requests_shed_total").absolute(0);
    metrics::counter!("gateway_login_shed_total").absolute(0);
    for reason in ["connect", "status"] {
        metrics::counter!("gateway_upstream_retries_total", "upstream" => upstream, "reason" => reason)
            .absolute(0);
    }
    metrics::counter!("gateway_upstream_retry_budget_exhausted_total", "upstream" => upstream)
        .absolute(0);
}

/// One sample of the gauges no request updates: runtime and jobs (shared with every
/// service), and the gateway's own Postgres pool (logins only).
fn sample_metrics(state: &AppState) {
    state.lifecycle.record_metrics();
    shop_telemetry::runtime::sample();
    let size = state.db.size();
    let idle = u32::try_from(state.db.num_idle()).unwrap_or(u32::MAX);
    metrics::gauge!("db_pool_max_connections")
        .set(f64::from(state.config.database_max_connections));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
}

/// `gateway healthcheck`: GET our own /healthz; true if it answers 200.
pub async fn healthcheck(config: &Config) -> bool {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    let url = format!("http://127.0.0.1:{}/healthz", config.addr.port());
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let Ok(uri) = url.parse() else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), client.get(uri)).await,
        Ok(Ok(response)) if response.status().is_success()
    )
}
