//! The product cache (issue 4, docs/cache.md): breakdown, penetration, avalanche
//! (jitter), cross-replica invalidation, a Redis outage, and shutdown of the listener.
//! Real Postgres, real Redis; the fault test runs its own private `redis-server`.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use futures::{StreamExt as _, future::join_all, stream};
use reqwest::StatusCode;
use serde_json::Value;
use shop_orders::Config;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

/// The test config with this test's own Redis key prefix and invalidation channel.
fn cache_config() -> Config {
    let mut config = test_config();
    let tag = Uuid::new_v4();
    config.cache_redis_prefix = format!("shop:test:{tag}:cache");
    config.cache_invalidation_channel = format!("shop:test:{tag}:invalidations");
    // A debug build on a loaded 2-core machine can miss the 100 ms production timeout,
    // which would (correctly) open the breaker and skip L2: these tests are about
    // correctness, the Redis-killed test about outages (refused connections are fast).
    config.cache_redis_timeout = Duration::from_secs(2);
    config
}

/// Starts a replica and waits until its invalidation listener is subscribed (its first
/// subscription clears L1, which would discard loads still in flight).
async fn spawn_subscribed(db: &PgPool, config: Config) -> TestApp {
    let (url, channel) = (
        config.cache_redis_url().to_owned(),
        config.cache_invalidation_channel.clone(),
    );
    let before = subscribers(&url, &channel).await;
    let app = TestApp::spawn_with(db, config).await;
    eventually(Duration::from_secs(10), "the listener subscribed", || {
        let (url, channel) = (url.clone(), channel.clone());
        async move { subscribers(&url, &channel).await > before }
    })
    .await;
    app
}

async fn get_product(app: &TestApp, id: Uuid) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/products/{id}")))
        .send()
        .await
        .expect("the request is sent")
}

async fn product_json(app: &TestApp, id: Uuid) -> Value {
    let response = get_product(app, id).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

/// Subscribers of `channel` (PUBSUB NUMSUB), 0 if Redis does not answer.
async fn subscribers(url: &str, channel: &str) -> i64 {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return 0;
    };
    let reply: redis::RedisResult<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await;
    reply.map(|(_, n)| n).unwrap_or(0)
}

fn l2_key(config: &Config, id: Uuid) -> String {
    format!("{}:product:{id}", config.cache_redis_prefix)
}

