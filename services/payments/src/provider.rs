//! The simulated payment provider: an in-process stand-in for a card processor, slow or
//! failing on demand so that lag, retries and cancellations can be watched live.
//!
//! Each charge waits the configured latency, then fails transiently with probability
//! `failure_rate` (the consumer retries it with backoff), is declined when the order's
//! total is above `decline_above_cents` (final), and is approved otherwise. The order id
//! is the idempotency key: charging the same order twice yields the same charge id
//! (a UUID v5 of the order id), as a real provider's idempotency keys would.
//!
//! The settings live behind one `parking_lot::RwLock`, read (copied out) at the start of
//! each charge, and replaced whole by `PUT /admin/provider`; the guard is never held
//! across an `.await`. Every call is bounded by `PAYMENTS_PROVIDER_TIMEOUT`, runs in a
//! `provider charge` client span, and is measured in `payments_provider_seconds` and
//! `payments_provider_calls_total{outcome}`.

use std::{sync::Arc, time::Duration};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

/// Longest latency the provider can be given.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);

/// Namespace of the charge ids (UUID v5 of the order id).
const CHARGE_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_5d2e_8a4b_4c3f_9e0d_7b2a_1c8e_5f40);

/// What the provider does with each charge.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// How long each charge takes.
    pub latency: Duration,
    /// Share of charges that fail transiently, 0.0–1.0.
    pub failure_rate: f64,
    /// Charges above this many cents are declined; `None`: none is.
    pub decline_above_cents: Option<i64>,
}

impl std::fmt::Display for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "latency {}, failure rate {}, {}",
            humantime::format_duration(self.latency),
            self.failure_rate,
            self.decline_above_cents.map_or_else(
                || "nothing declined".to_owned(),
                |c| format!("declined above {c} cents")
            )
        )
    }
}

/// The settings as `GET`/`PUT /admin/provider` show them: `{"latency":"20ms",
/// "failure_rate":0.0,"decline_above_cents":null}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsDocument {
    /// humantime (`20ms`, `1s`), at most 60s.
    pub latency: String,
    pub failure_rate: f64,
    /// Optional in a `PUT`: absent or `null` declines nothing.
    #[serde(default)]
    pub decline_above_cents: Option<i64>,
}

impl From<&ProviderSettings> for SettingsDocument {
    fn from(s: &ProviderSettings) -> Self {
        Self {
            latency: humantime::format_duration(s.latency).to_string(),
            failure_rate: s.failure_rate,
            decline_above_cents: s.decline_above_cents,
        }
    }
}

impl TryFrom<&SettingsDocument> for ProviderSettings {
    type Error = String;

    /// Validates every field: the latency's syntax and bound, the rate's range, a
    /// threshold that is not negative.
    fn try_from(d: &SettingsDocument) -> Result<Self, String> {
        let settings = Self {
            latency: parse_latency(&d.latency)?,
            failure_rate: check_failure_rate(d.failure_rate)?,
            decline_above_cents: d.decline_above_cents,
        };
        if settings.decline_above_cents.is_some_and(|c| c < 0) {
            return Err("decline_above_cents must not be negative".into());
        }
        Ok(settings)
    }
}

/// A latency: humantime, at most [`MAX_LATENCY`].
pub fn parse_latency(text: &str) -> Result<Duration, String> {
    let latency = humantime::parse_duration(text)
        .map_err(|e| format!("latency {text:?} is not a duration such as 20ms or 1s: {e}"))?;
    if latency > MAX_LATENCY {
        return Err(format!(
            "latency must be at most {}",
            humantime::format_duration(MAX_LATENCY)
        ));
    }
    Ok(latency)
}

/// A failure rate: a number from 0.0 to 1.0.
pub fn parse_failure_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("failure rate {text:?} is not a number"))?;
    check_failure_rate(rate)
}

fn check_failure_rate(rate: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "failure_rate must be between 0.0 and 1.0, got {rate}"
        ))
    }
}

/// The provider's final answer to a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Approved { charge_id: String },
    Declined,
}

/// A charge that did not get an answer: retried (the charge is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("the payment provider failed (transient)")]
    Transient,
    #[error("the payment provider did not answer within {0:?}")]
    Timeout(Duration),
}

/// What one simulated call comes to, before its latency: `roll` is uniform in [0, 1).
pub fn decide(
    settings: &ProviderSettings,
    order_id: Uuid,
    amount_cents: i64,
    roll: f64,
) -> Result<Charge, ChargeError> {
    if roll < settings.failure_rate {
        return Err(ChargeError::Transient);
    }
    if settings
        .decline_above_cents
        .is_some_and(|limit| amount_cents > limit)
    {
        return Ok(Charge::Declined);
    }
    Ok(Charge::Approved {
        charge_id: charge_id(order_id),
    })
}

