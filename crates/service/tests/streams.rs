//! The kit's stream consumer against a real Redis: bounded work, retries then a dead
//! letter, outages that never dead-letter, reclaiming a dead consumer's entries, and a
//! shutdown that leaves unfinished entries pending for the next consumer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use redis::AsyncCommands;
use shop_lifecycle::Lifecycle;
use shop_service::{
    RedisConfig,
    streams::{Consumer, ConsumerSettings, Delivery, Failure, Handler},
};
use shop_testkit::{eventually, redis_url};

const GROUP: &str = "test";

/// What the scripted handler does on its n-th call (from 1).
type Script = dyn Fn(u32) -> Result<&'static str, Failure> + Send + Sync;

/// A handler that sleeps `work`, then answers what `script` says; it records each
/// delivery's attempt and the most deliveries it ever held at once.
#[derive(Clone)]
struct Scripted {
    work: Duration,
    script: Arc<Script>,
    calls: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<(String, u32)>>>,
    busy: Arc<AtomicUsize>,
    most_busy: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(
        work: Duration,
        script: impl Fn(u32) -> Result<&'static str, Failure> + Send + Sync + 'static,
    ) -> Self {
        Self {
            work,
            script: Arc::new(script),
            calls: Arc::default(),
            attempts: Arc::default(),
            busy: Arc::default(),
            most_busy: Arc::default(),
        }
    }

    fn ok(work: Duration) -> Self {
        Self::new(work, |_| Ok("done"))
    }

    fn handled(&self) -> Vec<(String, u32)> {
        self.attempts.lock().clone()
    }
}

impl Handler for Scripted {
    async fn handle(&self, delivery: &Delivery) -> Result<&'static str, Failure> {
        let busy = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_busy.fetch_max(busy, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.attempts
            .lock()
            .push((delivery.id.clone(), delivery.attempt));
        (self.script)(call)
    }
}

fn settings(name: &str) -> ConsumerSettings {
    ConsumerSettings {
        max_deliveries: 3,
        claim_idle: Duration::from_secs(30),
        concurrency: 4,
        batch: 4,
        block: Duration::from_millis(200),
        name: Some(name.to_owned()),
    }
}

fn redis_config() -> RedisConfig {
    RedisConfig {
        url: redis_url(),
        pool_size: 8,
        timeout: Duration::from_secs(1),
    }
}

struct Stream {
    name: String,
    conn: redis::aio::MultiplexedConnection,
}

impl Stream {
    async fn new() -> Self {
        let client = redis::Client::open(redis_url()).unwrap();
        Self {
            name: format!("shop:test:{}:stream", uuid::Uuid::new_v4()),
            conn: client.get_multiplexed_async_connection().await.unwrap(),
        }
    }

