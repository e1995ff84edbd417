//! The server-side request layer: span, propagation, response headers, RED metrics.
//!
//! Metrics (Prometheus names):
//! - `http_requests_total{route,method,status}` counter;
//! - `http_request_duration_seconds{route,method}` histogram;
//! - `http_requests_in_flight{route}` gauge, decremented by a drop guard, so a request
//!   whose future is dropped (client gone, timeout) is not counted forever.
//!
//! `route` is axum's `MatchedPath` (the template, e.g. `/v1/orders/{id}`) or `unmatched`,
//! never the raw path: label cardinality stays bounded.
//!
//! With [`RequestTraceLayer::access_log`] on, each request also writes one INFO event
//! with target `access` when its response is ready, like nginx's access log: `method`,
//! `route`, `path`, `status`, `duration_ms`, `bytes` (the body's exact size when known),
//! `user_id` (when a handler put an [`AccessUser`] in the response extensions),
//! `request_id`, and, from the request span, `trace_id`. It goes through the same
//! non-blocking writer as every log line (docs/telemetry.md, "Log lines").

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::extract::MatchedPath;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    REQUEST_ID, TRACE_ID, extract_context, is_sane_request_id, new_request_id, trace_id_of,
};

/// The `route` label (and `http.route`) of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The request layer; add it to the router with `.layer(shop_telemetry::http::layer())`.
pub fn layer() -> RequestTraceLayer {
    RequestTraceLayer::new()
}

/// A [`tower::Layer`] producing [`RequestTraceService`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTraceLayer {
    access_log: bool,
}

impl RequestTraceLayer {
    /// The layer, without access log.
    pub const fn new() -> Self {
        Self { access_log: false }
    }

    /// Writes one access log line per request (see the [module docs](self)).
    #[must_use]
    pub const fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }
}

impl<S> Layer<S> for RequestTraceLayer {
    type Service = RequestTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTraceService {
            inner,
            access_log: self.access_log,
        }
    }
}

/// The authenticated caller, for the access log: a handler or middleware that knows
/// who called puts it in the response's extensions (a `Copy` id: formatted only when
/// the line is written).
#[derive(Clone, Copy, Debug)]
pub struct AccessUser(pub uuid::Uuid);

/// Wraps each request of `S` in a server span; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RequestTraceService<S> {
    inner: S,
    access_log: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTraceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: http_body::Body + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        // One shared copy of the route for the span, the metric labels and the in-flight
        // guard (label values clone the `Arc`, not the string).
        let route: Arc<str> = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED_ROUTE, |p| p.as_str())
            .into();
        let request_id = match req.headers().get(&REQUEST_ID) {
            Some(v) if is_sane_request_id(v) => v.clone(),
            _ => {
                let generated =
                    HeaderValue::from_str(&new_request_id()).expect("hex is a valid header value");
                // Handlers and the proxy forward the id we answer with.
                req.headers_mut().insert(REQUEST_ID, generated.clone());
                generated
            }
        };
        let span_name = if &*route == UNMATCHED_ROUTE {
            method.to_string()
        } else {
            format!("{method} {route}")
        };
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = span_name,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            http.route = &*route,
            url.path = req.uri().path(),
            http.response.status_code = Empty,
            request_id = request_id.to_str().unwrap_or_default(),
            trace_id = Empty,
        );
        // Must precede anything that starts the OTel span (reading its context does).
        let _ = span.set_parent(extract_context(req.headers()));
        let trace_id = trace_id_of(&span);
        if let Some(id) = &trace_id
            && crate::trace_id_field_wanted()
        {
            span.record("trace_id", tracing::field::display(id));
        }

        let in_flight = InFlight::enter(Arc::clone(&route));
        // The access log's path, taken before the request moves on (only when logged).
        let path = self.access_log.then(|| req.uri().path().to_owned());
        let response = span.in_scope(|| self.inner.call(req));
        let method = method_label(&method);
        Box::pin(
            async move {
                let _in_flight = in_flight;
                let result = response.await;
                let elapsed = start.elapsed().as_secs_f64();
                let span = tracing::Span::current();
                if let Ok(response) = &result {
                    let status = response.status();
                    span.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                    metrics::counter!(
                        "http_requests_total",
                        "route" => Arc::clone(&route),
                        "method" => method.clone(),
                        "status" => status.as_str().to_owned(),
                    )
                    .increment(1);
                    if let Some(path) = &path {
                        let user = response.extensions().get::<AccessUser>();
                        tracing::info!(
                            target: "access",
                            method = &*method,
                            route = &*route,
                            path = path.as_str(),
                            status = status.as_u16(),
                            duration_ms = elapsed * 1e3,
                            bytes = response.body().size_hint().exact(),
                            user_id = user.map(|u| tracing::field::display(u.0)),
                            request_id = request_id.to_str().unwrap_or_default(),
                            "access"
                        );
                    } else {
                        tracing::debug!(
                            status = status.as_u16(),
                            elapsed_s = elapsed,
                            "request completed"
                        );
                    }
                }
                metrics::histogram!(
                    "http_request_duration_seconds",
                    "route" => route,
                    "method" => method,
                )
                .record(elapsed);
                result.map(|mut response| {
                    let headers = response.headers_mut();
                    headers.insert(REQUEST_ID, request_id);
                    if let Some(value) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                        headers.insert(TRACE_ID, value);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
}

/// Holds one `http_requests_in_flight{route}` until dropped (also when the request
/// future is dropped before completion).
struct InFlight {
    route: Arc<str>,
}

impl InFlight {
    fn enter(route: Arc<str>) -> Self {
        metrics::gauge!("http_requests_in_flight", "route" => Arc::clone(&route)).increment(1.0);
        Self { route }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight", "route" => Arc::clone(&self.route))
            .decrement(1.0);
    }
}

/// The `method` label: a static string for the standard methods (no allocation per
/// request), the method's own text for an extension method.
fn method_label(method: &http::Method) -> metrics::SharedString {
    use http::Method;
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return metrics::SharedString::from_owned(method.as_str().to_owned()),
    };
    metrics::SharedString::const_str(name)
}
