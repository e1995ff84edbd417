//! The HTTP surface, all internal (the gateway routes nothing here): health, metrics,
//! the jobs list and the provider's settings. Telemetry is the outermost layer.

mod admin;
mod debug;
mod health;

use axum::{Router, extract::DefaultBodyLimit, http::StatusCode};
use shop_service::Problem;

use crate::AppState;

/// Largest request body (`PUT /admin/provider` is a few dozen bytes).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The whole router, with its state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(debug::router())
        .merge(admin::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Router::layer, so spans and metrics are named by the matched route.
        .layer(shop_telemetry::http::layer())
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}
