//! `GET /openapi.json`: the whole public API as one static OpenAPI 3.1 document: the
//! gateway's own routes and every route it forwards to orders, each with every status it
//! can answer (the gateway's own 408/413/429/502/503/504 included) and every limit.
//! A test holds it to orders' own document (every orders route is in it) and another
//! fuzzes a live gateway with it (schemathesis, all checks, zero failures).

use axum::{Router, http::header, response::IntoResponse, routing::get};

use crate::state::AppState;

const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
