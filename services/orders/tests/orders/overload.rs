//! Pitfalls 3 and 5: deadlines that reach the database, and exhaustion that answers
//! 503 at once instead of queueing.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

#[sqlx::test(migrations = "../../migrations")]
async fn when_the_pool_is_exhausted_extra_requests_get_503_fast_and_the_service_recovers(
    db: PgPool,
) {
    let mut config = test_config();
    config.database.max_connections = 2;
    config.database.acquire_timeout = Duration::from_millis(200);
    let app = TestApp::spawn_with(&db, config).await;
    let product = create_product(&db, 10).await;
    let url = app.url(&format!("/v1/products/{product}"));

    // Hold every connection of the service's pool, as a burst of slow queries would.
    let held = vec![
        app.state.db.acquire().await.unwrap(),
        app.state.db.acquire().await.unwrap(),
    ];
    let started = Instant::now();
    let responses = join_all((0..20).map(|_| app.client.get(&url).send())).await;
    let waited = started.elapsed();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.headers()["retry-after"], "1");
        assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    }
    // Generous bound: the answer comes after the acquire timeout, not after a queue drains.
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");

    drop(held);
    for _ in 0..20 {
        let response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    app.shutdown().await;
}

/// Holds a row lock on `product` in a transaction of its own until dropped.
async fn lock_product(db: &PgPool, product: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("select 1 from products where id = $1 for update")
        .bind(product)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_placement_stuck_on_a_slow_database_fails_at_its_deadline_and_leaves_no_row(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 10).await;
    let user = Uuid::new_v4();
    let lock = lock_product(&db, product).await;

    let response = app
        .client
        .post(app.url("/v1/orders"))
        .bearer_auth(app.token(user))
        .header("idempotency-key", "slow")
        .header("x-timeout-ms", "300")
        .json(&order(&[line(product, 1)]))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::GATEWAY_TIMEOUT, "deadline-exceeded").await;
    lock.rollback().await.unwrap();

    assert_eq!(count(&db, "orders").await, 0);
    assert_eq!(count(&db, "outbox").await, 0);
    assert_eq!(count(&db, "idempotency_keys").await, 0);
    assert_eq!(stock(&db, product).await, 10);

    // Nothing half-done blocks a retry with the same key.
    let retry = app.place(user, "slow", &order(&[line(product, 1)])).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(stock(&db, product).await, 9);
    app.shutdown().await;
    // The connection of the placement dropped at its deadline was closed by orders at
    // once, but its Postgres backend ends only when it next talks to the socket (after
    // the lock wait): wait for it, so that the test database can be dropped.
    eventually(
        Duration::from_secs(10),
        "orders' backends have ended",
        async || {
            let left: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity \
             where datname = current_database() and application_name = 'shop-orders'",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            left == 0
        },
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn clients_that_disconnect_mid_request_leave_no_connection_or_task_behind(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 1000).await;
    let jobs = app.state.lifecycle.tracked_tasks();
    let lock = lock_product(&db, product).await;

    // Forty clients give up after 100 ms while their placements wait on the lock.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let token = app.token(Uuid::new_v4());
    let attempts = join_all((0..40).map(|i| {
        impatient
            .post(app.url("/v1/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("gone-{i}"))
            .json(&order(&[line(product, 1)]))
            .send()
    }))
    .await;
    assert!(
        attempts.iter().all(|r| r.is_err()),
        "every client timed out"
    );
    drop(impatient);
    lock.rollback().await.unwrap();

    // Whatever ran on is bounded by the request deadline; then pool and tasks are back.
    eventually_ok(
        Duration::from_secs(15),
        "no connection in use and only the jobs' tasks tracked",
        async || {
            let in_use = app.state.db.size() - app.state.db.num_idle() as u32;
            let tracked = app.state.lifecycle.tracked_tasks();
            if in_use == 0 && tracked == jobs {
                Ok(())
            } else {
                Err(format!(
                    "{in_use} connections still in use, {tracked} tasks tracked (jobs: {jobs})"
                ))
            }
        },
    )
    .await;
    // Every order that was placed is whole: one line and one event each.
    let orders = count(&db, "orders").await;
    assert_eq!(count(&db, "order_items").await, orders);
    assert_eq!(count(&db, "outbox").await, orders);
    assert_eq!(i64::from(stock(&db, product).await), 1000 - orders);
    app.shutdown().await;
}
