//! Extractors that turn every rejection into the service's own problem+json error.

use axum::{
    extract::{
        FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use shop_auth::{AuthError, Claims};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// `axum::Json`, with rejections mapped to 400 / 413 / 415 / 422 problems.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::unprocessable("invalid-body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed-json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "the body must be JSON, with Content-Type: application/json".into(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::bad_request("unreadable-body", other.body_text()),
    }
}

/// A path segment parsed as a UUID; anything else is a 400.
#[derive(Debug)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<Uuid>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::bad_request(
                "invalid-id",
                "the id in the path is not a UUID",
            )),
            Err(other) => Err(ApiError::bad_request("invalid-path", other.body_text())),
        }
    }
}

/// `axum::extract::Query`, with rejections mapped to 400 problems.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request("invalid-query", e.body_text()))
            }
            Err(other) => Err(ApiError::bad_request("invalid-query", other.body_text())),
        }
    }
}

/// The verified claims of the caller's bearer token. Orders verifies every token itself:
/// nothing is trusted because it came through the gateway.
#[derive(Debug)]
pub struct Caller(pub Claims);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        match state.verifier.verify(token) {
            Ok(claims) => Ok(Self(claims)),
            Err(
                e @ (AuthError::Expired
                | AuthError::NotYetValid
                | AuthError::Malformed
                | AuthError::UnknownKey),
            ) => Err(ApiError::Unauthorized(e.to_string())),
            Err(_) => Err(ApiError::Unauthorized("the token is invalid".into())),
        }
    }
}

/// The `Idempotency-Key` header: required on order placement, 1–255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

/// Longest accepted Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::bad_request(
                "missing-idempotency-key",
                "the Idempotency-Key header is required",
            )
        })?;
        let bytes = value.as_bytes();
        let visible = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
            return Err(ApiError::bad_request(
                "invalid-idempotency-key",
                "the Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        // Visible ASCII is valid UTF-8.
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }
}
