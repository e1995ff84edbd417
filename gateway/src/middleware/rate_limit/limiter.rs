//! [`RateLimiter`]: the decision for one request (see the module docs for the order).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{
    Quota,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use parking_lot::Mutex;
use shop_service::resilience::{BreakerConfig, BreakerState, CircuitBreaker, Trip};

use super::{
    policy::{Policies, Policy, PolicyKind},
    redis_gcra::GcraScript,
};

type LocalLimiter = governor::RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// How long leased tokens may be spent locally before they are dropped.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// How long the limiter stays on its local fallback after a Redis failure.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The breaker in front of the limiter's Redis; its state is `gateway_ratelimit_redis_up`
/// (1 shared, 0 local fallback), and the switch is logged once each way.
fn redis_breaker() -> CircuitBreaker {
    let up = AtomicBool::new(true);
    CircuitBreaker::new(
        BreakerConfig {
            name: "ratelimit_redis",
            trip: Trip::ConsecutiveFailures(1),
            open_for: REDIS_RETRY_AFTER,
            half_open_probes: 1,
        },
        move |state, reason| {
            let now_up = state == BreakerState::Closed;
            metrics::gauge!("gateway_ratelimit_redis_up").set(if now_up { 1.0 } else { 0.0 });
            match (up.swap(now_up, Ordering::Relaxed), now_up) {
                (true, false) => tracing::warn!(
                    error = reason,
                    "redis unreachable: rate limiting falls back to the local limiter (per-replica quotas)"
                ),
                (false, true) => {
                    tracing::info!("redis reachable again: shared rate limiting resumed");
                }
                _ => {}
            }
        },
    )
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left in the current window (an estimate when served locally).
    pub remaining: u32,
    /// Until the quota is full again.
    pub reset: Duration,
    /// For a refusal: until the next request can pass.
    pub retry_after: Duration,
}

/// Where a decision came from (a metric label).
#[derive(Clone, Copy, Debug)]
enum Source {
    Local,
    Lease,
    Redis,
    Fallback,
}

impl Source {
    const fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Lease => "lease",
            Self::Redis => "redis",
            Self::Fallback => "fallback",
        }
    }
}

#[derive(Debug)]
struct Lease {
    tokens: u32,
    remaining_hint: u32,
    expires: Instant,
}

/// The rate limiter shared by every request (cheap to clone).
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policies: Policies,
    local: [LocalLimiter; 3],
    // A synchronous mutex, not a tokio one: it is held for a map lookup only, never
    // across an `.await`. parking_lot's, which never poisons (no panic per request).
    leases: Mutex<HashMap<(PolicyKind, String), Lease>>,
    redis: redis::aio::ConnectionManager,
    script: GcraScript,
    prefix: String,
    timeout: Duration,
    /// The kit's breaker in front of Redis: one failure switches to the local fallback
    /// (open) for `REDIS_RETRY_AFTER`, then one caller probes Redis (half-open).
    redis_breaker: CircuitBreaker,
}

fn local_limiter(policy: &Policy) -> LocalLimiter {
    let burst = NonZeroU32::new(policy.burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(policy.emission_interval())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst);
    governor::RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()
}

impl RateLimiter {
    /// `redis` should be a lazily connecting manager: the gateway starts, and limits
    /// locally, even when Redis is down.
    pub fn new(
        policies: Policies,
        redis: redis::aio::ConnectionManager,
        prefix: String,
        timeout: Duration,
    ) -> Self {
        let local = PolicyKind::ALL.map(|kind| local_limiter(policies.get(kind)));
        Self {
            inner: Arc::new(Inner {
                policies,
                local,
                leases: Mutex::new(HashMap::new()),
                redis,
                script: GcraScript::default(),
                prefix,
                timeout,
                redis_breaker: redis_breaker(),
            }),
        }
    }

    pub fn policy(&self, kind: PolicyKind) -> &Policy {
        self.inner.policies.get(kind)
    }

    /// Decides one request of `client` under policy `kind`.
    pub async fn check(&self, kind: PolicyKind, client: &str) -> Decision {
        let (decision, source) = self.decide(kind, client).await;
        metrics::counter!(
            "gateway_ratelimit_decisions_total",
            "policy" => kind.name(),
            "decision" => if decision.allowed { "allowed" } else { "limited" },
            "source" => source.label(),
        )
        .increment(1);
        decision
    }

