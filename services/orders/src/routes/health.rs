//! `/healthz` (alive), `/readyz` (dependencies usable), `/metrics`, `/openapi.json`.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
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
    const CHECK: Duration = Duration::from_secs(1);
    let (postgres, redis) = tokio::join!(
        shop_service::pools::postgres_usable(&state.db, CHECK),
        shop_service::pools::redis_usable(&state.redis, CHECK),
    );
    let status = if postgres && !state.lifecycle.is_shutting_down() {
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
            "shutting_down": state.lifecycle.is_shutting_down(),
        })),
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
