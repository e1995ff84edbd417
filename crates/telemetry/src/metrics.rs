//! Prometheus metrics: one recorder per process, rendered at `GET /metrics`.

use std::sync::OnceLock;

use axum::{http::header, response::IntoResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder (once; later calls return the same handle).
///
/// Without the exporter's HTTP listener the recorder needs `run_upkeep()` from time to
/// time (DEPENDENCIES.md, trap 10); [`render`] does it on each scrape, which is the
/// only moment the histograms need draining.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
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
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(),
    )
}
