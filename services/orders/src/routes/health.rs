//! `/healthz` (alive), `/readyz` (dependencies usable), `/metrics`, `/openapi.json`.

use axum::{Json, Router, extract::State, http::header, response::IntoResponse, routing::get};
use serde_json::json;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(shop_telemetry::metrics::handler))
        .route("/openapi.json", get(openapi))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when Postgres answers; Redis is reported but does not make the service unready:
/// orders keep being placed while it is down (the outbox holds their events).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    shop_service::server::readiness(&state.db, &state.redis, &state.lifecycle, false).await
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
