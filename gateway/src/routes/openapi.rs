//! `GET /openapi.json`: a static OpenAPI 3.1 document of the gateway's own routes
//! (the proxied routes are described by orders' document).

use axum::{Router, http::header, response::IntoResponse, routing::get};

use crate::state::AppState;

const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
