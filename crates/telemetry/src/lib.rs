//! Telemetry for every shop service: one call to adopt it.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let guard = shop_telemetry::init("orders")?;
//! let _metrics = shop_telemetry::metrics::install();
//! let app: axum::Router = axum::Router::new()
//!     .route("/metrics", axum::routing::get(shop_telemetry::metrics::handler))
//!     // Outermost, so that every other layer runs inside the request span.
//!     .layer(shop_telemetry::http::layer());
//! # let _ = app;
//! // ... serve until stopped, then, at the very end of main:
//! guard.shutdown();
//! # Ok(()) }
//! ```
//!
//! - [`init`] installs the global `tracing` subscriber: an `EnvFilter` (`RUST_LOG`), the
//!   tracing-opentelemetry layer (spans → OTLP, configured by the standard `OTEL_*`
//!   variables, see [`Config`]) and a log layer (`LOG_FORMAT=json|pretty`) whose lines carry
//!   `trace_id`/`span_id`. It also installs the W3C TraceContext + Baggage propagator.
//!   It returns a [`TelemetryGuard`] that flushes logs and spans on shutdown or drop.
//! - [`http`]: the server layer (request span, `x-trace-id`, `x-request-id`, RED metrics)
//!   and the client side ([`http::inject_context`]).
//! - [`db`]: Postgres, Redis and cache spans. [`outbox`]: trace context stored with an
//!   outbox row and continued by the relay.
//! - [`metrics`]: the Prometheus recorder and `/metrics`; [`runtime`]: process and tokio
//!   gauges sampled by a periodic job.

pub mod config;
pub mod db;
pub mod http;
mod logs;
pub mod metrics;
mod otel;
pub mod outbox;
pub mod runtime;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::{
    LazyLock, OnceLock,
    atomic::{AtomicBool, Ordering},
};

pub use config::{Config, LogFormat, OtlpConfig, OtlpProtocol, SamplerConfig};

use opentelemetry::{propagation::TextMapCompositePropagator, trace::TracerProvider as _};
use opentelemetry_sdk::{
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::SdkTracerProvider,
};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
};

/// The target of the short spans around one outgoing call (HTTP client, Postgres, Redis,
/// cache lookup). The JSON log layer does not track them: a line logged inside one shows
/// the enclosing request span under `span` (its `span_id` is still the call's).
pub(crate) const CALL_SPAN_TARGET: &str = "shop_telemetry::call";

/// W3C TraceContext + Baggage, the propagator [`init`] also installs globally. The
/// request path uses this one directly, not the global behind its lock.
pub(crate) static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(w3c_propagator);

fn w3c_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Whether the request span records its trace id as a field: only for pretty logs, as
/// JSON lines carry `trace_id` at the top level already (and each record re-serializes
/// the span's fields).
static TRACE_ID_FIELD: AtomicBool = AtomicBool::new(false);

pub(crate) fn trace_id_field_wanted() -> bool {
    TRACE_ID_FIELD.load(Ordering::Relaxed)
}

/// Counts log lines dropped because the writer's buffer was full (see [`runtime::sample`]).
static LOG_DROPS: OnceLock<ErrorCounter> = OnceLock::new();

/// Flushes and shuts down telemetry when dropped (or when [`TelemetryGuard::shutdown`] is called).
///
/// Shutting down blocks for up to a few seconds while the last spans are exported
/// (DEPENDENCIES.md trap 5). Call it at the end of `main`, after the server and jobs have
/// stopped: inside a multi-threaded runtime it runs in `block_in_place`, so the
/// runtime's other workers keep serving the exporter's connection (needed for gRPC).
#[must_use = "dropping the guard flushes and stops telemetry"]
pub struct TelemetryGuard {
    /// Taken by the first shutdown; `None` afterwards (shutdown is idempotent).
    inner: Option<GuardInner>,
}

