//! The proxied routes: the catalog (public) and orders (token required), forwarded to
//! the orders service by [`crate::proxy::Upstream`].

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::Method,
    response::Response,
    routing::any,
};

use crate::{
    error::ApiError,
    middleware::{authenticate::Identity, client_ip::PeerAddr},
    proxy::Forwarding,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", any(catalog))
        .route("/v1/products/{*rest}", any(catalog))
        .route("/v1/orders", any(orders))
        .route("/v1/orders/{*rest}", any(orders))
}

async fn catalog(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    forward(&state, request).await
}

async fn orders(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    match request.extensions().get::<Identity>() {
        Some(Identity::User(_)) => forward(&state, request).await,
        Some(Identity::Invalid(reason)) => Err(ApiError::Unauthorized(reason)),
        _ => Err(ApiError::Unauthorized("a bearer token is required")),
    }
}

async fn forward(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let limit = state.config.max_body_bytes;
    if parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > limit)
    {
        return Err(ApiError::PayloadTooLarge);
    }
    // Buffered (bounded by the limit) so that an idempotent request can be re-sent. A
    // request without a body (most GETs) skips the read and its timeout's timer.
    let body = if has_no_body(&parts) {
        bytes::Bytes::new()
    } else {
        read_body(body, limit).await?
    };

    // Borrowed from the request's extensions: no per-request copy.
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let peer = parts
        .extensions
        .get::<PeerAddr>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
    let deadline = if parts.method == Method::POST && parts.uri.path() == "/v1/orders" {
        state.config.upstream_orders_post_timeout
    } else {
        state.config.upstream_timeout
    };
    let response = state
        .orders
        .forward(
            parts.method,
            &parts.uri,
            parts.headers,
            body,
            Forwarding {
                peer,
                peer_is_trusted_proxy: state.trusted_proxies.is_trusted(peer),
                route,
                deadline,
            },
        )
        .await?;
    Ok(response.map(Body::new))
}

/// Whether the request is known to have an empty body without reading it: `Content-Length:
/// 0`, or HTTP/1 with neither `Content-Length` nor `Transfer-Encoding` (RFC 9112 §6.3).
fn has_no_body(parts: &axum::http::request::Parts) -> bool {
    use axum::http::{Version, header};
    match parts.headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => {
            parts.version < Version::HTTP_2
                && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        }
    }
}

/// Reads the whole body, at most `limit` bytes, within the body read timeout.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let error = error.into_inner();
        if caused_by::<http_body_util::LengthLimitError>(&*error) {
            ApiError::PayloadTooLarge
        } else if caused_by::<tower_http::timeout::TimeoutError>(&*error) {
            // BODY_READ_TIMEOUT: a client too slow to send what it announced.
            ApiError::RequestTimeout
        } else {
            ApiError::BadRequest(format!("could not read the request body: {error}"))
        }
    })
}

/// Whether `error` or any error in its `source()` chain is an `E` (body errors arrive
/// wrapped by each layer the body went through).
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}
