//! The service's one error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Handlers return `Result<_, ApiError>`. A 4xx carries a detail written for the
//! client; a 5xx is logged with its cause (and the trace id) and answered with a generic
//! detail, so internal details never leak. The document and its headers are rendered by
//! the kit's one renderer, [`shop_service::Problem`].

use std::time::Duration;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use shop_service::Problem;
use uuid::Uuid;

/// Every error a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be parsed (malformed JSON, a missing or invalid header, a bad id).
    #[error("{detail}")]
    BadRequest { slug: &'static str, detail: String },
    /// 401: no token, or a token that does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the request is understood but refused in this configuration (e.g. the leak
    /// demo without `LEAK_DEMO=1`).
    #[error("{detail}")]
    Forbidden { slug: &'static str, detail: String },
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 404 `unknown-product`: an order line names a product that does not exist.
    #[error("unknown products")]
    UnknownProduct(Vec<Uuid>),
    /// 409 `insufficient-stock`: nothing changed.
    #[error("insufficient stock")]
    InsufficientStock(Vec<Uuid>),
    /// 409 `request-in-progress`: the same Idempotency-Key is being processed right now.
    #[error("request in progress")]
    RequestInProgress,
    /// 409 with a stable problem type: the resource is in a state that refuses the request.
    #[error("{detail}")]
    Conflict { slug: &'static str, detail: String },
    /// 413.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: valid JSON, invalid values.
    #[error("{detail}")]
    Unprocessable { slug: &'static str, detail: String },
    /// 503: the service is saturated (pool exhausted, in-flight cap); retry after a moment.
    #[error("overloaded")]
    Overloaded { retry_after: Duration },
    /// 503: a dependency is unreachable.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// 504: the request's deadline passed before the work could finish.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// 500: a bug or an unexpected failure; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 with a stable problem type.
    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            slug,
            detail: detail.into(),
        }
    }

    /// A 422 with a stable problem type.
    pub fn unprocessable(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::Unprocessable {
            slug,
            detail: detail.into(),
        }
    }

    /// A 403 with a stable problem type.
    pub fn forbidden(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::Forbidden {
            slug,
            detail: detail.into(),
        }
    }

    /// A 409 with a stable problem type.
    pub fn conflict(slug: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            slug,
            detail: detail.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::UnknownProduct(_) => StatusCode::NOT_FOUND,
            Self::InsufficientStock(_) | Self::RequestInProgress | Self::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest { slug, .. }
            | Self::Unprocessable { slug, .. }
            | Self::Forbidden { slug, .. }
            | Self::Conflict { slug, .. } => slug,
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not-found",
            Self::UnknownProduct(_) => "unknown-product",
            Self::InsufficientStock(_) => "insufficient-stock",
            Self::RequestInProgress => "request-in-progress",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Overloaded { .. } => "overloaded",
            Self::Unavailable(_) => "dependency-unavailable",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "Bad request",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::NotFound(_) => "Not found",
            Self::UnknownProduct(_) => "Unknown product",
            Self::InsufficientStock(_) => "Insufficient stock",
            Self::RequestInProgress => "Request in progress",
            Self::Conflict { .. } => "Conflict",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::Unprocessable { .. } => "Invalid request",
            Self::Overloaded { .. } => "Service overloaded",
            Self::Unavailable(_) => "Service unavailable",
            Self::DeadlineExceeded => "Deadline exceeded",
            Self::Internal(_) => "Internal error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::UnknownProduct(_) => {
                "some products of the order do not exist; nothing was changed".into()
            }
            Self::InsufficientStock(_) => {
                "some products do not have enough stock; nothing was changed".into()
            }
            Self::RequestInProgress => {
                "a request with this Idempotency-Key is still being processed; retry later".into()
            }
            Self::Overloaded { .. } => {
                "the service is at capacity; retry after the indicated delay".into()
            }
            Self::Unavailable(_) => {
                "a dependency is unavailable; retry after the indicated delay".into()
            }
            Self::DeadlineExceeded => {
                "the request did not complete within its deadline; nothing was half-written".into()
            }
            Self::Internal(_) => {
                "an unexpected error occurred; quote the trace_id when reporting it".into()
            }
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { retry_after } => Some(*retry_after),
            Self::Unavailable(_) => Some(Duration::from_secs(2)),
            Self::RequestInProgress => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl ApiError {
    /// This error as the kit's problem document, with its extension members
    /// (`product_ids`) and `Retry-After`.
    pub fn to_problem(&self) -> Problem {
        let mut problem = Problem::new(self.status_code(), self.slug(), self.detail())
            .with_title(self.title())
            .with_retry_after(self.retry_after());
        if let Self::UnknownProduct(ids) | Self::InsufficientStock(ids) = self {
            problem = problem.with_extension("product_ids", json!(ids));
        }
        problem
    }

    /// This error's problem+json body (stored for an Idempotency-Key's replay).
    pub fn problem(&self) -> Value {
        self.to_problem().body()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status_code().is_server_error() {
            match &self {
                Self::Overloaded { .. } | Self::DeadlineExceeded => {
                    tracing::warn!(error = %self, "request failed")
                }
                _ => tracing::error!(error = ?self, "request failed"),
            }
        }
        self.to_problem().into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    /// The one place where database failures become HTTP answers.
    fn from(error: sqlx::Error) -> Self {
        match &error {
            // The pool had no connection for us within the acquire timeout: answer at once
            // instead of queueing (pitfall 5).
            sqlx::Error::PoolTimedOut => Self::Overloaded {
                retry_after: Duration::from_secs(1),
            },
            sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                // query_canceled: statement_timeout fired, or order placement finished
                // after the request's deadline (`place_order`).
                Self::DeadlineExceeded
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => {
                // lock_not_available: the lock_timeout order placement sets from the
                // request's deadline fired (nothing in orders locks NOWAIT).
                Self::DeadlineExceeded
            }
            _ => Self::Internal(anyhow::Error::new(error)),
        }
    }
}
