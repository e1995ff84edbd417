//! End to end with the real `orders` binary as a separate process (built by cargo next
//! to this test binary), the gateway in-process, one database per test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{first_product, spawn_gateway, spawn_orders, test_config};

#[sqlx::test(migrations = "../migrations")]
async fn a_seeded_user_logs_in_and_places_an_order_through_the_gateway_and_orders_accepts_the_token(
    pool: PgPool,
) {
    let (orders, _orders_process) = spawn_orders(&pool, &[]);
    let gateway = spawn_gateway(test_config(&pool, &orders)).await;
    let token = gateway.login("user1@shop.test", "password1").await;
    let product = first_product(&pool).await;

    let response = gateway.get(&format!("/v1/products/{product}")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], product.to_string());

    let response = gateway
        .client
        .post(gateway.url("/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "first-order")
        .json(&json!({ "items": [{ "product_id": product, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();

    // Orders verifies the gateway's token itself, directly too.
    let response = reqwest::Client::new()
        .get(format!("{orders}/v1/orders/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A fault injector between the gateway and orders: the first `POST /v1/orders` is
/// delivered to orders (the order is placed) but its answer is "lost" and replaced by a
/// 502, as when a connection breaks after the upstream committed.
#[derive(Clone)]
struct LossyProxy {
    orders: String,
    client: reqwest::Client,
    posts: Arc<AtomicUsize>,
}

async fn lossy(
    State(proxy): State<LossyProxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut request = proxy
        .client
        .request(method.clone(), format!("{}{}", proxy.orders, uri))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").cloned();
    let bytes = response.bytes().await.unwrap();
    if method == Method::POST && proxy.posts.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::BAD_GATEWAY, "connection lost").into_response();
    }
    let mut response = (
        StatusCode::from_u16(status.as_u16()).unwrap(),
        [("content-type", "application/json")],
        bytes,
    )
        .into_response();
    if let Some(replayed) = replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", replayed);
    }
    response
}

#[sqlx::test(migrations = "../migrations")]
async fn a_post_with_an_idempotency_key_retried_after_a_lost_answer_creates_exactly_one_order(
    pool: PgPool,
) {
    let (orders, _orders_process) = spawn_orders(&pool, &[]);
    let proxy = LossyProxy {
        orders,
        client: reqwest::Client::new(),
        posts: Arc::default(),
    };
    let posts = Arc::clone(&proxy.posts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let harness = shop_lifecycle::Lifecycle::new();
    let token = harness.token();
    harness.spawn_task("lossy_proxy", async move {
        let app = axum::Router::new().fallback(lossy).with_state(proxy);
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });

    let gateway = spawn_gateway(test_config(&pool, &proxy_url)).await;
    let token = gateway.login("user1@shop.test", "password1").await;
    let product = first_product(&pool).await;

    let response = gateway
        .client
        .post(gateway.url("/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "retry-me")
        .json(&json!({ "items": [{ "product_id": product, "quantity": 2 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the retry got the placed order");
    assert_eq!(
        response.headers()["idempotent-replayed"],
        "true",
        "orders replayed it"
    );
    assert_eq!(posts.load(Ordering::SeqCst), 2, "one retry");
    let count: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "exactly one order");
    harness.shutdown(Duration::from_secs(5)).await;
}
