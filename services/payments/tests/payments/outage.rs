//! Redis or Postgres down for a few seconds while orders flow: the consumers back off,
//! then resume, and nothing is lost.

use std::{process::Stdio, time::Duration};

use crate::harness::{Bench, Customer, PrivateRedis, TcpProxy, eventually, metric};

/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(3);

#[sqlx::test(migrations = "../../migrations")]
async fn with_redis_down_for_a_few_seconds_the_saga_backs_off_then_settles_every_order(
    pool: sqlx::PgPool,
) {
    // A Redis of the test's own that survives a crash (append-only file): the outage is
    // the process dying and coming back, not its data vanishing.
    let mut redis = PrivateRedis::start_persistent().await;
    let bench = Bench::with_redis(&pool, redis.url());
    // A read whose reply the crash swallowed is pending all the same: a short claim
    // idle gets it back soon.
    let fast_retry = [
        ("REDIS_TIMEOUT", "200ms"),
        ("PAYMENTS_CLAIM_IDLE", "3s"),
        ("ORDERS_CLAIM_IDLE", "3s"),
    ];
    let orders = bench.orders(&fast_retry, Stdio::null()).await;
    let payments = bench.payments(&fast_retry, Stdio::null()).await;
    let product = bench.product(1000).await;
    let customer = Customer::default();
    let mut placed = Vec::new();
    for _ in 0..10 {
        placed.push(customer.place(&orders, product, 1).await);
    }

    redis.kill();
    // Orders keep being placed: their events wait in the outbox.
    for _ in 0..10 {
        placed.push(customer.place(&orders, product, 1).await);
    }
    tokio::time::sleep(OUTAGE).await;
    redis.restart().await;

    bench.assert_each_paid_once(&placed).await;
    assert!(
        metric(&payments, "stream_consumer_read_failures_total", &[]).await >= 1.0,
        "payments' reader noticed the outage (and backed off)"
    );
    assert_eq!(
        metric(&payments, "stream_consumer_dead_lettered_total", &[]).await,
        0.0,
        "an outage dead-letters nothing"
    );
    assert_eq!(bench.stock(product).await, 1000 - 20);
}

#[sqlx::test(migrations = "../../migrations")]
async fn with_postgres_cut_off_from_payments_for_a_few_seconds_it_backs_off_then_settles_every_order(
    pool: sqlx::PgPool,
) {
    let bench = Bench::new(&pool);
    let orders = bench.orders(&[], Stdio::null()).await;
    let options = pool.connect_options();
    let postgres = format!("{}:{}", options.get_host(), options.get_port());
    let postgres = tokio::net::lookup_host(&postgres)
        .await
        .unwrap()
        .next()
        .unwrap();
    let mut proxy = TcpProxy::start(postgres).await;
    let through_proxy = bench.database_url.replacen(
        &format!(":{}/", options.get_port()),
        &format!(":{}/", proxy.port()),
        1,
    );
    assert_ne!(through_proxy, bench.database_url);
    let payments = bench
        .payments(&[("DATABASE_URL", &through_proxy)], Stdio::null())
        .await;
    let product = bench.product(1000).await;
    let customer = Customer::default();
    let mut placed = Vec::new();
    for _ in 0..10 {
        placed.push(customer.place(&orders, product, 1).await);
    }

    proxy.cut().await;
    for _ in 0..10 {
        placed.push(customer.place(&orders, product, 1).await);
    }
    eventually(
        Duration::from_secs(20),
        "payments meets the outage and retries without counting deliveries",
        async || {
            metric(
                &payments,
                "stream_consumer_retries_total",
                &[r#"kind="unavailable""#],
            )
            .await
                >= 1.0
        },
    )
    .await;
    tokio::time::sleep(OUTAGE).await;
    proxy.restore().await;

    bench.assert_each_paid_once(&placed).await;
    assert_eq!(
        metric(&payments, "stream_consumer_dead_lettered_total", &[]).await,
        0.0,
        "an outage dead-letters nothing"
    );
    bench.cleanup().await;
}
