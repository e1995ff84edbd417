//! Pitfall 1: shutdown leaves no task behind, and SIGTERM loses no order.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

#[sqlx::test(migrations = "../../migrations")]
async fn after_traffic_and_shutdown_the_tracker_is_empty_and_alive_tasks_are_back_to_baseline(
    db: PgPool,
) {
    let baseline = shop_lifecycle::alive_tasks();
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 1000).await;
    join_all((0..50).map(|i| {
        let app = &app;
        async move {
            let r = app
                .place(
                    Uuid::new_v4(),
                    &format!("k{i}"),
                    &order(&[line(product, 1)]),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    }))
    .await;
    let jobs: Vec<String> = app
        .state
        .lifecycle
        .jobs()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(
        jobs,
        [
            "cache_invalidation",
            "idempotency_cleanup",
            "metrics_sampler",
            "orders_consumer",
            "orders_consumer_metrics",
            "outbox_relay"
        ]
    );
    let lifecycle = app.state.lifecycle.clone();

    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(lifecycle.tracked_tasks(), 0);
    assert!(
        lifecycle
            .jobs()
            .iter()
            .all(|j| j.state.as_str() == "finished"),
        "{:?}",
        lifecycle.jobs()
    );

    eventually_ok(
        Duration::from_secs(5),
        "alive tasks are back to the baseline",
        async || match shop_lifecycle::alive_tasks() {
            alive if alive > baseline => Err(format!("alive tasks {alive} > baseline {baseline}")),
            _ => Ok(()),
        },
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn sigterm_while_orders_are_placed_drains_them_loses_none_and_exits_zero(db: PgPool) {
    let product = create_product(&db, 100_000).await;
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("serve")
        .env("ORDERS_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url(&db))
        .env("ORDERS_MIGRATE_ON_START", "false")
        .env(
            "EVENTS_STREAM",
            format!("shop:test:{}:events", Uuid::new_v4()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("orders starts");
    // Killed if the test ends early.
    let mut child = ChildGuard::new(child);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "orders comes up", async || {
        let up = client.get(format!("{base}/healthz")).send().await.is_ok();
        assert!(up || !child.has_exited(), "orders exited early");
        up
    })
    .await;

    let signer =
        shop_auth::TokenSigner::from_pem(DEV_PRIVATE_KEY, "dev", Duration::from_secs(600)).unwrap();
    let token = signer.issue(Uuid::new_v4());
    let body = order(&[line(product, 1)]);
    let stop_at = Instant::now() + Duration::from_millis(800);
    let mut terminated = false;
    let mut placed: Vec<Uuid> = Vec::new();
    // Eight clients place orders; SIGTERM lands in the middle of it.
    'outer: for round in 0.. {
        if !terminated && Instant::now() > stop_at {
            child.sigterm();
            terminated = true;
        }
        let results = join_all((0..8).map(|i| {
            client
                .post(format!("{base}/v1/orders"))
                .bearer_auth(&token)
                .header("idempotency-key", format!("r{round}-{i}"))
                .json(&body)
                .send()
        }))
        .await;
        for result in results {
            match result {
                Ok(r) if r.status() == StatusCode::CREATED => {
                    let order: Value = r.json().await.unwrap();
                    placed.push(order["id"].as_str().unwrap().parse().unwrap());
                }
                Ok(r) => panic!("unexpected {}", r.status()),
                // Connection refused: the server has stopped accepting.
                Err(_) if terminated => break 'outer,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(round < 100_000);
    }

    let status = child.exit_within(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(!placed.is_empty());

    let committed: Vec<Uuid> = sqlx::query_scalar("select id from orders where id = any($1)")
        .bind(&placed)
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(committed.len(), placed.len(), "every 201 has its order");
    let orders = count(&db, "orders").await;
    assert_eq!(
        count(&db, "order_items").await,
        orders,
        "no order is half-written"
    );
    assert_eq!(count(&db, "outbox").await, orders);
    assert_eq!(i64::from(stock(&db, product).await), 100_000 - orders);
}
