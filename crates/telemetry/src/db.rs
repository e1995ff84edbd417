//! Spans for Postgres queries, Redis commands and cache lookups.
//!
//! Cheap to create (one `tracing` span; nothing is exported unless sampled) and safe:
//! the query summary is a `&'static str` chosen by the caller (e.g. `"SELECT products"`),
//! so parameter values can never end up in a trace.
//!
//! ```no_run
//! # async fn f() {
//! use tracing::Instrument;
//! let rows = async { /* sqlx::query(...).fetch_all(&pool).await */ }
//!     .instrument(shop_telemetry::db::pg_span("SELECT", "SELECT products"))
//!     .await;
//! # }
//! ```

use tracing::{Span, field::Empty};

/// A client span for one Postgres statement: `db.system.name=postgresql`,
/// `db.operation.name` (e.g. `"INSERT"`), `db.query.summary` (e.g. `"INSERT orders"`),
/// named after the summary.
pub fn pg_span(operation: &'static str, summary: &'static str) -> Span {
    tracing::info_span!(
        target: crate::CALL_SPAN_TARGET,
        "db query",
        otel.name = summary,
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.query.summary = summary,
        error.type = Empty,
    )
}

/// A client span for one Redis command (`"GET"`, `"EVALSHA"`, ...): `db.system.name=redis`.
pub fn redis_span(command: &'static str) -> Span {
    tracing::info_span!(
        target: crate::CALL_SPAN_TARGET,
        "redis command",
        otel.name = command,
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = "redis",
        db.operation.name = command,
        error.type = Empty,
    )
}

/// An internal span for one cache lookup in `layer` (e.g. `"moka"`, `"redis"`); record
/// the outcome with [`record_cache_hit`].
pub fn cache_span(layer: &'static str) -> Span {
    tracing::info_span!(
        target: crate::CALL_SPAN_TARGET,
        "cache lookup",
        otel.name = %format!("cache lookup {layer}"),
        otel.kind = "internal",
        cache.layer = layer,
        cache.hit = Empty,
    )
}

/// Records on a [`cache_span`] whether the lookup was a hit.
pub fn record_cache_hit(span: &Span, hit: bool) {
    span.record("cache.hit", hit);
}

/// Marks a [`pg_span`] or [`redis_span`] as failed with a short, static error type
/// (e.g. `"timeout"`, `"unique_violation"`): no messages, which may carry values.
pub fn record_error(span: &Span, error_type: &'static str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}
