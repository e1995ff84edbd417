//! The outbox relay: every placed order reaches the stream, at least once, never lost.

use std::{collections::BTreeSet, time::Duration};

use redis::AsyncCommands;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;
use shop_orders::{events, jobs::outbox_relay};

async fn stream_outbox_ids(redis_url: &str, stream: &str) -> Vec<i64> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    let _: () = conn.del(stream).await.unwrap();
    entries
        .ids
        .iter()
        .map(|e| {
            let id: String = e.get("outbox_id").unwrap();
            id.parse().unwrap()
        })
        .collect()
}

async fn outbox_ids(db: &PgPool) -> BTreeSet<i64> {
    sqlx::query_scalar::<_, i64>("select id from outbox")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn unpublished(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_placed_order_reaches_the_stream_with_its_outbox_id(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 100).await;
    for i in 0..30 {
        let r = app
            .place(
                Uuid::new_v4(),
                &format!("k{i}"),
                &order(&[line(product, 1)]),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    eventually(
        Duration::from_secs(10),
        "the relay publishes every outbox row",
        async || unpublished(&db).await == 0,
    )
    .await;
    let published: BTreeSet<i64> =
        stream_outbox_ids(&app.state.config.redis.url, &app.state.config.outbox.stream)
            .await
            .into_iter()
            .collect();
    assert_eq!(published, outbox_ids(&db).await);
    assert_eq!(published.len(), 30);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_relay_interrupted_mid_batch_and_restarted_loses_nothing(db: PgPool) {
    // The service's own relay cannot reach Redis: events pile up, orders still succeed.
    let mut config = test_config();
    let redis_url = config.redis.url.clone();
    config.redis.url = "redis://127.0.0.1:1".into();
    config.outbox.batch_size = 7;
    let app = TestApp::spawn_with(&db, config.clone()).await;
    let product = create_product(&db, 100).await;
    for i in 0..40 {
        let r = app
            .place(
                Uuid::new_v4(),
                &format!("k{i}"),
                &order(&[line(product, 1)]),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(
        unpublished(&db).await,
        40,
        "nothing is published while Redis is down"
    );

    // A relay with a working Redis, stopped at arbitrary points mid-batch many times...
    let mut state = app.state.clone();
    let mut good = config;
    good.redis.url = redis_url.clone();
    state.redis = events::pool(&good).unwrap();
    for i in 0..60u64 {
        let _ = tokio::time::timeout(
            Duration::from_micros(200 * i),
            outbox_relay::relay(&state).relay_batch(),
        )
        .await;
    }
    // ...then restarted and left to finish.
    while outbox_relay::relay(&state).relay_batch().await.unwrap() > 0 {}

    assert_eq!(unpublished(&db).await, 0);
    let published: BTreeSet<i64> = stream_outbox_ids(&redis_url, &good.outbox.stream)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        published,
        outbox_ids(&db).await,
        "every event reached the stream at least once"
    );
    app.shutdown().await;
}