/// The charge id of `order_id`'s payment: the same on every call (the order id is the
/// idempotency key).
pub fn charge_id(order_id: Uuid) -> String {
    format!(
        "ch_{}",
        Uuid::new_v5(&CHARGE_NAMESPACE, order_id.as_bytes()).simple()
    )
}

/// The provider: shared settings and the bound on each call. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Provider {
    settings: Arc<RwLock<ProviderSettings>>,
    timeout: Duration,
}

impl Provider {
    pub fn new(settings: ProviderSettings, timeout: Duration) -> Self {
        Self {
            settings: Arc::new(RwLock::new(settings)),
            timeout,
        }
    }

    /// The current settings.
    pub fn settings(&self) -> ProviderSettings {
        self.settings.read().clone()
    }

    /// Replaces the settings; charges that already started keep the old ones.
    pub fn set(&self, settings: ProviderSettings) {
        *self.settings.write() = settings;
    }

    /// Charges `amount_cents` for `order_id` (the idempotency key), within the timeout.
    pub async fn charge(&self, order_id: Uuid, amount_cents: i64) -> Result<Charge, ChargeError> {
        let span = tracing::info_span!(
            "provider charge",
            otel.name = "provider charge",
            otel.kind = "client",
            otel.status_code = Empty,
            payment.order_id = %order_id,
            payment.amount_cents = amount_cents,
            payment.outcome = Empty,
        );
        let started = std::time::Instant::now();
        let settings = self.settings();
        let call = async {
            tokio::time::sleep(settings.latency).await;
            decide(&settings, order_id, amount_cents, rand::random::<f64>())
        };
        let result = match tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await
        {
            Ok(result) => result,
            Err(_) => Err(ChargeError::Timeout(self.timeout)),
        };
        let outcome = match &result {
            Ok(Charge::Approved { .. }) => "approved",
            Ok(Charge::Declined) => "declined",
            Err(ChargeError::Transient) => "error",
            Err(ChargeError::Timeout(_)) => "timeout",
        };
        span.record("payment.outcome", outcome);
        span.record(
            "otel.status_code",
            if result.is_ok() { "OK" } else { "ERROR" },
        );
        metrics::histogram!("payments_provider_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("payments_provider_calls_total", "outcome" => outcome).increment(1);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(failure_rate: f64, decline_above_cents: Option<i64>) -> ProviderSettings {
        ProviderSettings {
            latency: Duration::ZERO,
            failure_rate,
            decline_above_cents,
        }
    }

    #[test]
    fn an_order_above_the_threshold_is_declined_and_one_at_it_is_approved() {
        let s = settings(0.0, Some(10_000));
        let order = Uuid::new_v4();
        assert_eq!(decide(&s, order, 10_001, 0.5).unwrap(), Charge::Declined);
        assert_eq!(
            decide(&s, order, 10_000, 0.5).unwrap(),
            Charge::Approved {
                charge_id: charge_id(order)
            }
        );
        assert!(matches!(
            decide(&settings(0.0, None), order, i64::MAX, 0.5),
            Ok(Charge::Approved { .. })
        ));
    }

    #[test]
    fn the_charge_id_depends_only_on_the_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(charge_id(a), charge_id(a));
        assert_ne!(charge_id(a), charge_id(b));
    }

    #[test]
    fn a_rate_of_zero_never_fails_and_a_rate_of_one_always_fails() {
        let order = Uuid::new_v4();
        for roll in [0.0, 0.3, 0.999_999] {
            assert!(decide(&settings(0.0, None), order, 1, roll).is_ok());
            assert!(matches!(
                decide(&settings(1.0, None), order, 1, roll),
                Err(ChargeError::Transient)
            ));
        }
        // A transient failure comes before the decline rule: it is retried, not final.
        assert!(decide(&settings(1.0, Some(0)), order, 1, 0.5).is_err());
    }

    #[test]
    fn failure_rates_outside_zero_to_one_and_long_latencies_are_refused() {
        for bad in ["-0.01", "1.01", "NaN", "inf", "x"] {
            assert!(parse_failure_rate(bad).is_err(), "{bad}");
        }
        for good in ["0", "0.25", "1"] {
            assert!(parse_failure_rate(good).is_ok(), "{good}");
        }
        assert!(parse_latency("61s").is_err());
        assert!(parse_latency("soon").is_err());
        assert_eq!(parse_latency("60s").unwrap(), MAX_LATENCY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_slower_than_the_timeout_is_a_timeout() {
        let slow = ProviderSettings {
            latency: Duration::from_secs(5),
            ..settings(0.0, None)
        };
        let provider = Provider::new(slow, Duration::from_secs(2));
        assert!(matches!(
            provider.charge(Uuid::new_v4(), 100).await,
            Err(ChargeError::Timeout(_))
        ));
        provider.set(settings(0.0, None));
        assert!(provider.charge(Uuid::new_v4(), 100).await.is_ok());
    }
}
