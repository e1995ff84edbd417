//! Request ids and trace ids: taken from the request when present and sane, generated
//! otherwise, echoed as `x-request-id` and `x-trace-id` on every response, and kept in
//! a task-local so that errors (problem+json `trace_id`) and the proxy (`traceparent`
//! upstream) can read them without threading them through every signature.
//!
//! When the telemetry crate gains OTLP tracing, its layer goes outside this one and the
//! trace id becomes the span's; until then it is the incoming `traceparent`'s trace id
//! or a fresh random one.

use std::fmt;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument as _;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-trace-id`.
pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
/// W3C `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A W3C trace id: 32 lowercase hex digits, not all zero.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    pub fn random() -> Self {
        // A zero id is invalid in W3C trace context; a random u128 is zero with
        // probability 2^-128, so `| 1` costs nothing and removes the case.
        Self(format!("{:032x}", rand::random::<u128>() | 1))
    }

    /// The trace id of a `traceparent` header (`00-<trace>-<span>-<flags>`), if valid.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && hex(span, 16)
            && hex(flags, 2);
        valid.then(|| Self(trace.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `traceparent` for a hop out of the gateway: this trace, a fresh span id.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{:016x}-01", self.0, rand::random::<u64>() | 1)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request's ids, in the request extensions for handlers.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: HeaderValue,
    pub trace_id: TraceId,
}

tokio::task_local! {
    static TRACE_ID: TraceId;
}

/// The trace id of the request being handled, if called inside one.
pub fn current_trace_id() -> Option<TraceId> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// A request id is kept if it is short and printable; anything else is replaced, so
/// a client cannot inject junk into logs or upstream headers.
fn sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// The middleware: sets up ids, a span carrying them, and the response headers.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| sane_request_id(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        });
    let trace_id = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceId::from_traceparent)
        .unwrap_or_else(TraceId::random);
    request.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        trace_id: trace_id.clone(),
    });

    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = %trace_id,
        request_id = ?request_id,
    );
    let trace_header =
        HeaderValue::from_str(trace_id.as_str()).expect("hex is a valid header value");
    let mut response = TRACE_ID
        .scope(trace_id, next.run(request))
        .instrument(span)
        .await;
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), request_id);
    headers.insert(X_TRACE_ID.clone(), trace_header);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_gives_its_trace_id_and_junk_gives_none() {
        let id =
            TraceId::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .unwrap();
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            id.child_traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(
            TraceId::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(TraceId::from_traceparent("garbage").is_none());
        assert_eq!(TraceId::random().as_str().len(), 32);
    }
}
