//! Reads the bearer token, if any, before rate limiting, so that limits apply per user
//! for authenticated requests. It only *identifies*: routes that require a token
//! (`/v1/orders*`) reject a request without [`Identity::User`] themselves, after rate
//! limiting, so a flood of bad tokens is limited per IP like anything else.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};
use shop_auth::{AuthError, Claims, TokenVerifier};
use shop_telemetry::http::layer::AccessUser;

/// Who sent the request, in the request extensions.
#[derive(Clone, Debug)]
pub enum Identity {
    /// A valid token.
    User(Box<Claims>),
    /// A token was sent but refused; the message is safe for the client.
    Invalid(&'static str),
    /// No `Authorization` header.
    Anonymous,
}

/// The bearer token of a request, verbatim (the proxy passes it on to orders).
pub fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::Expired => "the token has expired",
        AuthError::NotYetValid => "the token is not valid yet",
        AuthError::UnknownKey => "the token is signed by an unknown key",
        AuthError::Malformed => "the token is malformed",
        _ => "the token is invalid",
    }
}

/// The middleware.
pub async fn authenticate(
    State(verifier): State<TokenVerifier>,
    mut request: Request,
    next: Next,
) -> Response {
    let identity = if request.headers().contains_key(header::AUTHORIZATION) {
        match bearer(&request) {
            Some(token) => match verifier.verify(token) {
                Ok(claims) => Identity::User(Box::new(claims)),
                Err(error) => Identity::Invalid(reason(&error)),
            },
            None => Identity::Invalid("expected `Authorization: Bearer <token>`"),
        }
    } else {
        Identity::Anonymous
    };
    // The access log names the caller (only for a valid token).
    let user = match &identity {
        Identity::User(claims) => Some(AccessUser(claims.sub)),
        _ => None,
    };
    request.extensions_mut().insert(identity);
    let mut response = next.run(request).await;
    if let Some(user) = user {
        response.extensions_mut().insert(user);
    }
    response
}
