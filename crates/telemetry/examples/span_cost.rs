//! What tracing costs one proxied request, on one thread, without the network.
//!
//! Each iteration is what the gateway's telemetry does for one proxied request: the
//! server layer (server span from the caller's `traceparent`, request id, RED metrics)
//! around a handler that opens a client span, injects its context into the outgoing
//! headers, polls a future inside it and records the response status. Prints the mean
//! cost per request in nanoseconds.
//!
//! ```text
//! cargo run --release -p shop-telemetry --example span_cost
//! RUST_LOG=off,shop_telemetry=off cargo run --release -p shop-telemetry --example span_cost
//! ```
//! The second line is the floor: the same work with every span disabled. Log lines go to
//! a sink; set the `OTEL_*` variables to measure with an exporter.

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer as _, Service as _, ServiceExt as _, service_fn};
use tracing::Instrument as _;

const WARMUP: u32 = 20_000;
const ITERATIONS: u32 = 200_000;
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

async fn handler(
    request: Request<()>,
) -> Result<Response<axum::body::Body>, std::convert::Infallible> {
    let span = shop_telemetry::http::client_span(
        request.method(),
        "127.0.0.1:8081",
        "/v1/products/{*rest}",
    );
    let mut outgoing = HeaderMap::new();
    shop_telemetry::http::inject_context_from(&span, &mut outgoing);
    async { tokio::task::yield_now().await }
        .instrument(span.clone())
        .await;
    shop_telemetry::http::record_client_status(&span, StatusCode::OK);
    Ok(Response::new(axum::body::Body::empty()))
}

fn main() -> anyhow::Result<()> {
    let config = shop_telemetry::Config::from_env("span-cost");
    let guard = shop_telemetry::init_with(config, std::io::sink())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut service = shop_telemetry::http::layer().layer(service_fn(handler));
    let per_request = runtime.block_on(async {
        let mut run = async |n: u32, traceparent: &'static str| {
            let start = Instant::now();
            for _ in 0..n {
                let mut request = Request::new(());
                *request.method_mut() = Method::GET;
                *request.uri_mut() = "/v1/products/00000000-0000-0000-0000-000000000001"
                    .parse()
                    .expect("a valid path");
                if !traceparent.is_empty() {
                    request
                        .headers_mut()
                        .insert("traceparent", HeaderValue::from_static(traceparent));
                }
                let response = service
                    .ready()
                    .await
                    .expect("always ready")
                    .call(request)
                    .await
                    .expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
            }
            start.elapsed() / n
        };
        run(WARMUP, "").await;
        [
            ("no traceparent", run(ITERATIONS, "").await),
            ("sampled parent", run(ITERATIONS, SAMPLED).await),
            ("unsampled parent", run(ITERATIONS, UNSAMPLED).await),
        ]
    });
    let filter = std::env::var("RUST_LOG").unwrap_or_default();
    #[allow(clippy::print_stdout)] // the figures are the program's output
    for (case, cost) in per_request {
        println!(
            "{case:>16}: {:>6} ns per proxied request (mean of {ITERATIONS}, RUST_LOG={filter:?})",
            cost.as_nanos()
        );
    }
    drop(runtime);
    guard.shutdown();
    Ok(())
}
