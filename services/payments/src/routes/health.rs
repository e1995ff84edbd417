//! `/healthz` (alive), `/readyz` (Postgres and Redis usable), `/metrics`.

use std::time::Duration;

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
    const CHECK: Duration = Duration::from_secs(1);
    let (postgres, redis) = tokio::join!(
        shop_service::pools::postgres_usable(&state.db, CHECK),
        shop_service::pools::redis_usable(&state.redis, CHECK),
    );
    let shutting_down = state.lifecycle.is_shutting_down();
    let status = if postgres && redis && !shutting_down {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "up" } else { "down" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "unready" },
            "postgres": word(postgres),
            "redis": word(redis),
            "shutting_down": shutting_down,
        })),
    )
}
