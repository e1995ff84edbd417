//! The HTTP surface: every route, and the middleware around them.
//!
//! Layers, outermost first: telemetry (trace context in and out, `x-trace-id`,
//! `x-request-id`, RED metrics), load shedding (in-flight cap → 503 at once), the request
//! deadline (→ 504), the body limit (→ 413). The `/v1` routes are also counted as in
//! flight for the leak alarm (`crate::leak_alarm`).

mod admin;
mod catalog;
mod debug;
mod health;
mod orders;

use std::time::Duration;

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;

use crate::{AppState, error::ApiError};

/// The header in which a caller passes its remaining time budget, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-timeout-ms";

/// The whole router, with its state.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(catalog::router())
        .merge(orders::router())
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        // Only the alarm's handle: one reference count per request, not the whole state.
        .layer(middleware::from_fn_with_state(
            state.leak_alarm.clone(),
            count_in_flight,
        ));

    Router::new()
        .merge(api)
        .merge(health::router())
        .merge(debug::router())
        .merge(admin::router())
        .fallback(not_found)
        .layer(
            ServiceBuilder::new()
                // Router::layer (not around the finished router) so spans and metrics
                // are named by the matched route.
                .layer(shop_telemetry::http::layer())
                .layer(HandleErrorLayer::new(shed_error))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    state.config.max_in_flight,
                )),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route")
}

/// Load shedding: beyond the in-flight cap the service answers 503 at once instead of
/// queueing (pitfall 5).
async fn shed_error(error: tower::BoxError) -> Response {
    shop_service::server::shed_response(
        error,
        "http_requests_shed_total",
        || ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        },
        ApiError::Internal,
    )
}

/// Counts the request as API traffic for the leak alarm until it ends (or is dropped).
async fn count_in_flight(
    State(alarm): State<crate::leak_alarm::LeakAlarm>,
    request: Request,
    next: Next,
) -> Response {
    let _in_flight = alarm.enter();
    next.run(request).await
}

/// When the request's deadline passes, as a request extension: for work that must stop
/// by itself at the deadline rather than by being dropped (order placement's one
/// statement, which the server would otherwise finish and commit).
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub tokio::time::Instant);

/// Runs the request under its deadline: the service's own limit, lowered by the
/// caller's `x-timeout-ms`. When it passes, the handler future is dropped — a
/// transaction in it is rolled back — and the caller gets 504 (pitfall 3). The
/// handler finds the deadline as a [`Deadline`] extension.
async fn deadline(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let requested = request
        .headers()
        .get(TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let budget = match requested {
        Some(requested) => requested.min(state.config.request_timeout),
        None => state.config.request_timeout,
    };
    request
        .extensions_mut()
        .insert(Deadline(tokio::time::Instant::now() + budget));
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("http_requests_deadline_exceeded_total").increment(1);
            ApiError::DeadlineExceeded.into_response()
        }
    }
}

/// `limit` query parameter: 1..=100, default 50.
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::unprocessable(
            "invalid-limit",
            "limit must be between 1 and 100",
        )),
    }
}
