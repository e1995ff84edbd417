//! The proxy to orders: one shared HTTP client, deadlines, retries and a breaker.
//!
//! One request through [`Upstream::forward`]:
//! - headers: hop-by-hop headers stripped (both ways); `X-Forwarded-For` /
//!   `-Proto` set; `x-request-id` passed on (the telemetry layer put the id the client
//!   will see into the request headers); each attempt runs in its own client span whose
//!   context is injected (`traceparent`, `tracestate`, `baggage`), so orders' spans are
//!   its children; `x-timeout-ms` carries the remaining budget so orders can give up
//!   early.
//! - deadline: the whole exchange, retries included, must finish before the route's
//!   deadline; otherwise 504.
//! - retries: only GET/HEAD, or POST with an `Idempotency-Key`; only on connect
//!   errors, 502 and 503; the kit's exponential backoff with jitter; never past the
//!   deadline; and each retry needs a token from a global [`TpsBudget`] (a fraction of
//!   recent requests), so retries cannot multiply load during an outage.
//! - breaker: the kit's [`CircuitBreaker`] (failure rate over a sliding window, then
//!   half-open probes); while open, 503 + `Retry-After` at once. Its state is exported as
//!   `gateway_circuit_breaker_state{upstream}` (0 closed, 1 half-open, 2 open).
//!
//! The connection pool is bounded in idle connections by `UPSTREAM_POOL_MAX_IDLE` and
//! in live connections by the load-shedding cap (each in-flight request holds at most
//! one connection).

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    http::{
        HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
    },
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioTimer,
};
use shop_lifecycle::Lifecycle;
use shop_service::resilience::Backoff;
use tower::retry::budget::{Budget as _, TpsBudget};

pub use shop_service::resilience::{BreakerConfig, CircuitBreaker, Trip};

use tracing::Instrument as _;

use crate::{config::Config, error::ApiError};

static X_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-timeout-ms");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
}

/// Runs the HTTP client's connection tasks through the lifecycle supervisor, so they
/// are tracked like every other task: a pooled connection's task ends when the client
/// (the last `AppState`) is dropped, and shutdown waits for it.
#[derive(Clone, Debug)]
pub struct LifecycleExecutor(pub Lifecycle);

impl<F> hyper::rt::Executor<F> for LifecycleExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        drop(self.0.spawn_connection_task("upstream_connection", future));
    }
}

/// Retry settings.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// What the proxy knows about the incoming request besides the request itself.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The socket peer (a client, or a trusted proxy in front of the gateway).
    pub peer: std::net::IpAddr,
    pub peer_is_trusted_proxy: bool,
    /// The gateway route that matched (`/v1/orders/{*rest}`), for the client span name.
    pub route: &'a str,
    pub deadline: Duration,
}

/// One upstream service.
#[derive(Clone, Debug)]
pub struct Upstream {
    name: &'static str,
    client: Client<HttpConnector, Full<Bytes>>,
    /// `scheme://authority` of the upstream.
    base: Uri,
    breaker: CircuitBreaker,
    budget: std::sync::Arc<TpsBudget>,
    retry: RetryConfig,
}

