//! [`RateLimitLayer`]: picks the policy and the client key of a request, asks the
//! [`RateLimiter`], refuses with 429 or passes on, and adds the `RateLimit-Policy` and
//! `RateLimit` headers (IETF httpapi draft) either way.

use std::task::{Context, Poll};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use futures::future::{BoxFuture, FutureExt as _};
use tower::{Layer, Service};

use super::{Decision, PolicyKind, RateLimiter};
use crate::{
    error::ApiError,
    middleware::{authenticate::Identity, client_ip::ClientIp},
};

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Applies the rate-limit policies to every request of the wrapped service.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    pub const fn new(limiter: RateLimiter) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
}

/// The key a request is counted under: the user for authenticated requests (except
/// logins, always per IP), else the client IP.
fn client_key(kind: PolicyKind, request: &Request) -> String {
    if kind != PolicyKind::Login
        && let Some(Identity::User(claims)) = request.extensions().get::<Identity>()
    {
        return format!("user:{}", claims.sub);
    }
    match request.extensions().get::<ClientIp>() {
        Some(ClientIp(ip)) => format!("ip:{ip}"),
        None => "ip:unknown".to_owned(),
    }
}

fn ratelimit_header(kind: PolicyKind, decision: &Decision) -> HeaderValue {
    let reset = decision.reset.as_secs() + u64::from(decision.reset.subsec_nanos() > 0);
    format!("\"{}\";r={};t={}", kind.name(), decision.remaining, reset)
        .parse()
        .expect("ASCII header")
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        async move {
            let kind = PolicyKind::of(request.method(), request.uri().path());
            let key = client_key(kind, &request);
            let decision = limiter.check(kind, &key).await;
            let mut response = if decision.allowed {
                inner.call(request).await?
            } else {
                ApiError::RateLimited {
                    retry_after: decision.retry_after,
                }
                .into_response()
            };
            let headers = response.headers_mut();
            headers.insert(
                RATELIMIT_POLICY.clone(),
                limiter.policy(kind).header.clone(),
            );
            headers.insert(RATELIMIT.clone(), ratelimit_header(kind, &decision));
            Ok(response)
        }
        .boxed()
    }
}
