//! Poison entries go to their stream's dead letters with the reason, and the entries
//! behind them are still processed.

use std::{process::Stdio, time::Duration};

use serde_json::json;

use crate::harness::{Bench, Customer, eventually_ok};

#[sqlx::test(migrations = "../../migrations")]
async fn bad_json_and_a_payment_for_an_unknown_order_are_dead_lettered_and_do_not_block_the_entries_behind(
    pool: sqlx::PgPool,
) {
    let bench = Bench::new(&pool);
    // Before the consumers start: the poison is the oldest entry of each stream.
    let bad_json = bench
        .append(
            &bench.orders_stream,
            &[
                ("type", "order.placed"),
                ("payload", "{\"order\": {not json"),
            ],
        )
        .await;
    let unknown = uuid::Uuid::new_v4();
    let payload = json!({
        "order_id": unknown, "user_id": uuid::Uuid::new_v4(), "amount_cents": 250,
        "currency": "EUR", "charge_id": "ch_x", "reason": null,
    })
    .to_string();
    let unknown_order = bench
        .append(
            &bench.payments_stream,
            &[("type", "PaymentSucceeded"), ("payload", &payload)],
        )
        .await;
    let orders = bench.orders(&[], Stdio::null()).await;
    let _payments = bench.payments(&[], Stdio::null()).await;

    let customer = Customer::default();
    let order = customer.place(&orders, bench.product(10).await, 1).await;
    bench.assert_each_paid_once(&[order]).await;

    for (stream, source, group, reason) in [
        (
            &bench.orders_stream,
            &bad_json,
            "payments",
            "invalid payload",
        ),
        (
            &bench.payments_stream,
            &unknown_order,
            "orders",
            "unknown order",
        ),
    ] {
        let dead = format!("{stream}:dead");
        let entries = eventually_ok(Duration::from_secs(10), "a dead letter", async || {
            let entries = bench.entries(&dead).await;
            if entries.is_empty() {
                Err("none yet")
            } else {
                Ok(entries)
            }
        })
        .await;
        assert_eq!(entries.len(), 1, "{dead}: {entries:?}");
        let fields = &entries[0].1;
        assert_eq!(&fields["dead_source_id"], source);
        assert_eq!(fields["dead_group"], group);
        assert!(
            fields["dead_reason"].contains(reason),
            "{dead}: {:?}",
            fields["dead_reason"]
        );
        assert!(
            fields.contains_key("payload"),
            "the original fields are kept"
        );
        assert_eq!(
            bench.pending(stream, group).await,
            0,
            "{stream}: the poison is acknowledged"
        );
    }
    bench.cleanup().await;
}
