//! SIGTERM while the provider is slow: payments stops reading, exits 0 within its
//! deadline with every job stopped, and the entries it had not acknowledged are
//! processed after the restart.

use std::{process::Stdio, time::Duration};

use crate::harness::{Bench, Customer, JSON_LOGS, LogFile, eventually};

#[sqlx::test(migrations = "../../migrations")]
async fn sigterm_during_a_slow_provider_exits_0_in_time_and_the_unacknowledged_entries_are_processed_after_restart(
    pool: sqlx::PgPool,
) {
    let bench = Bench::new(&pool);
    let orders = bench.orders(&[], Stdio::null()).await;
    // One consumer name across the restart, as a container keeps its hostname and pid:
    // the new process takes its own pending entries back at once.
    let name = ("PAYMENTS_CONSUMER_NAME", "payments-under-test");
    let log = LogFile::new("payments");
    let mut env = vec![
        name,
        ("PAYMENTS_LATENCY", "10s"),
        ("PAYMENTS_PROVIDER_TIMEOUT", "30s"),
        ("SHUTDOWN_DRAIN_TIMEOUT", "2s"),
        ("SHUTDOWN_JOBS_TIMEOUT", "5s"),
    ];
    env.extend(JSON_LOGS);
    let mut payments = bench.payments(&env, log.stdio()).await;
    let product = bench.product(100).await;
    let customer = Customer::default();
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(customer.place(&orders, product, 1).await);
    }
    eventually(
        Duration::from_secs(20),
        "payments has every order in flight",
        async || bench.pending(&bench.orders_stream, "payments").await == 5,
    )
    .await;

    payments.child.sigterm();
    // Drain 2s + jobs 5s, with room for a loaded machine: a bound, not a benchmark.
    let status = payments.child.exit_within(Duration::from_secs(20)).await;
    assert!(status.success(), "payments exits 0 on SIGTERM: {status}");
    let stopped = log
        .lines()
        .into_iter()
        .find(|l| l["message"] == "payments stopped")
        .expect("payments logged its stop");
    assert_eq!(
        stopped["clean"], true,
        "every job and task stopped within the deadline: {stopped}"
    );
    let charged: i64 = sqlx::query_scalar("select count(*) from payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(charged, 0, "no charge of the slow provider completed");
    assert_eq!(
        bench.pending(&bench.orders_stream, "payments").await,
        5,
        "the entries in flight were left unacknowledged, not lost"
    );

    let _restarted = bench
        .payments(&[name, ("PAYMENTS_LATENCY", "0ms")], Stdio::null())
        .await;
    bench.assert_each_paid_once(&placed).await;
    bench.cleanup().await;
}
