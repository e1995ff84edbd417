//! Settlement from payment events (the orders half of the saga): `placed` → `paid` or
//! `cancelled` with the stock given back, once, whatever the stream delivers twice, and
//! poison entries set aside without blocking the ones behind them.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

/// Appends a payment event (as payments' relay writes it) to the app's payment stream.
async fn publish_payment(app: &TestApp, event_type: &str, payload: &str) {
    let client = redis::Client::open(app.state.config.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = conn
        .xadd(
            &app.state.config.payment_events_stream,
            "*",
            &[
                ("outbox_id", "1"),
                ("type", event_type),
                ("aggregate_id", "00000000-0000-0000-0000-000000000000"),
                ("payload", payload),
                ("trace_context", "{}"),
            ],
        )
        .await
        .unwrap();
}

async fn stream_entries(app: &TestApp, stream: &str) -> Vec<redis::streams::StreamId> {
    let client = redis::Client::open(app.state.config.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    reply.ids
}

async fn event_types(app: &TestApp, order: Uuid) -> Vec<String> {
    stream_entries(app, &app.state.config.outbox.stream)
        .await
        .iter()
        .filter(|e| e.get::<String>("aggregate_id").as_deref() == Some(&order.to_string()))
        .map(|e| e.get::<String>("type").unwrap())
        .collect()
}

async fn get_order(app: &TestApp, user: Uuid, order: Uuid) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/v1/orders/{order}")))
        .bearer_auth(app.token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn place_one(app: &TestApp, user: Uuid, product: Uuid, quantity: i64) -> Uuid {
    let response = app
        .place(
            user,
            &Uuid::new_v4().to_string(),
            &order(&[line(product, quantity)]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn wait_for_status(app: &TestApp, user: Uuid, order: Uuid, status: &str) -> Value {
    let mut last = Value::Null;
    eventually(
        Duration::from_secs(10),
        &format!("the order becomes {status}"),
        async || {
            last = get_order(app, user, order).await;
            last["status"] == status
        },
    )
    .await;
    last
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_succeeded_payment_pays_the_order_once_and_later_events_change_nothing(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 10).await;
    let user = Uuid::new_v4();
    let id = place_one(&app, user, product, 2).await;
    let placed = get_order(&app, user, id).await;
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["updated_at"], placed["created_at"]);
    assert!(placed.get("cancel_reason").is_none());

    let payload = json!({ "order_id": id, "user_id": user, "amount_cents": 200 }).to_string();
    publish_payment(&app, "PaymentSucceeded", &payload).await;
    let paid = wait_for_status(&app, user, id, "paid").await;
    assert!(paid.get("cancel_reason").is_none());
    assert_ne!(paid["updated_at"], paid["created_at"]);

    // The same event again, then a late failure: an order leaves `placed` only once.
    publish_payment(&app, "PaymentSucceeded", &payload).await;
    let failed = json!({ "order_id": id, "user_id": user, "reason": "declined" }).to_string();
    publish_payment(&app, "PaymentFailed", &failed).await;
    eventually(
        Duration::from_secs(10),
        "the three events are processed",
        async || {
            app.metrics_text()
                .await
                .lines()
                .filter(|l| {
                    l.starts_with("stream_consumer_processed_total")
                        && l.contains("outcome=\"duplicate\"")
                })
                .any(|l| l.ends_with(" 2"))
        },
    )
    .await;
    assert_eq!(get_order(&app, user, id).await["status"], "paid");
    assert_eq!(stock(&db, product).await, 8, "a paid order keeps its stock");
    eventually(
        Duration::from_secs(10),
        "OrderPaid is published once",
        async || event_types(&app, id).await == ["order.placed", "OrderPaid"],
    )
    .await;
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_failed_payment_cancels_the_order_and_gives_its_stock_back(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 10).await;
    let user = Uuid::new_v4();
    let id = place_one(&app, user, product, 3).await;
    assert_eq!(stock(&db, product).await, 7);
    // Read once so the catalog cache holds the stock after placement.
    let read = app
        .client
        .get(app.url(&format!("/v1/products/{product}")))
        .send()
        .await
        .unwrap();
    assert_eq!(read.json::<Value>().await.unwrap()["stock"], 7);

    let payload = json!({ "order_id": id, "user_id": user, "reason": "declined" }).to_string();
    publish_payment(&app, "PaymentFailed", &payload).await;
    let cancelled = wait_for_status(&app, user, id, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "declined");
    assert_eq!(
        stock(&db, product).await,
        10,
        "the units came back in the same transaction"
    );
    let read = app
        .client
        .get(app.url(&format!("/v1/products/{product}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.json::<Value>().await.unwrap()["stock"],
        10,
        "released stock invalidates the catalog cache"
    );
    // A late success cannot revive a cancelled order (nor take its stock again).
    publish_payment(
        &app,
        "PaymentSucceeded",
        &json!({ "order_id": id }).to_string(),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "OrderCancelled is published",
        async || event_types(&app, id).await == ["order.placed", "OrderCancelled"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get_order(&app, user, id).await["status"], "cancelled");
    assert_eq!(stock(&db, product).await, 10);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn poison_payment_events_are_dead_lettered_and_do_not_block_the_ones_behind(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 10).await;
    let user = Uuid::new_v4();
    let id = place_one(&app, user, product, 1).await;

    publish_payment(&app, "PaymentSucceeded", "{not json").await;
    let unknown = Uuid::new_v4();
    publish_payment(
        &app,
        "PaymentSucceeded",
        &json!({ "order_id": unknown }).to_string(),
    )
    .await;
    publish_payment(
        &app,
        "PaymentSucceeded",
        &json!({ "order_id": id }).to_string(),
    )
    .await;

    wait_for_status(&app, user, id, "paid").await;
    let dead_stream = format!("{}:dead", app.state.config.payment_events_stream);
    eventually(
        Duration::from_secs(10),
        "both poison entries are dead-lettered",
        async || stream_entries(&app, &dead_stream).await.len() == 2,
    )
    .await;
    let dead = stream_entries(&app, &dead_stream).await;
    let reasons: Vec<String> = dead.iter().map(|e| e.get("dead_reason").unwrap()).collect();
    assert!(reasons[0].starts_with("invalid payload"), "{reasons:?}");
    assert_eq!(reasons[1], format!("unknown order {unknown}"));
    assert_eq!(
        dead[1].get::<String>("dead_group").as_deref(),
        Some("orders")
    );
    assert_eq!(
        dead[1].get::<String>("payload"),
        Some(json!({ "order_id": unknown }).to_string())
    );

    // Nothing is left pending: dead letters are acknowledged.
    let client = redis::Client::open(app.state.config.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pending: redis::streams::StreamPendingReply = conn
        .xpending(&app.state.config.payment_events_stream, "orders")
        .await
        .unwrap();
    assert_eq!(pending.count(), 0);
    app.shutdown().await;
}
