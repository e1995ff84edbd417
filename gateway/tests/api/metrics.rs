//! `/metrics` of both real processes, after some traffic, parsed by a real Prometheus
//! text-format parser, holds every metric the dashboards and alerts use.

use std::{process::Stdio, time::Duration};

use serde_json::json;
use shop_telemetry::testing::metric_names;
use sqlx::PgPool;

use crate::helpers::{eventually_ok, first_product, login, spawn_gateway_process, spawn_orders};

/// Scrapes `url` until every name in `expected` is present (the sampler runs every
/// 100 ms); fails naming what is still missing.
async fn assert_exports(service: &str, url: &str, expected: &[&str]) {
    let client = reqwest::Client::new();
    eventually_ok(
        Duration::from_secs(10),
        &format!("{service} /metrics exports every expected metric"),
        async || {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            let names = metric_names(&text);
            let missing: Vec<&str> = expected
                .iter()
                .filter(|name| !names.contains(**name))
                .copied()
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("{service} /metrics lacks {missing:?}"))
            }
        },
    )
    .await;
}

const EVERY_SERVICE: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds",
    "http_requests_in_flight",
    "tokio_alive_tasks",
    "tokio_workers",
    "tokio_global_queue_depth",
    "tokio_worker_busy_ratio",
    "process_resident_memory_bytes",
    "process_open_fds",
    "shop_job_running",
    "shop_job_runs",
    "shop_job_last_success_timestamp_seconds",
    "db_pool_connections",
    "db_pool_max_connections",
];

#[sqlx::test(migrations = "../migrations")]
async fn both_services_export_red_pool_runtime_job_and_their_own_metrics(pool: PgPool) {
    let sampled = [("METRICS_SAMPLE_INTERVAL", "100ms")];
    let (orders, _orders) = spawn_orders(&pool, &sampled);
    let (port, _gateway) = spawn_gateway_process(&pool, &orders, &sampled, Stdio::null());
    let gateway = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // A proxied read (cache, pools, upstream), a login (the gateway's pool) and a
    // placement (orders' pool wait, the outbox).
    let product = first_product(&pool).await;
    let read = client
        .get(format!("{gateway}/v1/products/{product}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let token = login(&client, &gateway, "user1@shop.test", "password1").await;
    let placed = client
        .post(format!("{gateway}/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", "metrics")
        .json(&json!({ "items": [{ "product_id": product, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);

    let gateway_own = [
        "gateway_ratelimit_decisions_total",
        "gateway_ratelimit_redis_up",
        "gateway_circuit_breaker_state",
        "gateway_upstream_duration_seconds",
        "gateway_upstream_retries_total",
        "gateway_requests_shed_total",
        "gateway_login_shed_total",
        "gateway_logins_total",
    ];
    let orders_own = [
        "db_pool_acquire_duration_seconds",
        "redis_pool_connections",
        "redis_pool_max_connections",
        "redis_pool_waiters",
        "cache_requests_total",
        "outbox_backlog",
        "outbox_oldest_unpublished_age_seconds",
        "orders_placed_total",
    ];
    let expected = |own: &[&'static str]| [EVERY_SERVICE, own].concat();
    assert_exports(
        "gateway",
        &format!("{gateway}/metrics"),
        &expected(&gateway_own),
    )
    .await;
    assert_exports(
        "orders",
        &format!("{orders}/metrics"),
        &expected(&orders_own),
    )
    .await;
}
