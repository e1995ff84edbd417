//! The happy path and the compensation: a placed order is paid; one above the decline
//! threshold is cancelled and its stock comes back; both streams carry the events.

use std::process::Stdio;

use uuid::Uuid;

use crate::harness::{Bench, Customer, PRICE_CENTS, metric};

/// A `payments` row.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct Payment {
    order_id: Uuid,
    status: String,
    charge_id: Option<String>,
    failure_reason: Option<String>,
    amount_cents: i64,
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_placed_order_is_paid_and_one_above_the_decline_threshold_is_cancelled_with_its_stock_back(
    pool: sqlx::PgPool,
) {
    let bench = Bench::new(&pool);
    let orders = bench.orders(&[], Stdio::null()).await;
    // Declines anything above 4 units.
    let threshold = (4 * PRICE_CENTS).to_string();
    let payments_process = bench
        .payments(
            &[("PAYMENTS_DECLINE_ABOVE_CENTS", &threshold)],
            Stdio::null(),
        )
        .await;
    let product = bench.product(100).await;
    let customer = Customer::default();

    let paid = customer.place(&orders, product, 1).await;
    let declined = customer.place(&orders, product, 5).await;
    let statuses = bench.settled(&[paid, declined]).await;

    assert_eq!(statuses[&paid], ("paid".into(), None));
    assert_eq!(
        statuses[&declined],
        ("cancelled".into(), Some("declined".into()))
    );
    assert_eq!(
        bench.stock(product).await,
        99,
        "the declined order's 5 units came back, the paid one's did not"
    );
    let shown = customer.order(&orders, declined).await;
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(shown["cancel_reason"], "declined");

    let payments: Vec<Payment> = sqlx::query_as(
        "select order_id, status, charge_id, failure_reason, amount_cents from payments order by amount_cents",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let charge_id = shop_payments::provider::charge_id(paid);
    assert_eq!(
        payments,
        [
            Payment {
                order_id: paid,
                status: "succeeded".into(),
                // Derived from the order id, the provider call's idempotency key.
                charge_id: Some(charge_id),
                failure_reason: None,
                amount_cents: PRICE_CENTS,
            },
            Payment {
                order_id: declined,
                status: "failed".into(),
                charge_id: None,
                failure_reason: Some("declined".into()),
                amount_cents: 5 * PRICE_CENTS,
            },
        ]
    );

    // The payment events reach the stream orders reads...
    let payment_events = bench.entries(&bench.payments_stream).await;
    let mut types: Vec<&str> = payment_events
        .iter()
        .map(|(_, f)| f["type"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["PaymentFailed", "PaymentSucceeded"]);
    let failed = payment_events
        .iter()
        .find(|(_, f)| f["type"] == "PaymentFailed")
        .map(|(_, f)| serde_json::from_str::<serde_json::Value>(&f["payload"]).unwrap())
        .unwrap();
    assert_eq!(failed["order_id"], declined.to_string());
    assert_eq!(failed["reason"], "declined");
    assert_eq!(failed["amount_cents"], 5 * PRICE_CENTS);
    assert!(failed["charge_id"].is_null());
    // ...and the settlements follow the placements on the orders stream (once relayed).
    let expected = [
        "OrderCancelled",
        "OrderPaid",
        "order.placed",
        "order.placed",
    ];
    let order_types = crate::harness::eventually_ok(
        std::time::Duration::from_secs(10),
        "the settlements are published",
        async || {
            let mut types = bench.types(&bench.orders_stream).await;
            types.sort_unstable();
            if types == expected {
                Ok(types)
            } else {
                Err(types)
            }
        },
    )
    .await;
    assert_eq!(order_types, expected);

    // What the dashboards and alerts read, from payments' /metrics.
    let every = [
        "http_requests_total",
        "tokio_alive_tasks",
        "process_resident_memory_bytes",
        "shop_job_running",
        "db_pool_connections",
        "redis_pool_connections",
        "stream_consumer_processed_total",
        "stream_consumer_processing_seconds",
        "stream_consumer_in_flight",
        "stream_consumer_pending",
        "stream_consumer_lag",
        "stream_consumer_oldest_pending_age_seconds",
        "stream_dead_letter_entries",
        "payments_provider_seconds",
        "payments_provider_calls_total",
        "outbox_events_published_total",
        "outbox_backlog",
        "outbox_oldest_unpublished_age_seconds",
    ];
    let client = reqwest::Client::new();
    crate::harness::eventually_ok(
        std::time::Duration::from_secs(10),
        "payments exports every metric of its dashboards",
        async || {
            let text = client
                .get(format!("{}/metrics", payments_process.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let names = shop_telemetry::testing::metric_names(&text);
            let missing: Vec<&str> = every
                .iter()
                .filter(|name| !names.contains(**name))
                .copied()
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing)
            }
        },
    )
    .await;
    bench.cleanup().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_provider_failing_at_every_delivery_cancels_the_order_as_payment_failed_and_its_settings_change_at_run_time(
    pool: sqlx::PgPool,
) {
    let bench = Bench::new(&pool);
    let orders = bench.orders(&[], Stdio::null()).await;
    let payments = bench
        .payments(&[("PAYMENTS_MAX_DELIVERIES", "3")], Stdio::null())
        .await;
    let product = bench.product(100).await;
    let customer = Customer::default();
    let client = reqwest::Client::new();
    let set_failure_rate = async |rate: f64| {
        let response = client
            .put(format!("{}/admin/provider", payments.url))
            .json(&serde_json::json!({ "latency": "5ms", "failure_rate": rate }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };

    set_failure_rate(1.0).await;
    let failing = customer.place(&orders, product, 2).await;
    let statuses = bench.settled(&[failing]).await;
    assert_eq!(
        statuses[&failing],
        ("cancelled".into(), Some("payment_failed".into())),
        "a transient failure at every delivery allowed fails the payment for good"
    );
    assert_eq!(bench.stock(product).await, 100, "its stock came back");
    let (status, reason, attempts): (String, Option<String>, i32) =
        sqlx::query_as("select status, failure_reason, attempts from payments where order_id = $1")
            .bind(failing)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref(), attempts),
        ("failed", Some("payment_failed"), 3)
    );
    assert_eq!(
        metric(
            &payments,
            "payments_provider_calls_total",
            &[r#"outcome="error""#]
        )
        .await,
        3.0,
        "one provider call per delivery, retried with backoff"
    );
    assert!(
        bench
            .entries(&format!("{}:dead", bench.orders_stream))
            .await
            .is_empty(),
        "a failed payment is an outcome, not a dead letter"
    );

    set_failure_rate(0.0).await;
    let recovered = customer.place(&orders, product, 1).await;
    bench.assert_each_paid_once(&[recovered]).await;
    bench.cleanup().await;
}
