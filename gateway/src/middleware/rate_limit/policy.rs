//! The rate-limit policies and which one applies to a request.

use std::time::Duration;

use axum::http::Method;

use crate::config::{Config, Rate};

/// The policies (API.md: `RATE_LIMIT_LOGIN`, `RATE_LIMIT_ORDERS`, `RATE_LIMIT_DEFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// `POST /v1/auth/token`, per client IP.
    Login,
    /// `POST /v1/orders`, per user.
    Orders,
    /// Everything else under `/v1`, per user if authenticated, else per IP.
    Default,
}

impl PolicyKind {
    pub const ALL: [Self; 3] = [Self::Login, Self::Orders, Self::Default];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Orders => "orders",
            Self::Default => "default",
        }
    }

    /// The policy of a request.
    pub fn of(method: &Method, path: &str) -> Self {
        match (method, path) {
            (&Method::POST, "/v1/auth/token") => Self::Login,
            (&Method::POST, "/v1/orders") => Self::Orders,
            _ => Self::Default,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One policy: `count` requests per `window`, bursts up to `burst`.
#[derive(Clone, Debug)]
pub struct Policy {
    pub kind: PolicyKind,
    pub rate: Rate,
    pub burst: u32,
    /// `RateLimit-Policy` header value, e.g. `"login";q=10;w=60`.
    pub header: axum::http::HeaderValue,
}

impl Policy {
    pub fn new(kind: PolicyKind, rate: Rate, burst: Option<u32>) -> Self {
        let burst = burst.unwrap_or(rate.count).max(1);
        let header = format!(
            "\"{}\";q={};w={}",
            kind.name(),
            rate.count,
            rate.per.as_secs()
        )
        .parse()
        .expect("a policy header is ASCII");
        Self {
            kind,
            rate,
            burst,
            header,
        }
    }

    /// Time between two tokens (GCRA's emission interval).
    pub fn emission_interval(&self) -> Duration {
        self.rate.per / self.rate.count
    }

    /// Tokens taken from Redis at once (see the module docs): 1 for small policies.
    pub fn lease_size(&self) -> u32 {
        (self.burst / 64).clamp(1, 64)
    }
}

/// The three policies, indexed by kind.
#[derive(Clone, Debug)]
pub struct Policies([Policy; 3]);

impl Policies {
    pub fn from_config(config: &Config) -> Self {
        Self([
            Policy::new(
                PolicyKind::Login,
                config.rate_limit_login,
                config.rate_limit_login_burst,
            ),
            Policy::new(
                PolicyKind::Orders,
                config.rate_limit_orders,
                config.rate_limit_orders_burst,
            ),
            Policy::new(
                PolicyKind::Default,
                config.rate_limit_default,
                config.rate_limit_default_burst,
            ),
        ])
    }

    pub fn get(&self, kind: PolicyKind) -> &Policy {
        &self.0[kind.index()]
    }
}
