//! `cache_invalidation`: evicts products from this replica's L1 when any replica
//! publishes their ids on the invalidation channel (see `cache/mod.rs`).
//!
//! One long-lived job holding one pub/sub connection. When the connection drops (Redis
//! restarted, network cut) or stops answering pings, it reconnects with exponential
//! backoff and jitter, and after every successful subscription it clears L1: messages
//! published while it was away are lost, so anything in L1 may be stale. It ends
//! promptly on cancellation: every wait is a `select!` on the token.
//!
//! The redis crate drives a pub/sub connection with a task of its own; that task is
//! owned by the `PubSubStream` and aborted when it is dropped, which happens when this
//! job leaves its inner loop, so nothing outlives the job.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use redis::aio::{PubSubSink, PubSubStream};
use shop_lifecycle::CancellationToken;
use uuid::Uuid;

use shop_service::resilience::Backoff;

use crate::cache::ProductCache;

/// First wait before reconnecting; the kit's backoff doubles it, with jitter, up to the
/// configured max.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How often the connection is checked with a PING (a silent half-open TCP connection
/// would otherwise look like a quiet channel forever).
const PING_EVERY: Duration = Duration::from_secs(5);

/// Runs until `token` is cancelled.
pub async fn run(
    cache: ProductCache,
    redis_url: String,
    connect_timeout: Duration,
    max_backoff: Duration,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let Some(channel) = cache.channel().map(str::to_owned) else {
        return Ok(());
    };
    let client = redis::Client::open(redis_url).context("parsing CACHE_REDIS_URL")?;
    let mut backoff = Backoff::new(MIN_BACKOFF, max_backoff.max(MIN_BACKOFF * 2));
    loop {
        let subscribed = tokio::select! {
            () = token.cancelled() => return Ok(()),
            result = tokio::time::timeout(connect_timeout, subscribe(&client, &channel)) => {
                result.context("connecting timed out").and_then(|r| r)
            }
        };
        match subscribed {
            Ok((sink, stream)) => {
                cache.redis_reachable(true, &"subscribed");
                // Subscribed first, cleared second: nothing published from now on is
                // missed, and whatever was missed before is dropped from L1.
                cache.clear_local();
                metrics::counter!("cache_listener_subscriptions_total").increment(1);
                tracing::info!(%channel, "cache invalidation listener subscribed; L1 cleared");
                backoff.reset();
                match listen(&cache, sink, stream, connect_timeout, &token).await {
                    Stop::Cancelled => return Ok(()),
                    Stop::Lost(reason) => {
                        tracing::warn!(%reason, "cache invalidation listener lost Redis; reconnecting");
                    }
                }
            }
            Err(error) => {
                let error = format!("{error:#}");
                cache.redis_reachable(false, &error);
                tracing::debug!(%error, failures = backoff.failures(), "cache invalidation listener cannot reach Redis");
            }
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> anyhow::Result<(PubSubSink, PubSubStream)> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.split())
}

enum Stop {
    Cancelled,
    Lost(String),
}

/// Evicts every id received until cancelled or the connection is lost.
async fn listen(
    cache: &ProductCache,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    ping_timeout: Duration,
    token: &CancellationToken,
) -> Stop {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            () = token.cancelled() => return Stop::Cancelled,
            // `next()` on the stream is cancel-safe: it reads from a channel.
            message = stream.next() => {
                let Some(message) = message else {
                    return Stop::Lost("the pub/sub connection closed".into());
                };
                metrics::counter!("cache_invalidations_received_total").increment(1);
                match message.get_payload::<String>().ok().and_then(|p| Uuid::parse_str(&p).ok()) {
                    Some(id) => cache.evict_local(id).await,
                    None => tracing::warn!(channel = message.get_channel_name(), "ignored an invalidation that is not a product id"),
                }
            }
            _ = ping.tick() => {
                cache.record_entries();
                let answered = tokio::select! {
                    () = token.cancelled() => return Stop::Cancelled,
                    // A subscribed connection answers PING with ["pong", ""], not "PONG":
                    // any reply proves the connection alive.
                    result = tokio::time::timeout(ping_timeout, sink.ping::<redis::Value>()) => result,
                };
                match answered {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Stop::Lost(format!("PING failed: {error}")),
                    Err(_) => return Stop::Lost("PING timed out".into()),
                }
            }
        }
    }
}
