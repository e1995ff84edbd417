//! Rate limiting: quotas, headers, sharing through Redis, spoofing, Redis outages.

use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{
    PrivateRedis, TestGateway, eventually_ok, gateway_with_stub, spawn_gateway, spawn_stub,
    test_config,
};

async fn get_product(gateway: &TestGateway, extra: Option<(&str, &str)>) -> reqwest::Response {
    let mut request = gateway
        .client
        .get(gateway.url("/v1/products/00000000-0000-0000-0000-000000000001"));
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_quota_is_enforced_with_ratelimit_headers_and_a_429_problem_with_retry_after(
    pool: PgPool,
) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.rate_limit_default = "5/m".parse().unwrap();
    })
    .await;

    for i in 0..5 {
        let response = get_product(&gateway, None).await;
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"default\";q=5;w=60"
        );
        let remaining = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            remaining.starts_with(&format!("\"default\";r={};t=", 4 - i)),
            "{remaining}"
        );
    }
    let response = get_product(&gateway, None).await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=12).contains(&retry_after),
        "one token every 12 s: {retry_after}"
    );
    assert!(response.headers().contains_key("ratelimit-policy"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(stub.hits(), 5, "the limited request never reached orders");

    // Unlimited routes stay reachable.
    let response = gateway.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("ratelimit"));
}

#[sqlx::test(migrations = "../migrations")]
async fn two_gateways_sharing_one_redis_enforce_one_quota_between_them(pool: PgPool) {
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, _stub) = spawn_stub(&lifecycle).await;
    let mut config = test_config(&pool, &orders);
    config.rate_limit_default = "6/m".parse().unwrap();
    let first = spawn_gateway(config.clone()).await;
    let second = spawn_gateway(config).await;

    let mut allowed = 0;
    for i in 0..12 {
        let gateway = if i % 2 == 0 { &first } else { &second };
        if get_product(gateway, None).await.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 6, "one shared quota of 6, not 6 per replica");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_does_not_buy_a_fresh_quota(pool: PgPool) {
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, _stub) = spawn_stub(&lifecycle).await;
    let mut config = test_config(&pool, &orders);
    config.rate_limit_default = "3/m".parse().unwrap();
    // No trusted proxies: 127.0.0.1 is a plain client.
    let gateway = spawn_gateway(config).await;

    let mut statuses = Vec::new();
    for i in 0..6 {
        let spoof = format!("198.51.100.{i}");
        statuses.push(
            get_product(&gateway, Some(("x-forwarded-for", &spoof)))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}

#[sqlx::test(migrations = "../migrations")]
async fn behind_a_trusted_proxy_each_forwarded_client_gets_its_own_quota(pool: PgPool) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.rate_limit_default = "2/m".parse().unwrap();
        config.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;

    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            let response = get_product(&gateway, Some(("x-forwarded-for", client))).await;
            assert_eq!(response.status(), 200);
            let echoed: serde_json::Value = response.json().await.unwrap();
            assert_eq!(echoed["x-forwarded-for"], format!("{client}, 127.0.0.1"));
        }
        assert_eq!(
            get_product(&gateway, Some(("x-forwarded-for", client)))
                .await
                .status(),
            429
        );
    }
    assert_eq!(stub.hits(), 4);
}

/// Sends a request with a throwaway client key, then reads the limiter's mode.
async fn rate_limiting_mode(gateway: &TestGateway) -> String {
    let throwaway = format!("192.0.2.{}", rand::random::<u8>());
    let _ = get_product(gateway, Some(("x-forwarded-for", &throwaway))).await;
    let ready: serde_json::Value = gateway.get_json("/readyz").await;
    ready["rate_limiting"].as_str().unwrap().to_owned()
}

/// Statuses of `n` requests of `client`, alternating between the two gateways.
async fn alternate(first: &TestGateway, second: &TestGateway, client: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let gateway = if i % 2 == 0 { first } else { second };
        statuses.push(
            get_product(gateway, Some(("x-forwarded-for", client)))
                .await
                .status()
                .as_u16(),
        );
    }
    statuses
}

#[sqlx::test(migrations = "../migrations")]
async fn when_redis_stops_local_limiting_continues_without_5xx_and_shared_limiting_resumes_when_it_is_back(
    pool: PgPool,
) {
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, _stub) = spawn_stub(&lifecycle).await;
    let mut redis = PrivateRedis::start().await;
    let mut config = test_config(&pool, &orders);
    config.redis.url = redis.url();
    config.rate_limit_default = "4/m".parse().unwrap();
    // The test is the trusted proxy, so it can play several clients.
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
    let first = spawn_gateway(config.clone()).await;
    let second = spawn_gateway(config).await;
    let allowed = |s: &[u16]| s.iter().filter(|s| **s == 200).count();

    // Redis up: one shared quota of 4 across both replicas.
    let statuses = alternate(&first, &second, "198.51.100.1", 8).await;
    assert_eq!(allowed(&statuses), 4, "{statuses:?}");

    // Redis down: each replica limits on its own (4 each), and never answers 5xx.
    redis.kill();
    let statuses = alternate(&first, &second, "198.51.100.2", 12).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        allowed(&statuses),
        8,
        "per-replica local quotas: {statuses:?}"
    );
    assert_eq!(rate_limiting_mode(&first).await, "local");

    // Redis back: both replicas return to the shared state by themselves.
    redis.restart().await;
    for gateway in [&first, &second] {
        eventually_ok(
            Duration::from_secs(10),
            "the limiter recovered by itself (mode `shared`)",
            async || match rate_limiting_mode(gateway).await {
                mode if mode == "shared" => Ok(()),
                mode => Err(format!("mode `{mode}`")),
            },
        )
        .await;
    }
    let statuses = alternate(&first, &second, "198.51.100.3", 8).await;
    assert_eq!(
        allowed(&statuses),
        4,
        "one shared quota again: {statuses:?}"
    );
}
