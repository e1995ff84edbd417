//! `/admin/leak-demo`: starts, shows and ends the live leak demo (`crate::leak_demo`).
//!
//! Internal, like `/debug/jobs`: the gateway forwards only `/v1/products...` and
//! `/v1/orders...`, so nothing here is reachable through it. Refused with 403
//! `leak-demo-disabled` unless the service was started with `LEAK_DEMO=1`.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::Value;

use crate::{AppState, error::ApiError, extract::AppJson, leak_demo::StartRequest};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/leak-demo", get(show).post(start).delete(end))
}

/// The demo's state, with the runtime's alive tasks and the leak alarm beside it.
fn with_runtime(state: &AppState, mut body: Value) -> Json<Value> {
    body["alive_tasks"] = shop_lifecycle::alive_tasks().into();
    body["leak_suspected"] = state.leak_alarm.is_raised().into();
    Json(body)
}

async fn show(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let body = state.leak_demo.status_checked()?;
    Ok(with_runtime(&state, body))
}

/// 202: the window is open and closes by itself after `duration_secs`.
async fn start(
    State(state): State<AppState>,
    request: Result<AppJson<StartRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // Disabled wins over a bad body: without LEAK_DEMO=1 every call is the same 403.
    state.leak_demo.ensure_enabled()?;
    let AppJson(request) = request?;
    let body = state.leak_demo.start(&state.lifecycle, &request)?;
    Ok((StatusCode::ACCEPTED, with_runtime(&state, body)).into_response())
}

/// Ends the open window early (200 with the state; also when none is open).
async fn end(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let body = state.leak_demo.stop()?;
    Ok(with_runtime(&state, body))
}