struct GuardInner {
    provider: SdkTracerProvider,
    /// Dropping it flushes the log buffer and stops the writer thread.
    log_writer: WorkerGuard,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("active", &self.inner.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Exports the spans still queued, shuts the tracer provider down, then flushes the
    /// log buffer. Idempotent.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let provider = inner.provider;
        let shutdown = move || {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "tracer provider shutdown failed; some spans may be lost");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown);
            }
            // Outside a runtime nothing else needs this thread; on a current-thread runtime
            // `block_in_place` would panic, and blocking is the lesser evil at the very end.
            _ => shutdown(),
        }
        drop(inner.log_writer);
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.close();
    }
}

/// Installs the global subscriber for `service_name`, configured from the environment,
/// logging to stdout. Call once, first thing in `main` (inside the tokio runtime when
/// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
pub fn init(service_name: &str) -> anyhow::Result<TelemetryGuard> {
    init_with(Config::from_env(service_name), std::io::stdout())
}

/// Installs the global subscriber for `config`, writing log lines to `writer` through a
/// bounded, lossy, non-blocking buffer. Fails if a global subscriber is already installed.
pub fn init_with<W>(config: Config, writer: W) -> anyhow::Result<TelemetryGuard>
where
    W: std::io::Write + Send + 'static,
{
    let (writer, log_writer) = NonBlockingBuilder::default()
        .buffered_lines_limit(config.log_buffer_lines)
        .lossy(true)
        .thread_name("shop-telemetry-log-writer")
        .finish(writer);
    let _ = LOG_DROPS.set(writer.error_counter());

    let (provider, mut warnings) = otel::build_provider(&config);
    warnings.extend(config.warnings.iter().cloned());
    let tracer = provider.tracer("shop-telemetry");
    // Per span, the layer's defaults also cost: the thread name and id (an allocation,
    // and meaningless for a task that moves between workers), and activating the span's
    // OpenTelemetry context on every poll of an instrumented future. Nothing here reads
    // `opentelemetry::Context::current()`: parents come from the tracing span tree and
    // outgoing calls inject `span.context()` (`http::inject_context_from`). Measured with
    // `examples/span_cost.rs` (docs/telemetry.md, "Cost").
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false);

    // Our own spans (request, db, outbox) stay enabled whatever RUST_LOG says: disabling
    // them would break propagation and leave warn/error lines without a trace id. An
    // explicit `shop_telemetry=...` directive in RUST_LOG wins.
    let directives = if config.log_filter.contains("shop_telemetry") {
        config.log_filter.clone()
    } else {
        format!("{},shop_telemetry=info", config.log_filter)
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        warnings.push(format!("invalid RUST_LOG ({e}); using the default filter"));
        EnvFilter::new(config::DEFAULT_LOG_FILTER)
    });
    let slot = logs::DispatchSlot::default();
    TRACE_ID_FIELD.store(config.log_format == LogFormat::Pretty, Ordering::Relaxed);
    let (json, pretty) = match config.log_format {
        LogFormat::Json => (
            Some(
                logs::json_layer(writer, &config.service_name, &slot).with_filter(filter_fn(
                    |meta| !(meta.is_span() && meta.target() == CALL_SPAN_TARGET),
                )),
            ),
            None,
        ),
        LogFormat::Pretty => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_ansi(false)
                    .with_writer(writer),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(slot)
        .with(json)
        .with(pretty)
        .try_init()?;

    // For third-party code that uses the global; ours uses `PROPAGATOR`.
    opentelemetry::global::set_text_map_propagator(w3c_propagator());
    opentelemetry::global::set_tracer_provider(provider.clone());

    for warning in &warnings {
        tracing::warn!(service = %config.service_name, "telemetry: {warning}");
    }
    tracing::info!(
        service = %config.service_name,
        exporter = ?config.otlp,
        sampler = ?config.sampler,
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        inner: Some(GuardInner {
            provider,
            log_writer,
        }),
    })
}

/// The trace id of the current span (32 lowercase hex), for problem+json bodies and
/// error logs. `None` outside any span or before [`init`].
pub fn current_trace_id() -> Option<String> {
    http::trace_id_of(&tracing::Span::current())
}

/// Log lines dropped so far because the writer could not keep up (0 before [`init`]).
pub fn dropped_log_lines() -> usize {
    LOG_DROPS.get().map_or(0, ErrorCounter::dropped_lines)
}
