//! The storefront: `GET /` (the page) and `GET /assets/{file}` (its modules, style and
//! icon), plain files embedded in the binary from `gateway/storefront/` so the
//! distroless image serves them; and `GET /v1/config`, what the page learns from the
//! gateway (the Jaeger UI's address, for the trace links).
//!
//! The files have no build step and no fingerprinted names, so every response says
//! `Cache-Control: no-cache` with an `ETag`: a browser revalidates each file and gets a
//! `304` with no body while it is unchanged. The ETag is weak because the compression
//! layer may change the bytes (gzip or brotli, by `Accept-Encoding`) but not the meaning.
//!
//! Every storefront response carries these security headers: a
//! Content-Security-Policy that allows scripts, styles and calls from this origin only
//! (no inline script, so an injected `<script>` does not run), `frame-ancestors 'none'`,
//! `nosniff` and a `Referrer-Policy`. docs/storefront.md describes the page itself.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use rust_embed::RustEmbed;
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer};

use crate::{error::ApiError, state::AppState};

/// The storefront's files, embedded at compile time (in debug builds too: the tests
/// serve what the image serves).
#[derive(RustEmbed)]
#[folder = "storefront/"]
struct Files;

/// What the page may load and from where: everything from this origin, nothing
/// inline, nothing framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`, `GET /assets/{file}` (compressed, with the security headers) and
/// `GET /v1/config`.
pub fn router() -> Router<AppState> {
    // Security headers on every storefront response: files, 304s and 404s alike.
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let files = Router::new()
        .route("/", get(index))
        .route("/assets/{*file}", get(asset))
        .layer(CompressionLayer::new())
        .layer(
            ServiceBuilder::new()
                .layer(set(
                    header::CONTENT_SECURITY_POLICY,
                    CONTENT_SECURITY_POLICY,
                ))
                .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(set(header::REFERRER_POLICY, "no-referrer"))
                .layer(set(header::X_FRAME_OPTIONS, "DENY")),
        );
    files.merge(Router::new().route("/v1/config", get(config)))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    // index.html is served at `/` only, so that the page has one address.
    if file == "index.html" {
        return ApiError::NotFound.into_response();
    }
    serve(&file, &headers)
}

/// One embedded file: 200 with its bytes, 304 if the client's `If-None-Match` has its
/// ETag, 404 (problem+json) if there is no such file.
fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(file) = Files::get(path) else {
        return ApiError::NotFound.into_response();
    };
    let etag = format!("W/\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let mut response = if if_none_match(request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = file.metadata.mimetype();
        let mut response = file.data.into_response();
        if let Ok(mime) = HeaderValue::from_str(mime) {
            response.headers_mut().insert(header::CONTENT_TYPE, mime);
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`.
fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

/// What the storefront learns from the gateway instead of a constant in the page.
#[derive(Debug, Serialize)]
struct StorefrontConfig {
    /// Base URL of the Jaeger UI; a trace is at `{jaeger_ui_url}/trace/{trace_id}`.
    jaeger_ui_url: String,
}

async fn config(State(state): State<AppState>) -> Json<StorefrontConfig> {
    Json(StorefrontConfig {
        jaeger_ui_url: state.config.jaeger_ui_url.trim_end_matches('/').to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_matches_weak_strong_lists_and_star() {
        let mut headers = HeaderMap::new();
        let etag = "W/\"abc\"";
        assert!(!if_none_match(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(if_none_match(&headers, etag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abd\""));
        assert!(!if_none_match(&headers, etag));
    }

    #[test]
    fn the_page_and_its_modules_are_embedded() {
        for file in ["index.html", "app.js", "api.js", "style.css"] {
            assert!(Files::get(file).is_some(), "{file} is embedded");
        }
    }
}