#[sqlx::test(migrations = "../../migrations")]
async fn five_hundred_concurrent_reads_of_a_cold_product_cause_exactly_one_postgres_load(
    db: PgPool,
) {
    let app = spawn_subscribed(&db, cache_config()).await;
    let product = create_product(&db, 5).await;
    assert_eq!(app.state.cache.db_loads(), 0);

    let bodies = join_all((0..500).map(|_| product_json(&app, product))).await;

    assert!(bodies.iter().all(|b| b["id"] == product.to_string()));
    assert_eq!(app.state.cache.db_loads(), 1, "one load for 500 cold reads");
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_thousand_reads_of_ten_missing_ids_reach_postgres_at_most_ten_times_and_all_answer_404(
    db: PgPool,
) {
    let mut config = cache_config();
    config.cache_negative_ttl = Duration::from_secs(120);
    let app = spawn_subscribed(&db, config.clone()).await;
    let missing: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();

    let statuses: Vec<StatusCode> = stream::iter(0..1000)
        .map(|i| {
            let app = &app;
            let id = missing[i % missing.len()];
            async move { get_product(app, id).await.status() }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    assert!(statuses.iter().all(|s| *s == StatusCode::NOT_FOUND));
    let loads = app.state.cache.db_loads();
    assert!(loads <= 10, "{loads} Postgres loads for 10 missing ids");

    // The absence is in Redis too: a second replica (empty L1) answers 404 without
    // asking Postgres.
    let other = spawn_subscribed(&db, config).await;
    for id in &missing {
        assert_eq!(
            get_product(&other, *id).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        other.state.cache.db_loads(),
        0,
        "negative entries come from L2"
    );
    other.shutdown().await;
    app.shutdown().await;
}

/// Two replicas on one database and one Redis prefix, with TTLs so long that only an
/// invalidation can explain a change.
async fn two_replicas(db: &PgPool) -> (TestApp, TestApp, Config) {
    let mut config = cache_config();
    config.cache_l1_ttl = Duration::from_secs(600);
    config.cache_l2_ttl = Duration::from_secs(600);
    let a = TestApp::spawn_with(db, config.clone()).await;
    let b = TestApp::spawn_with(db, config.clone()).await;
    let (url, channel) = (
        config.redis.url.clone(),
        config.cache_invalidation_channel.clone(),
    );
    eventually(Duration::from_secs(10), "both listeners subscribed", || {
        let (url, channel) = (url.clone(), channel.clone());
        async move { subscribers(&url, &channel).await >= 2 }
    })
    .await;
    (a, b, config)
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_price_change_through_one_replica_is_seen_by_the_other_within_the_bound(db: PgPool) {
    let (a, b, _) = two_replicas(&db).await;
    let product = create_product(&db, 100).await;
    assert_eq!(product_json(&b, product).await["price_cents"], 250);
    assert_eq!(product_json(&a, product).await["price_cents"], 250);

    assert!(a.state.cache.update_price(product, 999).await.unwrap());

    assert_eq!(
        product_json(&a, product).await["price_cents"],
        999,
        "the writer sees its change at once"
    );
    eventually(
        Duration::from_secs(10),
        "replica b shows the new price",
        || async { product_json(&b, product).await["price_cents"] == 999 },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_order_leaving_stock_below_the_threshold_invalidates_it_on_every_replica_and_a_small_one_does_not(
    db: PgPool,
) {
    let (a, b, config) = two_replicas(&db).await;
    let threshold = config.cache_stock_invalidate_below;
    let plenty = create_product(&db, 100).await;
    let scarce = create_product(&db, threshold + 2).await;
    assert_eq!(product_json(&b, plenty).await["stock"], 100);
    assert_eq!(product_json(&b, scarce).await["stock"], threshold + 2);

    let user = Uuid::new_v4();
    let r = a.place(user, "small", &order(&[line(plenty, 1)])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = a.place(user, "big", &order(&[line(scarce, 5)])).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    eventually(
        Duration::from_secs(10),
        "replica b shows the low stock",
        || async { product_json(&b, scarce).await["stock"] == threshold - 3 },
    )
    .await;
    // Messages are delivered in order, so the first order's (absent) invalidation
    // would have arrived by now: above the threshold the stock is allowed to be stale.
    assert_eq!(product_json(&b, plenty).await["stock"], 100);
    assert_eq!(stock(&db, plenty).await, 99);
    a.shutdown().await;
    b.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn with_redis_killed_mid_traffic_reads_never_fail_and_after_a_restart_the_cache_recovers(
    db: PgPool,
) {
    let mut redis = PrivateRedis::start().await;
    let mut config = cache_config();
    config.cache_redis_url = Some(redis.url());
    config.cache_l1_ttl = Duration::from_secs(600);
    config.cache_l2_ttl = Duration::from_secs(600);
    config.cache_breaker_cooldown = Duration::from_millis(300);
    config.cache_listener_max_backoff = Duration::from_millis(500);
    let app = spawn_subscribed(&db, config.clone()).await;
    // Installs the process's metrics recorder, so the gauge can be read later.
    app.client.get(app.url("/metrics")).send().await.unwrap();

    let mut products = Vec::new();
    for _ in 0..40 {
        products.push(create_product(&db, 100).await);
    }
    for id in &products[..20] {
        product_json(&app, *id).await;
    }
    let mut conn = redis_conn(&redis.url()).await;
    let cached: bool = redis::cmd("EXISTS")
        .arg(l2_key(&config, products[0]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cached, "reads fill L2");

    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let traffic = async {
        while !stop.load(Ordering::Relaxed) {
            for (i, id) in products.iter().enumerate() {
                if i % 2 == 0 {
                    // Half the reads miss L1, so they need Redis or Postgres.
                    app.state.cache.evict_local(*id).await;
                }
                let status = get_product(&app, *id).await.status();
                served.fetch_add(1, Ordering::Relaxed);
                if status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let faults = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        redis.kill();
        eventually(
            Duration::from_secs(10),
            "the cache reports degraded",
            || async { app.state.cache.is_degraded() },
        )
        .await;
        let metrics = app.metrics_text().await;
        assert!(metrics.contains("cache_degraded 1"), "{metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart().await;
        eventually(Duration::from_secs(15), "the cache recovers", || async {
            !app.state.cache.is_degraded()
        })
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    tokio::join!(traffic, faults);
    assert!(served.load(Ordering::Relaxed) > 40, "traffic ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no read failed");

    // L2 fills again (the restarted Redis is empty).
    let fresh = create_product(&db, 3).await;
    let url = redis.url();
    eventually(Duration::from_secs(10), "a new read fills L2 again", || {
        let (app, key, url) = (&app, l2_key(&config, fresh), url.clone());
        async move {
            // Skip L1 so each attempt reads through to Redis.
            app.state.cache.evict_local(fresh).await;
            product_json(app, fresh).await;
            let mut conn = redis_conn(&url).await;
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<bool>(&mut conn)
                .await
                .unwrap_or(false)
        }
    })
    .await;

    // Invalidation works again without restarting orders: the listener resubscribed.
    let (url, channel) = (redis.url(), config.cache_invalidation_channel.clone());
    eventually(Duration::from_secs(15), "the listener resubscribed", || {
        let (url, channel) = (url.clone(), channel.clone());
        async move { subscribers(&url, &channel).await >= 1 }
    })
    .await;
    let product = products[0];
    assert_eq!(product_json(&app, product).await["price_cents"], 250);
    sqlx::query("update products set price_cents = 777 where id = $1")
        .bind(product)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        product_json(&app, product).await["price_cents"],
        250,
        "still cached"
    );
    // What another replica's `ProductCache::invalidate` sends: DEL, then PUBLISH.
    let mut conn = redis_conn(&redis.url()).await;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(l2_key(&config, product))
        .ignore()
        .cmd("PUBLISH")
        .arg(&channel)
        .arg(product.to_string())
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the published invalidation evicts L1",
        || async { product_json(&app, product).await["price_cents"] == 777 },
    )
    .await;

    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn entries_written_together_get_ttls_spread_by_the_jitter_in_both_layers(db: PgPool) {
    let mut config = cache_config();
    config.cache_l1_ttl = Duration::from_secs(100);
    config.cache_l2_ttl = Duration::from_secs(200);
    config.cache_ttl_jitter = 0.1;
    let app = spawn_subscribed(&db, config.clone()).await;
    let mut products = Vec::new();
    for _ in 0..50 {
        products.push(create_product(&db, 1).await);
    }
    join_all(products.iter().map(|id| product_json(&app, *id))).await;

    let mut l1 = Vec::new();
    for id in &products {
        l1.push(
            app.state
                .cache
                .l1_ttl(*id)
                .await
                .expect("in L1")
                .as_millis() as i64,
        );
    }
    let mut conn = redis_conn(&config.redis.url).await;
    let mut l2 = Vec::new();
    for id in &products {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(l2_key(&config, *id))
            .query_async(&mut conn)
            .await
            .unwrap();
        l2.push(pttl);
    }

    for (ttls, base) in [(&l1, 100_000), (&l2, 200_000)] {
        let (min, max) = (*ttls.iter().min().unwrap(), *ttls.iter().max().unwrap());
        // Within ±10% (L2's PTTL has ticked down a little since it was set).
        assert!(
            min >= base * 9 / 10 - 5_000 && max <= base * 11 / 10,
            "{ttls:?}"
        );
        // 50 uniform draws over a ±10% window: a spread under a fifth of it would be
        // the avalanche this jitter prevents.
        assert!(max - min >= base / 25, "spread {} ms: {ttls:?}", max - min);
        let distinct: HashSet<_> = ttls.iter().collect();
        assert!(distinct.len() >= 40, "{ttls:?}");
    }
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_invalidation_listener_stops_within_the_shutdown_deadline_even_while_redis_is_unreachable(
    db: PgPool,
) {
    let mut config = cache_config();
    // Nothing listens there: the listener is in its reconnect loop, reads use Postgres.
    config.cache_redis_url = Some(format!("redis://127.0.0.1:{}", free_port()));
    config.server.shutdown_jobs_timeout = Duration::from_secs(3);
    let app = TestApp::spawn_with(&db, config).await;
    let product = create_product(&db, 1).await;
    for _ in 0..5 {
        product_json(&app, product).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lifecycle = app.state.lifecycle.clone();

    let report = app.shutdown().await;

    assert!(report.is_clean(), "{report:?}");
    let listener = lifecycle
        .jobs()
        .into_iter()
        .find(|j| j.name == "cache_invalidation")
        .expect("the listener runs");
    assert_eq!(listener.state.as_str(), "finished", "{listener:?}");
    assert_eq!(lifecycle.tracked_tasks(), 0);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_subscribed_listener_ends_at_shutdown_and_leaves_no_task_behind(db: PgPool) {
    let baseline = shop_lifecycle::alive_tasks();
    let config = cache_config();
    let app = TestApp::spawn_with(&db, config.clone()).await;
    let (url, channel) = (
        config.redis.url.clone(),
        config.cache_invalidation_channel.clone(),
    );
    eventually(Duration::from_secs(10), "the listener subscribed", || {
        let (url, channel) = (url.clone(), channel.clone());
        async move { subscribers(&url, &channel).await >= 1 }
    })
    .await;
    let product = create_product(&db, 1).await;
    product_json(&app, product).await;
    let lifecycle = app.state.lifecycle.clone();

    let report = app.shutdown().await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(lifecycle.tracked_tasks(), 0);
    // The redis crate's pub/sub driver task went with the listener.
    eventually(
        Duration::from_secs(5),
        "alive tasks back to baseline",
        || async { shop_lifecycle::alive_tasks() <= baseline },
    )
    .await;
    eventually(Duration::from_secs(5), "the subscription is gone", || {
        let (url, channel) = (url.clone(), channel.clone());
        async move { subscribers(&url, &channel).await == 0 }
    })
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_healthy_listener_keeps_its_subscription_across_keepalive_pings(db: PgPool) {
    // Regression: a subscribed connection answers PING with ["pong", ""]; reading it as
    // a string made the listener reconnect, and clear L1, every five seconds.
    let app = spawn_subscribed(&db, cache_config()).await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let metrics = app.metrics_text().await;
    let subscriptions = metrics
        .lines()
        .find(|l| l.starts_with("cache_listener_subscriptions_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("missing")
        .to_owned();
    assert_eq!(subscriptions, "1", "{metrics}");
    app.shutdown().await;
}
