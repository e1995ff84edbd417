//! `GET /debug/jobs`: the supervised background jobs by name, with their state
//! (`shop_service::server::jobs_report`).
//!
//! Internal: the gateway never routes to it.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::Value;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/debug/jobs", get(jobs))
}

async fn jobs(State(state): State<AppState>) -> Json<Value> {
    Json(shop_service::server::jobs_report(&state.lifecycle))
}
