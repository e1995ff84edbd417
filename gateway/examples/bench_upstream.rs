//! A minimal axum JSON handler: the upstream that nginx (and the gateway) proxy to in
//! `bench/gateway/run.sh`, the yardstick of "a plain reverse-proxy hop".
//!
//! `BENCH_UPSTREAM_ADDR` (default 127.0.0.1:9901).

use axum::{Json, Router, routing::get};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("BENCH_UPSTREAM_ADDR").unwrap_or_else(|_| "127.0.0.1:9901".into());
    let product = json!({
        "id": "00000000-0000-0000-0000-000000000001",
        "sku": "SKU-1",
        "name": "Product 1",
        "description": "A product for benchmarks",
        "price_cents": 1999,
        "currency": "EUR",
        "stock": 100
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/products/{id}",
            get(move || {
                let product = product.clone();
                async move { Json(product) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shop_lifecycle::shutdown_signal())
        .await?;
    Ok(())
}
