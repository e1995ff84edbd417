//! The proxy: headers, deadlines, retries, the breaker, load shedding, body limits.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{free_port, gateway_with_stub, spawn_gateway, test_config};

const PRODUCT: &str = "/v1/products/00000000-0000-0000-0000-000000000001";

#[sqlx::test(migrations = "../migrations")]
async fn proxied_requests_carry_forwarding_trace_and_deadline_headers_but_no_hop_by_hop_ones(
    pool: PgPool,
) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;

    let response = gateway
        .client
        .get(gateway.url(PRODUCT))
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("connection", "x-custom-hop")
        .header("x-custom-hop", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    assert_eq!(
        response.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["x-request-id"], "req-123");
    assert_eq!(
        echoed["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's XFF is replaced"
    );
    assert_eq!(echoed["x-forwarded-proto"], "http");
    let traceparent = echoed["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span id for the hop"
    );
    let budget: u64 = echoed["x-timeout-ms"].as_str().unwrap().parse().unwrap();
    assert!(budget > 0 && budget <= 5000, "{budget}");
    assert_eq!(
        echoed["x-custom-hop"],
        Value::Null,
        "headers named in Connection are stripped"
    );

    // Without ids, the gateway makes them.
    let response = gateway.get(PRODUCT).await;
    assert_eq!(response.headers()["x-trace-id"].len(), 32);
    assert!(!response.headers()["x-request-id"].is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_slow_upstream_gets_504_at_the_deadline_without_any_retry(pool: PgPool) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.upstream_timeout = Duration::from_millis(300);
    })
    .await;
    stub.delay_ms.store(10_000, Ordering::SeqCst);

    let started = Instant::now();
    let response = gateway.get(PRODUCT).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/upstream-timeout");
    assert!(
        elapsed >= Duration::from_millis(300),
        "waited for the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "did not wait for the upstream: {elapsed:?}"
    );
    assert_eq!(stub.hits(), 1, "a timeout is not retried");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_get_is_retried_on_503_but_a_post_without_idempotency_key_never_is(pool: PgPool) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;
    let token = shop_auth::TokenSigner::from_pem(
        include_str!("../../../deploy/dev-keys/private.pem"),
        "dev",
        Duration::from_secs(600),
    )
    .unwrap()
    .issue(uuid::Uuid::new_v4());

    stub.fail_next.store(1, Ordering::SeqCst);
    let response = gateway.get(PRODUCT).await;
    assert_eq!(response.status(), 200, "the retry succeeded");
    assert_eq!(stub.hits(), 2);

    stub.fail_next.store(1, Ordering::SeqCst);
    let response = gateway
        .client
        .post(gateway.url("/v1/orders"))
        .bearer_auth(&token)
        .json(&json!({ "items": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "passed on, not retried");
    assert_eq!(stub.hits(), 3, "exactly one attempt");
    assert_eq!(stub.created.load(Ordering::SeqCst), 0);

    stub.fail_next.store(1, Ordering::SeqCst);
    let response = gateway
        .client
        .post(gateway.url("/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "key-1")
        .json(&json!({ "items": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "retried because it carries an Idempotency-Key"
    );
    assert_eq!(stub.hits(), 5);
    assert_eq!(stub.created.load(Ordering::SeqCst), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn when_orders_is_down_the_breaker_opens_and_answers_fast_then_closes_when_it_is_back(
    pool: PgPool,
) {
    // Nothing listens on this port yet: every connect is refused.
    let port = free_port();
    let mut config = test_config(&pool, &format!("http://127.0.0.1:{port}"));
    config.breaker_min_requests = 5;
    config.breaker_open = Duration::from_millis(500);
    config.breaker_half_open_probes = 1;
    config.retry_max_attempts = 1;
    let gateway = spawn_gateway(config).await;

    for _ in 0..5 {
        let response = gateway.get(PRODUCT).await;
        assert_eq!(response.status(), 503);
    }
    // Open: answered at once, with Retry-After, without trying to connect.
    let response = gateway.get(PRODUCT).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/upstream-unavailable");

    // Orders comes back on that port; after the open period a probe closes the breaker.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let stub_lifecycle = shop_lifecycle::Lifecycle::new();
    let app = axum::Router::new().route(
        "/v1/products/{id}",
        axum::routing::get(|| async { axum::Json(json!({"ok": true})) }),
    );
    let token = stub_lifecycle.token();
    stub_lifecycle.spawn_task("stub", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..3 {
        let response = gateway.get(PRODUCT).await;
        assert_eq!(response.status(), 200, "closed again");
    }
    stub_lifecycle.shutdown(Duration::from_secs(5)).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn beyond_the_in_flight_cap_requests_get_503_at_once_and_service_recovers(pool: PgPool) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.max_in_flight = 2;
    })
    .await;
    stub.delay_ms.store(1500, Ordering::SeqCst);

    let slow = || gateway.client.get(gateway.url(PRODUCT)).send();
    let (a, b, shed) = tokio::join!(slow(), slow(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let response = gateway.get(PRODUCT).await;
        (response, started.elapsed())
    });
    let (shed, elapsed) = shed;
    assert_eq!(shed.status(), 503);
    assert!(shed.headers().contains_key("retry-after"));
    assert!(
        elapsed < Duration::from_millis(1000),
        "refused at once, not queued: {elapsed:?}"
    );
    assert_eq!(a.unwrap().status(), 200);
    assert_eq!(b.unwrap().status(), 200);

    stub.delay_ms.store(0, Ordering::SeqCst);
    let response = gateway.get(PRODUCT).await;
    assert_eq!(response.status(), 200, "recovered");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_body_over_the_limit_gets_413_and_an_unknown_path_gets_a_404_problem(pool: PgPool) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.max_body_bytes = 1024;
    })
    .await;
    let token = shop_auth::TokenSigner::from_pem(
        include_str!("../../../deploy/dev-keys/private.pem"),
        "dev",
        Duration::from_secs(600),
    )
    .unwrap()
    .issue(uuid::Uuid::new_v4());

    let response = gateway
        .client
        .post(gateway.url("/v1/orders"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(stub.hits(), 0);

    let response = gateway
        .client
        .post(gateway.url("/v1/auth/token"))
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let response = gateway.get("/nope").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("x-trace-id"));
}
