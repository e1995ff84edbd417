//! [`Problem`]: the one RFC 9457 `application/problem+json` renderer of every service.
//!
//! A service keeps its own error enum (what can go wrong there) and maps each error to a
//! `Problem`; the document's shape and its headers are decided here, once:
//!
//! - body `{"type":"/problems/<slug>","title","status","detail","trace_id", ...extensions}`,
//!   `trace_id` being the current request's (the one the client sees in `x-trace-id`);
//! - `Retry-After` in whole seconds, **rounded up**, at least 1 (a client told "0" retries
//!   at once);
//! - `WWW-Authenticate: Bearer realm="shop"` on every 401 (RFC 9110 §11.6.1).

use std::{borrow::Cow, time::Duration};

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

/// The `WWW-Authenticate` challenge of every 401.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"shop\"";

/// One problem document and the headers that go with it.
#[derive(Clone, Debug)]
pub struct Problem {
    status: StatusCode,
    slug: Cow<'static, str>,
    title: Cow<'static, str>,
    detail: String,
    trace_id: Option<String>,
    retry_after: Option<Duration>,
    extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of type `/problems/<slug>`, titled with the status's reason phrase and
    /// carrying the current trace id.
    pub fn new(
        status: StatusCode,
        slug: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug: slug.into(),
            title: Cow::Borrowed(status.canonical_reason().unwrap_or("Error")),
            detail: detail.into(),
            trace_id: shop_telemetry::current_trace_id(),
            retry_after: None,
            extensions: Map::new(),
        }
    }

    /// A title of the service's own instead of the reason phrase.
    pub fn with_title(mut self, title: impl Into<Cow<'static, str>>) -> Self {
        self.title = title.into();
        self
    }

    /// Sends `Retry-After` (whole seconds, rounded up, at least 1).
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// An extension member (`product_ids`, ...).
    pub fn with_extension(mut self, name: &str, value: Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// The document.
    pub fn body(&self) -> Value {
        let mut body = Map::with_capacity(5 + self.extensions.len());
        body.insert(
            "type".into(),
            Value::String(format!("/problems/{}", self.slug)),
        );
        body.insert(
            "title".into(),
            Value::String(self.title.clone().into_owned()),
        );
        body.insert("status".into(), Value::from(self.status.as_u16()));
        body.insert("detail".into(), Value::String(self.detail.clone()));
        body.insert(
            "trace_id".into(),
            self.trace_id.clone().map_or(Value::Null, Value::String),
        );
        body.extend(self.extensions.clone());
        Value::Object(body)
    }

    /// `Retry-After`'s value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(after: Duration) -> u64 {
        (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
    }
}

/// Renders an already built problem document (a stored answer replayed as it was).
pub fn response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(BEARER_CHALLENGE),
        );
    }
    response
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = response(self.status, self.body());
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(Self::retry_after_secs(after)),
            );
        }
        response
    }
}

/// A JSON body rejected by axum's `Json` extractor, as a problem: 400 `malformed-json`
/// (syntax), 415 `unsupported-media-type` (not `application/json`), 422 `invalid-body`
/// (valid JSON, wrong shape), 413 `payload-too-large`, else 400 `unreadable-body`.
pub fn json_rejection(rejection: &axum::extract::rejection::JsonRejection) -> Problem {
    use axum::extract::rejection::JsonRejection;
    match rejection {
        JsonRejection::JsonDataError(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            e.body_text(),
        ),
        JsonRejection::JsonSyntaxError(e) => {
            Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the body must be JSON, with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the request body is too large",
        ),
        other => Problem::new(
            StatusCode::BAD_REQUEST,
            "unreadable-body",
            other.body_text(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds_and_never_zero() {
        assert_eq!(Problem::retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(Problem::retry_after_secs(Duration::ZERO), 1);
        assert_eq!(Problem::retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(Problem::retry_after_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn a_401_carries_the_bearer_challenge_and_the_body_has_every_member() {
        let problem = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "no token")
            .with_extension("hint", Value::from(1));
        let body = problem.body();
        assert_eq!(body["type"], "/problems/unauthorized");
        assert_eq!(body["title"], "Unauthorized");
        assert_eq!(body["status"], 401);
        assert_eq!(body["detail"], "no token");
        assert!(body.get("trace_id").is_some());
        assert_eq!(body["hint"], 1);
        let response = problem
            .with_retry_after(Some(Duration::from_millis(200)))
            .into_response();
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            BEARER_CHALLENGE
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
