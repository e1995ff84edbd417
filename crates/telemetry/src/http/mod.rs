//! HTTP: the server layer and the client side of W3C trace-context propagation.
//!
//! Server: add [`layer()`] to the axum router (outermost). Each request gets a span named
//! `"{method} {route}"` (axum's `MatchedPath`), child of the caller's `traceparent`,
//! with OTel HTTP semantic-convention attributes; the response gets `x-trace-id` and
//! `x-request-id`; RED metrics are recorded (see [`layer`](mod@layer)).
//!
//! Add it with `Router::layer` (after the routes, so it wraps each of them): axum inserts
//! `MatchedPath` before calling a route's layers. Wrapping the finished router from the
//! outside (e.g. a `ServiceBuilder` around `into_make_service`) would see no matched
//! path and label every request `unmatched`; `route_layer` would miss 404s.
//!
//! A generated `x-request-id` is also inserted into the request headers, so handlers and
//! the gateway's proxy can forward the id the client will see.
//!
//! Client: call [`inject_context`] on the headers of every outgoing request (the
//! gateway's proxy, any other call) so the next hop continues the trace.

pub mod layer;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TraceContextExt,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use layer::{RequestTraceLayer, RequestTraceService, layer};

/// The response (and forwarded request) header carrying the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The response header carrying the W3C trace id (32 hex), to paste into Jaeger.
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Injects the current span's context (`traceparent`, `tracestate`, `baggage`) into the
/// headers of an outgoing request (W3C TraceContext + Baggage, as [`crate::init`] installs
/// globally).
pub fn inject_context(headers: &mut HeaderMap) {
    inject_context_from(&tracing::Span::current(), headers);
}

/// Like [`inject_context`], for a given span (e.g. a client span around the call).
pub fn inject_context_from(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    crate::PROPAGATOR.inject_context(&cx, &mut HeaderInjector(headers));
}

/// Extracts the caller's context (`traceparent`, `tracestate`, `baggage`) from request
/// headers; an empty context if there is none or it is malformed.
pub fn extract_context(headers: &HeaderMap) -> Context {
    crate::PROPAGATOR.extract(&HeaderExtractor(headers))
}

/// A client span for an outgoing HTTP call (`otel.kind=client`); enter it (or
/// `.instrument` the call with it), then [`inject_context_from`] it into the request.
pub fn client_span(method: &http::Method, server_address: &str, route: &str) -> tracing::Span {
    tracing::info_span!(
        target: crate::CALL_SPAN_TARGET,
        "HTTP client request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        server.address = server_address,
        url.template = route,
        http.response.status_code = tracing::field::Empty,
        // Set by callers that retry: 1 on the first resend, 2 on the second, ...
        http.request.resend_count = tracing::field::Empty,
    )
}

/// Records the response status on a [`client_span`] (5xx marks it as an error).
pub fn record_client_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// The trace id of `span` (32 lowercase hex), if it has a valid OpenTelemetry context.
pub(crate) fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Whether a client-supplied request id may be echoed: 1..=128 visible ASCII characters.
pub fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh request id: 32 random hex characters.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_short_visible_ascii() {
        assert!(is_sane_request_id(&HeaderValue::from_static("abc-123_XYZ")));
        assert!(!is_sane_request_id(&HeaderValue::from_static("")));
        assert!(!is_sane_request_id(&HeaderValue::from_static("has space")));
        assert!(!is_sane_request_id(
            &HeaderValue::from_str(&"a".repeat(129)).expect("ascii")
        ));
        assert!(is_sane_request_id(
            &HeaderValue::from_str(&"a".repeat(128)).expect("ascii")
        ));
        let generated = new_request_id();
        assert_eq!(generated.len(), 32);
        assert!(is_sane_request_id(
            &HeaderValue::from_str(&generated).expect("hex")
        ));
    }
}
