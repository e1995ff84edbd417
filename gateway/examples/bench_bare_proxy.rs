//! The floor of the gateway's stack: an axum server forwarding every request with the
//! same pooled hyper-util client the gateway uses, and nothing else (no spans, metrics,
//! authentication, rate limit, breaker, retries or deadlines). `bench/gateway/run.sh`
//! measures it next to nginx and the gateway, to show how much of the distance to nginx
//! is the stack (axum + hyper + tokio, a server and a client side per request) and how
//! much is the gateway's own work.
//!
//! `BENCH_PROXY_ADDR` (default 127.0.0.1:9906) → `BENCH_PROXY_UPSTREAM` (default
//! http://127.0.0.1:9901).

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, Uri},
    response::{IntoResponse as _, Response},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Body>,
    base: String,
}

async fn forward(State(upstream): State<Upstream>, mut request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = format!("{}{path}", upstream.base).parse::<Uri>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    *request.uri_mut() = uri;
    match upstream.client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("BENCH_PROXY_ADDR").unwrap_or_else(|_| "127.0.0.1:9906".into());
    let base =
        std::env::var("BENCH_PROXY_UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:9901".into());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(128)
        .build(connector);
    let app = Router::new()
        .fallback(forward)
        .with_state(Upstream { client, base });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shop_lifecycle::shutdown_signal())
        .await?;
    Ok(())
}
