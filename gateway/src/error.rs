//! The gateway's one error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Every handler and middleware returns [`ApiError`]; its [`IntoResponse`] writes
//! `{"type":"/problems/<slug>","title","status","detail","trace_id"}`. A 5xx's cause is
//! logged (with the trace id, through the request span) and never sent to the client.
//! The document and its headers come from the kit's one renderer, [`shop_service::Problem`].

use std::time::Duration;

use axum::{
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use shop_service::Problem;

/// Everything that can go wrong in a request, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("expected `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("no route for this path")]
    NotFound,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("too many requests: retry after {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("the gateway is overloaded")]
    Overloaded { retry_after: Duration },
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable { retry_after: Duration },
    #[error("the upstream service answered badly")]
    BadGateway(String),
    #[error("the upstream service did not answer before the deadline")]
    GatewayTimeout,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::UpstreamUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable slug of `type` (`/problems/<slug>`).
    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::MalformedJson(_) => "malformed-json",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Unprocessable(_) => "invalid-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound => "not-found",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RequestTimeout => "request-timeout",
            Self::RateLimited { .. } => "rate-limited",
            Self::Overloaded { .. } => "overloaded",
            Self::UpstreamUnavailable { .. } => "upstream-unavailable",
            Self::BadGateway(_) => "bad-gateway",
            Self::GatewayTimeout => "upstream-timeout",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after }
            | Self::Overloaded { retry_after }
            | Self::UpstreamUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// This error as the kit's problem document. A 5xx's cause is logged here and
    /// replaced by the status's reason phrase for the client.
    pub fn to_problem(&self) -> Problem {
        let status = self.status_code();
        let detail = if status.is_server_error() {
            // The cause stays in the logs; the client gets the generic message.
            tracing::error!(error = %self, cause = ?self, status = status.as_u16(), "request failed");
            match self {
                Self::BadGateway(_) | Self::Internal(_) => status
                    .canonical_reason()
                    .unwrap_or("server error")
                    .to_owned(),
                _ => self.to_string(),
            }
        } else {
            self.to_string()
        };
        Problem::new(status, self.slug(), detail).with_retry_after(self.retry_after())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The telemetry layer runs every handler and inner middleware inside the
        // request's span, whose trace id is the one the client sees in `x-trace-id`.
        self.to_problem().into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::JsonDataError(e) => Self::Unprocessable(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::MalformedJson(e.body_text()),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

/// `Json` whose rejections are [`ApiError`]s (problem+json, not axum's plain text).
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);
