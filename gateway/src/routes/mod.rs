//! The gateway's routes, and [`router`], which puts them together with their middleware.
//! Each route module exposes `router()`.

pub mod auth;
pub mod health;
pub mod openapi;
pub mod proxy;
pub mod storefront;

use std::{sync::Arc, time::Duration};

use axum::{
    Router, error_handling::HandleErrorLayer, extract::DefaultBodyLimit,
    middleware::from_fn_with_state, response::Response,
};
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::{
    error::ApiError,
    middleware::{authenticate::authenticate, cors, rate_limit::RateLimitLayer},
    state::AppState,
};

/// The whole router with its middleware, outermost first:
/// telemetry (request span from the client's `traceparent`, `x-request-id`,
/// `x-trace-id`, RED metrics) → CORS → load shedding → body read timeout →
/// identification → [rate limiting → /v1 routes] | unlimited routes (health, the
/// OpenAPI document, the storefront's files and its config).
pub fn router(state: AppState) -> anyhow::Result<Router> {
    let config = Arc::clone(&state.config);
    let limited = Router::new()
        .merge(auth::router())
        .merge(proxy::router())
        .layer(RateLimitLayer::new(state.limiter.clone()));
    let mut app = Router::new()
        .merge(limited)
        .merge(auth::public_router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(storefront::router())
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn_with_state(state.verifier.clone(), authenticate))
        .layer(RequestBodyTimeoutLayer::new(config.body_read_timeout))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed_error))
                .load_shed()
                // Global: `Router::layer` applies a layer to every route separately, and
                // the cap is on the whole gateway's requests in flight, not per route.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    config.max_in_flight,
                )),
        );
    if let Some(cors) = cors::layer(&config.cors_allowed_origins)? {
        app = app.layer(cors);
    }
    // Who is calling, before anything that limits or forwards by client.
    let trusted = Arc::clone(&state.trusted_proxies);
    app = app.layer(tower::util::MapRequestLayer::new(
        move |mut request: axum::extract::Request| {
            crate::middleware::client_ip::resolve(&trusted, &mut request);
            request
        },
    ));
    // `Router::layer`, not a wrapper around the finished service: axum has put the
    // `MatchedPath` in the request by then, so spans and metrics name the route.
    Ok(app
        .layer(shop_telemetry::http::layer().access_log(config.access_log))
        .with_state(state))
}

/// Load shedding: beyond `MAX_IN_FLIGHT` requests in flight the gateway answers 503 +
/// `Retry-After` at once instead of queueing (pitfall 5: waiters would pile up without
/// bound, each holding memory and a client connection). The concurrency limit's permit
/// lives in the response future, so it is released however the request ends, including
/// when the client disconnects and the future is dropped.
async fn shed_error(error: tower::BoxError) -> Response {
    shop_service::server::shed_response(
        error,
        "gateway_requests_shed_total",
        || ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        },
        ApiError::Internal,
    )
}
