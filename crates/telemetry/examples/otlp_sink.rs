//! A standalone OTLP/HTTP sink for benchmarks (bench/telemetry/run.sh): accepts
//! `POST /v1/traces`, decodes each request's protobuf (the work any collector does) and
//! counts the spans, keeping nothing else, so its memory stays flat however long it runs.
//! Prints its base URL first, and the count when stopped (SIGTERM or Ctrl-C).
//!
//! ```sh
//! cargo run --release -p shop-telemetry --features testing --example otlp_sink -- 127.0.0.1:4318
//! ```

// A command-line tool: stdout is its output (the URL to use, then the count).
#![allow(clippy::print_stdout)]

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

async fn traces(State(count): State<Arc<AtomicU64>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    count.fetch_add(spans as u64, Ordering::Relaxed);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".to_owned());
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(Arc::clone(&count));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await?;
    println!("spans received: {}", count.load(Ordering::Relaxed));
    Ok(())
}
