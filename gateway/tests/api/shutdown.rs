//! Shutdown: SIGTERM drains in-flight requests, then the process exits 0.

use std::{process::Stdio, sync::atomic::Ordering, time::Duration};

use sqlx::PgPool;

use crate::helpers::{eventually, gateway_with_stub, spawn_gateway_process, spawn_stub};

#[sqlx::test(migrations = "../migrations")]
async fn sigterm_under_traffic_drains_in_flight_requests_and_exits_0(pool: PgPool) {
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, stub) = spawn_stub(&lifecycle).await;
    stub.delay_ms.store(1000, Ordering::SeqCst);
    let (port, mut gateway) = spawn_gateway_process(&pool, &orders, &[], Stdio::null());

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/products/00000000-0000-0000-0000-000000000001");
    let in_flight: Vec<_> = (0..8).map(|_| client.get(&url).send()).collect();
    let requests = futures::future::join_all(in_flight);
    let terminate = async {
        // Let the requests reach the upstream, then ask the gateway to stop.
        eventually(
            Duration::from_secs(30),
            "the eight requests reach the upstream",
            async || stub.hits() >= 8,
        )
        .await;
        gateway.sigterm();
    };
    let (responses, ()) = tokio::join!(requests, terminate);
    for response in responses {
        assert_eq!(
            response.unwrap().status(),
            200,
            "in-flight requests were drained"
        );
    }
    let status = gateway.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer accepting"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn after_serving_traffic_a_stopped_gateway_leaves_no_task_behind(pool: PgPool) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;
    let lifecycle = gateway.lifecycle.clone();

    let requests = (0..50).map(|i| {
        let request = gateway
            .client
            .get(gateway.url(&format!("/v1/products/00000000-0000-0000-0000-{i:012}")));
        async move { request.send().await.unwrap().status() }
    });
    for status in futures::future::join_all(requests).await {
        assert_eq!(status, 200);
    }
    // Login attempts run on the blocking pool through the lifecycle too.
    let response = gateway
        .client
        .post(gateway.url("/v1/auth/token"))
        .json(&serde_json::json!({"email": "x@shop.test", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        lifecycle.tracked_tasks() > 0,
        "connections and jobs are tracked"
    );

    gateway.stop().await;
    assert_eq!(
        lifecycle.tracked_tasks(),
        0,
        "every connection task and job ended"
    );
    let jobs = lifecycle.jobs();
    assert!(jobs.iter().any(|j| j.name == "rate_limit_gc"), "{jobs:?}");
}