    async fn decide(&self, kind: PolicyKind, client: &str) -> (Decision, Source) {
        let inner = &*self.inner;
        let policy = inner.policies.get(kind);
        let key = client.to_owned();

        // 1. Local limiter: its "no" is final, its "yes" is the fallback answer.
        let local = match inner.local[kind as usize].check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    remaining,
                    reset: policy.emission_interval()
                        * (policy.burst - remaining.min(policy.burst)),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return (
                    Decision {
                        allowed: false,
                        remaining: 0,
                        reset: wait,
                        retry_after: wait,
                    },
                    Source::Local,
                );
            }
        };

        // 2. A lease of tokens taken earlier from Redis.
        let lease_size = policy.lease_size();
        if lease_size > 1 {
            let mut leases = inner.leases.lock();
            if let Some(lease) = leases.get_mut(&(kind, key.clone()))
                && lease.tokens > 0
                && lease.expires > Instant::now()
            {
                lease.tokens -= 1;
                let remaining = lease.remaining_hint + lease.tokens;
                return (Decision { remaining, ..local }, Source::Lease);
            }
        }

        // 3. Redis, unless it failed within the last second (then one caller a second
        // probes it while the others stay on the fallback without waiting).
        let Ok(permit) = inner.redis_breaker.acquire() else {
            return (local, Source::Fallback);
        };
        let redis_key = format!("{}{}:{}", inner.prefix, kind.name(), client);
        let mut conn = inner.redis.clone();
        let result = tokio::time::timeout(
            inner.timeout,
            inner.script.take(
                &mut conn,
                &redis_key,
                policy.emission_interval(),
                policy.burst,
                lease_size,
            ),
        )
        .await;
        match result {
            Ok(Ok(grant)) => {
                permit.record(true);
                if grant.granted == 0 {
                    return (
                        Decision {
                            allowed: false,
                            remaining: 0,
                            reset: grant.reset,
                            retry_after: grant.retry_after,
                        },
                        Source::Redis,
                    );
                }
                if grant.granted > 1 {
                    // Concurrent requests may each have taken a lease: pool them rather
                    // than overwrite (an overwritten lease would be tokens lost).
                    let expires = Instant::now() + LEASE_TTL;
                    inner
                        .leases
                        .lock()
                        .entry((kind, key))
                        .and_modify(|lease| {
                            if lease.expires <= Instant::now() {
                                lease.tokens = 0;
                            }
                            lease.tokens += grant.granted - 1;
                            lease.remaining_hint = grant.remaining;
                            lease.expires = expires;
                        })
                        .or_insert(Lease {
                            tokens: grant.granted - 1,
                            remaining_hint: grant.remaining,
                            expires,
                        });
                }
                (
                    Decision {
                        allowed: true,
                        remaining: grant.remaining + grant.granted - 1,
                        reset: grant.reset,
                        retry_after: Duration::ZERO,
                    },
                    Source::Redis,
                )
            }
            Ok(Err(error)) => {
                permit.record_failure(&error.to_string());
                (local, Source::Fallback)
            }
            Err(_elapsed) => {
                permit.record_failure("timed out");
                (local, Source::Fallback)
            }
        }
    }

    /// `PING`s Redis on the limiter's own connection (for /readyz).
    pub async fn ping(&self, timeout: Duration) -> bool {
        let mut conn = self.inner.redis.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// Whether the shared (Redis) state is in use right now.
    pub fn redis_up(&self) -> bool {
        self.inner.redis_breaker.is_closed()
    }

    /// Forgets idle clients (local limiter state and expired leases), so memory is
    /// bounded by recent clients, not by every client ever seen. Run periodically.
    pub fn forget_idle_clients(&self) {
        for limiter in &self.inner.local {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        self.inner
            .leases
            .lock()
            .retain(|_, lease| lease.expires > now);
        metrics::gauge!("gateway_ratelimit_tracked_clients")
            .set(self.inner.local.iter().map(|l| l.len()).sum::<usize>() as f64);
    }
}
