//! Prometheus metrics: one recorder per process, rendered at `GET /metrics`.
//!
//! Histograms whose name ends in `_seconds` get latency buckets (5 ms .. 10 s) so that
//! they render as Prometheus histograms (`_bucket`), which can be aggregated across
//! instances, rather than the exporter's default summaries.

use std::sync::OnceLock;

use axum::{http::header, response::IntoResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets for `*_seconds` histograms (request durations, pool acquire waits).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The builder [`install`] uses (exposed for tests that need a local recorder).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .expect("the bucket list is not empty")
}

/// Installs the global Prometheus recorder (once; later calls return the same handle).
///
/// Without the exporter's HTTP listener the recorder needs `run_upkeep()` from time to
/// time (DEPENDENCIES.md, trap 10); [`render`] does it on each scrape, which is the
/// only moment the histograms need draining.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            builder()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The `GET /metrics` body, in Prometheus text format.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// An axum handler for `GET /metrics`.
pub async fn handler() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
}
