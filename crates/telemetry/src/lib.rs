//! Telemetry for every shop service: one call to adopt it.
//!
//! ```no_run
//! let _guard = shop_telemetry::init("orders").expect("telemetry");
//! let metrics = shop_telemetry::metrics::install();
//! ```
//!
//! - [`init`] installs the global `tracing` subscriber (logs: `LOG_FORMAT=json|pretty`,
//!   filtered by `RUST_LOG`) and returns a guard that flushes everything when dropped.
//! - [`metrics::install`] installs the Prometheus recorder once per process and returns
//!   the handle that renders `/metrics`.

pub mod metrics;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes and shuts down telemetry when dropped (or when [`TelemetryGuard::shutdown`] is called).
#[derive(Debug)]
#[must_use = "dropping the guard flushes and stops telemetry"]
pub struct TelemetryGuard {
    _private: (),
}

impl TelemetryGuard {
    /// Flushes everything that is buffered. Idempotent.
    pub fn shutdown(self) {}
}

/// The log format, from `LOG_FORMAT` (`json`, the default for containers, or `pretty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    fn from_env() -> Self {
        match std::env::var("LOG_FORMAT").as_deref() {
            Ok("pretty") | Ok("text") => Self::Pretty,
            _ => Self::Json,
        }
    }
}

/// Installs the global subscriber for `service_name`. Call once, first thing in `main`.
pub fn init(service_name: &str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    match LogFormat::from_env() {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()?,
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init()?,
    }
    tracing::debug!(service = service_name, "telemetry initialised");
    Ok(TelemetryGuard { _private: () })
}
