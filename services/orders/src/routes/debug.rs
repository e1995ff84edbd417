//! `GET /debug/jobs`: the supervised background jobs by name, with their state.
//!
//! Internal: the gateway never routes to it.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/debug/jobs", get(jobs))
}

fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

async fn jobs(State(state): State<AppState>) -> Json<Value> {
    let jobs: Vec<Value> = state
        .lifecycle
        .jobs()
        .into_iter()
        .map(|job| {
            json!({
                "name": job.name,
                "state": job.state.as_str(),
                "started_at": unix(job.started_at),
                "finished_at": job.finished_at.map(unix),
                "runs": job.runs,
                "failures": job.failures,
                "last_success": job.last_success.map(unix),
                "last_error": job.last_error,
            })
        })
        .collect();
    Json(json!({
        "jobs": jobs,
        "tracked_tasks": state.lifecycle.tracked_tasks(),
        "alive_tasks": shop_lifecycle::alive_tasks(),
    }))
}
