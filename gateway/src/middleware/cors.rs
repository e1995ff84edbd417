//! CORS, only when `CORS_ALLOWED_ORIGINS` is set: browsers on those origins may call the
//! API with a bearer token and an `Idempotency-Key`, and read the tracing and rate-limit
//! headers of the answers.

use anyhow::Context as _;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{Any, CorsLayer};

/// The CORS layer for `origins` (`*` alone allows any origin); `None` when no origin is
/// set, so no CORS header is ever sent. A malformed origin is an error, not ignored.
pub fn layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-trace-id"),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            header::RETRY_AFTER,
        ]);
    let layer = if origins == ["*"] {
        layer.allow_origin(Any)
    } else {
        let parsed = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("bad CORS origin {o}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        layer.allow_origin(parsed)
    };
    Ok(Some(layer))
}
