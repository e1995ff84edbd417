//! `/healthz` (alive), `/readyz` (Postgres and Redis usable), `/metrics`.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(shop_telemetry::metrics::handler))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when both Postgres and Redis answer: without either, payments can charge
/// nothing (it reads its work from Redis and records it in Postgres).
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    shop_service::server::readiness(&state.db, &state.redis, &state.lifecycle, true).await
}