    async fn add(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let id: String = self
                .conn
                .xadd(
                    &self.name,
                    "*",
                    &[("type", "test"), ("payload", &format!("{{\"n\":{i}}}"))],
                )
                .await
                .unwrap();
            ids.push(id);
        }
        ids
    }

    /// Entries the group holds unacknowledged (0 before the consumer made the group).
    async fn pending(&mut self) -> usize {
        let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
            self.conn.xpending(&self.name, GROUP).await;
        reply.map_or(0, |r| r.count())
    }

    async fn dead(&mut self) -> Vec<redis::streams::StreamId> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .xrange_all(format!("{}:dead", self.name))
            .await
            .unwrap();
        reply.ids
    }

    fn start(&self, lifecycle: &Lifecycle, settings: ConsumerSettings, handler: Scripted) {
        let config = redis_config();
        let pool = shop_service::pools::redis_pool_from(&config).unwrap();
        Consumer::new(self.name.clone(), GROUP, settings, &config, pool, handler)
            .start(lifecycle, Duration::from_millis(200));
    }

    async fn cleanup(mut self) {
        let _: () = self
            .conn
            .del(&[&self.name, &format!("{}:dead", self.name)])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn work_is_bounded_by_the_concurrency_and_every_entry_is_acknowledged() {
    let mut stream = Stream::new().await;
    stream.add(24).await;
    let handler = Scripted::ok(Duration::from_millis(50));
    let lifecycle = Lifecycle::new();
    stream.start(&lifecycle, settings("c1"), handler.clone());
    let mut most_pending = 0;
    eventually(
        Duration::from_secs(20),
        "every entry is processed",
        async || {
            most_pending = most_pending.max(stream.pending().await);
            handler.handled().len() == 24
        },
    )
    .await;
    // Never more read than there are free slots: a slow handler slows the reading.
    assert!(handler.most_busy.load(Ordering::SeqCst) <= 4);
    assert!(
        most_pending <= 4,
        "at most `concurrency` entries pending, saw {most_pending}"
    );
    eventually(Duration::from_secs(5), "all acknowledged", async || {
        stream.pending().await == 0
    })
    .await;
    assert!(handler.handled().iter().all(|(_, attempt)| *attempt == 1));
    let report = lifecycle.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(lifecycle.tracked_tasks(), 0);
    stream.cleanup().await;
}

#[tokio::test]
async fn an_entry_that_keeps_failing_is_dead_lettered_after_max_deliveries_and_acknowledged() {
    let mut stream = Stream::new().await;
    let ids = stream.add(1).await;
    let handler = Scripted::new(Duration::ZERO, |_| {
        Err(Failure::Retry(anyhow::anyhow!("boom")))
    });
    let lifecycle = Lifecycle::new();
    stream.start(&lifecycle, settings("c1"), handler.clone());
    eventually(
        Duration::from_secs(20),
        "the entry is dead-lettered",
        async || stream.dead().await.len() == 1,
    )
    .await;
    let dead = stream.dead().await;
    assert_eq!(
        dead[0].get::<String>("dead_source_id"),
        Some(ids[0].clone())
    );
    assert_eq!(
        dead[0].get::<String>("dead_deliveries").as_deref(),
        Some("3")
    );
    assert_eq!(
        dead[0].get::<String>("payload").as_deref(),
        Some("{\"n\":0}")
    );
    let reason: String = dead[0].get("dead_reason").unwrap();
    assert!(
        reason.contains("failed 3 deliveries") && reason.contains("boom"),
        "{reason}"
    );
    let attempts: Vec<u32> = handler.handled().iter().map(|(_, a)| *a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(stream.pending().await, 0);
    assert!(lifecycle.shutdown(Duration::from_secs(5)).await.is_clean());
    stream.cleanup().await;
}

#[tokio::test]
async fn an_outage_is_retried_without_counting_against_the_entry() {
    let mut stream = Stream::new().await;
    stream.add(1).await;
    // Five outages in a row, more than max_deliveries (3), then success.
    let handler = Scripted::new(Duration::ZERO, |call| {
        if call <= 5 {
            Err(Failure::Unavailable(anyhow::anyhow!("postgres is down")))
        } else {
            Ok("done")
        }
    });
    let lifecycle = Lifecycle::new();
    stream.start(&lifecycle, settings("c1"), handler.clone());
    eventually(
        Duration::from_secs(30),
        "processed after the outage",
        async || handler.calls.load(Ordering::SeqCst) == 6 && stream.pending().await == 0,
    )
    .await;
    assert!(
        stream.dead().await.is_empty(),
        "an outage never dead-letters"
    );
    assert!(lifecycle.shutdown(Duration::from_secs(5)).await.is_clean());
    stream.cleanup().await;
}

#[tokio::test]
async fn a_dead_consumers_pending_entries_are_reclaimed_with_their_deliveries_counted() {
    let mut stream = Stream::new().await;
    let ids = stream.add(3).await;
    // A consumer that read the entries and died without acknowledging them.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream.name)
        .arg(GROUP)
        .arg("0")
        .query_async(&mut stream.conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("ghost")
        .arg("STREAMS")
        .arg(&stream.name)
        .arg(">")
        .query_async(&mut stream.conn)
        .await
        .unwrap();
    assert_eq!(stream.pending().await, 3);

    let handler = Scripted::ok(Duration::ZERO);
    let lifecycle = Lifecycle::new();
    let mut settings = settings("alive");
    settings.claim_idle = Duration::from_millis(500);
    stream.start(&lifecycle, settings, handler.clone());
    eventually(
        Duration::from_secs(20),
        "the ghost's entries are processed",
        async || stream.pending().await == 0 && handler.handled().len() == 3,
    )
    .await;
    let mut handled = handler.handled();
    handled.sort();
    let expected: Vec<(String, u32)> = ids.into_iter().map(|id| (id, 2)).collect();
    assert_eq!(handled, expected, "one earlier delivery each");
    assert!(lifecycle.shutdown(Duration::from_secs(5)).await.is_clean());
    stream.cleanup().await;
}

#[tokio::test]
async fn shutdown_leaves_unfinished_entries_pending_and_a_restarted_consumer_takes_them() {
    let mut stream = Stream::new().await;
    stream.add(10).await;
    // A provider slower than the shutdown: 4 entries in flight, none can finish.
    let slow = Scripted::ok(Duration::from_secs(60));
    let lifecycle = Lifecycle::new();
    stream.start(&lifecycle, settings("replica-1"), slow.clone());
    eventually(
        Duration::from_secs(10),
        "four entries in flight",
        async || slow.busy.load(Ordering::SeqCst) == 4,
    )
    .await;
    let report = lifecycle.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "stopped within the deadline: {report:?}");
    assert_eq!(lifecycle.tracked_tasks(), 0, "no task left behind");
    assert!(slow.handled().is_empty());
    assert_eq!(
        stream.pending().await,
        4,
        "the in-flight entries stay pending, the rest unread"
    );

    // The same replica restarted (same name): its own pending entries first, then the rest.
    let fast = Scripted::ok(Duration::ZERO);
    let lifecycle = Lifecycle::new();
    stream.start(&lifecycle, settings("replica-1"), fast.clone());
    eventually(
        Duration::from_secs(20),
        "all ten processed after the restart",
        async || fast.handled().len() == 10 && stream.pending().await == 0,
    )
    .await;
    let redelivered = fast
        .handled()
        .iter()
        .filter(|(_, attempt)| *attempt == 2)
        .count();
    assert_eq!(redelivered, 4);
    assert!(lifecycle.shutdown(Duration::from_secs(5)).await.is_clean());
    stream.cleanup().await;
}
