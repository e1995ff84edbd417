//! `/healthz` (the process is alive), `/readyz` (Redis and orders are reachable) and
//! `/metrics` (Prometheus).

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(shop_telemetry::metrics::handler))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let (redis, orders) = tokio::join!(
        state.limiter.ping(PROBE_TIMEOUT),
        state.orders.probe("/healthz", PROBE_TIMEOUT)
    );
    let status = if redis && orders {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not ready" },
            "checks": { "redis": redis, "orders": orders },
            // "local" while the limiter is on its per-replica fallback.
            "rate_limiting": if state.limiter.redis_up() { "shared" } else { "local" },
        })),
    )
}
