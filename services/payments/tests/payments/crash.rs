//! A payments replica that dies in the middle of a batch loses nothing and charges
//! nothing twice; two replicas in one group share the orders without doubling any.

use std::{process::Stdio, time::Duration};

use crate::harness::{Bench, Customer, eventually, metric};

#[sqlx::test(migrations = "../../migrations")]
async fn payments_sigkilled_in_the_middle_of_a_batch_and_started_again_settles_every_order_once(
    pool: sqlx::PgPool,
) {
    let bench = Bench::new(&pool);
    let orders = bench.orders(&[], Stdio::null()).await;
    // A slow provider, so that the kill finds entries in flight; a short claim idle, so
    // that the next replica (a new consumer name: a new pid) takes them over soon.
    let slow = [
        ("PAYMENTS_LATENCY", "300ms"),
        ("PAYMENTS_CONSUMER_CONCURRENCY", "8"),
        ("PAYMENTS_CLAIM_IDLE", "2s"),
    ];
    let mut first = bench.payments(&slow, Stdio::null()).await;
    let product = bench.product(1000).await;
    let customer = Customer::default();
    let mut placed = Vec::new();
    for _ in 0..40 {
        placed.push(customer.place(&orders, product, 1).await);
    }

    let charged = async || {
        sqlx::query_scalar::<_, i64>("select count(*) from payments")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(30),
        "some orders are charged",
        async || charged().await >= 5,
    )
    .await;
    first.child.0.as_mut().unwrap().kill().unwrap();
    first.child.exit_within(Duration::from_secs(5)).await;
    let charged_at_kill = charged().await;
    let in_flight = bench.pending(&bench.orders_stream, "payments").await;
    assert!(
        charged_at_kill < 40 && in_flight > 0,
        "killed mid-batch: {charged_at_kill} charged, {in_flight} delivered and unacknowledged"
    );

    let second = bench.payments(&slow, Stdio::null()).await;
    bench.assert_each_paid_once(&placed).await;
    assert!(
        metric(&second, "stream_consumer_reclaimed_total", &[]).await >= 1.0,
        "the restarted replica reclaimed the dead one's entries"
    );
    eventually(
        Duration::from_secs(10),
        "nothing is left pending",
        async || bench.pending(&bench.orders_stream, "payments").await == 0,
    )
    .await;
    bench.cleanup().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_payments_replicas_in_one_group_process_each_order_once_in_effect(pool: sqlx::PgPool) {
    let bench = Bench::new(&pool);
    let orders = bench.orders(&[], Stdio::null()).await;
    let replica = [
        ("PAYMENTS_LATENCY", "100ms"),
        ("PAYMENTS_CONSUMER_CONCURRENCY", "4"),
    ];
    let a = bench.payments(&replica, Stdio::null()).await;
    let b = bench.payments(&replica, Stdio::null()).await;
    let product = bench.product(1000).await;
    let customer = Customer::default();
    let mut placed = Vec::new();
    for _ in 0..60 {
        placed.push(customer.place(&orders, product, 1).await);
    }

    bench.assert_each_paid_once(&placed).await;
    let succeeded = |p| async move {
        metric(
            p,
            "stream_consumer_processed_total",
            &[r#"outcome="succeeded""#],
        )
        .await
    };
    let (by_a, by_b) = (succeeded(&a).await, succeeded(&b).await);
    assert_eq!(
        by_a + by_b,
        60.0,
        "each order was charged by exactly one replica ({by_a} + {by_b})"
    );
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both replicas took part ({by_a} + {by_b})"
    );
    bench.cleanup().await;
}