impl Upstream {
    /// `lifecycle` owns the client's connection tasks (see [`LifecycleExecutor`]).
    pub fn from_config(
        name: &'static str,
        config: &Config,
        lifecycle: &Lifecycle,
    ) -> anyhow::Result<Self> {
        let base: Uri = config.orders_url.parse()?;
        anyhow::ensure!(
            base.scheme_str() == Some("http") && base.authority().is_some(),
            "ORDERS_URL must be http://host:port"
        );
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream_connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(LifecycleExecutor(lifecycle.clone()))
            .pool_max_idle_per_host(config.upstream_pool_max_idle)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let breaker = CircuitBreaker::new(
            BreakerConfig {
                name,
                trip: Trip::FailureRate {
                    rate: config.breaker_failure_rate,
                    min_calls: config.breaker_min_requests,
                    window: config.breaker_window,
                },
                open_for: config.breaker_open,
                half_open_probes: config.breaker_half_open_probes.max(1),
            },
            move |state, _reason| {
                metrics::gauge!("gateway_circuit_breaker_state", "upstream" => name)
                    .set(state.gauge());
            },
        );
        Ok(Self {
            name,
            client,
            base,
            breaker,
            budget: std::sync::Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                config.retry_budget_min_per_sec,
                config.retry_budget_percent / 100.0,
            )),
            retry: RetryConfig {
                max_attempts: config.retry_max_attempts.max(1),
                base_delay: config.retry_base_delay,
                max_delay: Duration::from_secs(1),
            },
        })
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// `GET <base><path>` with a short timeout, for /readyz (bypasses the breaker).
    pub async fn probe(&self, path: &str, timeout: Duration) -> bool {
        let Ok(uri) = self.uri(path) else {
            return false;
        };
        let Ok(mut request) = Request::get(uri).body(Full::new(Bytes::new())) else {
            return false;
        };
        // Like every outgoing call, in a client span whose context goes along.
        let span = shop_telemetry::http::client_span(&Method::GET, self.host(), path);
        shop_telemetry::http::inject_context_from(&span, request.headers_mut());
        let outcome = tokio::time::timeout(timeout, self.client.request(request))
            .instrument(span.clone())
            .await;
        match outcome {
            Ok(Ok(response)) => {
                shop_telemetry::http::record_client_status(&span, response.status());
                response.status().is_success()
            }
            Ok(Err(_)) | Err(_) => {
                span.record("otel.status_code", "ERROR");
                false
            }
        }
    }

    /// The upstream's `host:port`, the client span's `server.address`.
    fn host(&self) -> &str {
        self.base.authority().map_or("", |a| a.as_str())
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        Ok(Uri::from_parts(parts)?)
    }

    /// Forwards a buffered request; see the module docs.
    pub async fn forward(
        &self,
        method: Method,
        uri: &Uri,
        mut headers: HeaderMap,
        body: Bytes,
        fwd: Forwarding<'_>,
    ) -> Result<Response<Body>, ApiError> {
        let started = Instant::now();
        let deadline = started + fwd.deadline;
        let target = self
            .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()))
            .map_err(|e| ApiError::BadRequest(format!("bad request target: {e}")))?;

        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(&X_TIMEOUT_MS);
        let peer =
            HeaderValue::from_str(&fwd.peer.to_string()).expect("an IP is a valid header value");
        // From a trusted proxy the chain is kept and extended with that proxy's address;
        // otherwise a client's own X-Forwarded-For is not passed on as if it were true.
        let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(chain) if fwd.peer_is_trusted_proxy => {
                HeaderValue::from_str(&format!("{chain}, {}", fwd.peer)).unwrap_or(peer)
            }
            _ => peer,
        };
        headers.insert(X_FORWARDED_FOR.clone(), xff);
        if !(fwd.peer_is_trusted_proxy && headers.contains_key(&X_FORWARDED_PROTO)) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        // A client's own trace headers were extracted by the telemetry layer; what goes
        // upstream is injected per attempt below, from that attempt's client span.
        for name in ["traceparent", "tracestate", "baggage"] {
            headers.remove(name);
        }

        let retryable = matches!(method, Method::GET | Method::HEAD)
            || (method == Method::POST && headers.contains_key(&IDEMPOTENCY_KEY));
        self.budget.deposit();

        let mut attempt = 0u32;
        // Created at the first retry only: most requests never wait.
        let mut waits: Option<Backoff> = None;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::GatewayTimeout);
            }
            let permit = self
                .breaker
                .acquire()
                .map_err(|retry_after| ApiError::UpstreamUnavailable { retry_after })?;

            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = target.clone();
            *request.headers_mut() = headers.clone();
            request.headers_mut().insert(
                X_TIMEOUT_MS.clone(),
                HeaderValue::from(
                    u64::try_from(remaining.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                ),
            );

            let span = shop_telemetry::http::client_span(&method, self.host(), fwd.route);
            if attempt > 1 {
                span.record("http.request.resend_count", attempt - 1);
            }
            shop_telemetry::http::inject_context_from(&span, request.headers_mut());

            let sent = Instant::now();
            let outcome = tokio::time::timeout(remaining, self.client.request(request))
                .instrument(span.clone())
                .await;
            metrics::histogram!("gateway_upstream_duration_seconds", "upstream" => self.name)
                .record(sent.elapsed().as_secs_f64());
            match &outcome {
                Ok(Ok(response)) => {
                    shop_telemetry::http::record_client_status(&span, response.status());
                }
                Ok(Err(_)) | Err(_) => {
                    span.record("otel.status_code", "ERROR");
                }
            }

            // What went wrong, if anything, and whether it may be retried.
            let failure = match outcome {
                Err(_elapsed) => {
                    permit.record(false);
                    // Not retried: the deadline is spent, and a slow upstream is the
                    // last thing to send more work to.
                    return Err(ApiError::GatewayTimeout);
                }
                Ok(Err(error)) if error.is_connect() => {
                    permit.record(false);
                    ApiError::UpstreamUnavailable {
                        retry_after: Duration::from_secs(1),
                    }
                }
                Ok(Err(error)) => {
                    permit.record(false);
                    // The request may have reached orders: not retried.
                    return Err(ApiError::BadGateway(format!("{error:#}")));
                }
                Ok(Ok(response)) => {
                    let status = response.status();
                    let failed = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    permit.record(!failed);
                    let retry_status = matches!(
                        status,
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                    );
                    if !(retry_status && retryable && attempt < self.retry.max_attempts) {
                        return Ok(into_client_response(response));
                    }
                    match self.backoff(&mut waits, deadline) {
                        Some(delay) => {
                            metrics::counter!("gateway_upstream_retries_total", "upstream" => self.name, "reason" => "status").increment(1);
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        None => return Ok(into_client_response(response)),
                    }
                }
            };
            if !(retryable && attempt < self.retry.max_attempts) {
                return Err(failure);
            }
            match self.backoff(&mut waits, deadline) {
                Some(delay) => {
                    metrics::counter!("gateway_upstream_retries_total", "upstream" => self.name, "reason" => "connect").increment(1);
                    tokio::time::sleep(delay).await;
                }
                None => return Err(failure),
            }
        }
    }

    /// The delay before the next retry, or `None` if there is no time or no budget
    /// left. The project's one backoff policy (`shop_service::resilience::backoff`):
    /// from `RETRY_BASE_DELAY` doubling, with jitter, below 1 s.
    fn backoff(&self, waits: &mut Option<Backoff>, deadline: Instant) -> Option<Duration> {
        let delay = waits
            .get_or_insert_with(|| Backoff::new(self.retry.base_delay, self.retry.max_delay))
            .next_delay();
        // Leave the next attempt at least a little time to do something useful.
        if Instant::now() + delay + Duration::from_millis(5) >= deadline {
            return None;
        }
        if !self.budget.withdraw() {
            metrics::counter!("gateway_upstream_retry_budget_exhausted_total", "upstream" => self.name).increment(1);
            return None;
        }
        Some(delay)
    }
}

fn into_client_response(response: Response<hyper::body::Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}
