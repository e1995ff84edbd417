//! A bounded, supervised work queue: the cure for fire-and-forget work (pitfall 2).
//!
//! Work that must outlive the request that caused it (publishing an event, warming a
//! cache) must not be a `tokio::spawn` in the handler: under load those pile up without
//! bound. Instead the handler calls [`WorkQueue::try_submit`], which never waits:
//! when the queue is full the item comes back as [`SubmitError::QueueFull`] and the
//! handler sheds load (503 with `Retry-After`). Behind the queue, **one** supervised
//! job drains it with at most `concurrency` items in flight, so neither the queue nor
//! the number of tasks can grow with traffic.
//!
//! At shutdown the job stops accepting, finishes the items already queued (within the
//! shutdown deadline), then ends.
//!
//! ```
//! use std::time::Duration;
//!
//! use shop_lifecycle::Lifecycle;
//! use shop_lifecycle::queue::{SubmitError, WorkQueue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let lifecycle = Lifecycle::new();
//! let events = WorkQueue::start(&lifecycle, "order_events", 1024, 4, |order_id: u64| async move {
//!     // publish the event for `order_id`
//! });
//!
//! // In a handler:
//! match events.try_submit(42) {
//!     Ok(()) => { /* 202 Accepted */ }
//!     Err(SubmitError::QueueFull(_)) => { /* 503 Service Unavailable, Retry-After */ }
//!     Err(SubmitError::QueueClosed(_)) => { /* shutting down: 503 */ }
//! }
//!
//! let report = lifecycle.shutdown(Duration::from_secs(5)).await;
//! assert!(report.is_clean());
//! # }
//! ```

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::job::{JobId, panic_message};
use crate::supervisor::Lifecycle;

/// A handle to submit items to a bounded queue drained by one supervised job.
///
/// Cheap to clone; every clone feeds the same queue. The draining job also ends if
/// every handle is dropped (after finishing what was queued).
pub struct WorkQueue<T> {
    /// The bounded sending half: its capacity *is* the queue's bound.
    sender: mpsc::Sender<T>,
    /// The draining job's token; once it is cancelled, submissions are refused at
    /// once, even before the job gets round to closing the channel.
    token: CancellationToken,
    name: Arc<str>,
    job: JobId,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            token: self.token.clone(),
            name: Arc::clone(&self.name),
            job: self.job,
        }
    }
}

impl<T> fmt::Debug for WorkQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.name)
            .field("job", &self.job)
            .field("depth", &self.depth())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T: Send + 'static> WorkQueue<T> {
    /// Starts a queue of `capacity` items, drained by one supervised job named `name`
    /// that runs `handler(item)` for up to `concurrency` items at once.
    ///
    /// The concurrency limit is enforced inside that single job
    /// (`for_each_concurrent`), never by a spawn per item, so a full queue costs one
    /// task, not `capacity` tasks. A handler that panics is logged and the queue goes
    /// on with the next item.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` or `concurrency` is zero: a zero-capacity queue could
    /// accept nothing, and `for_each_concurrent` reads a zero limit as *unlimited*,
    /// which is the very fan-out this queue exists to prevent.
    pub fn start<H, Fut>(
        lifecycle: &Lifecycle,
        name: impl Into<String>,
        capacity: usize,
        concurrency: usize,
        handler: H,
    ) -> Self
    where
        H: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        assert!(capacity > 0, "a work queue needs a capacity of at least 1");
        assert!(
            concurrency > 0,
            "a work queue needs a concurrency of at least 1"
        );
        let name: Arc<str> = name.into().into();
        let (sender, receiver) = mpsc::channel(capacity);
        // The job's token is only known inside the closure, so it is passed out here.
        let mut job_token = None;
        let job = lifecycle.spawn_job(name.to_string(), |token| {
            job_token = Some(token.clone());
            drain(receiver, token, concurrency, handler, Arc::clone(&name))
        });
        let token = job_token.unwrap_or_else(|| lifecycle.child_token());
        Self {
            sender,
            token,
            name,
            job,
        }
    }
}

impl<T> WorkQueue<T> {
    /// Queues `item` without ever waiting.
    ///
    /// Returns the item back in [`SubmitError::QueueFull`] when the queue is at
    /// capacity (the caller sheds load, e.g. 503), and in [`SubmitError::QueueClosed`]
    /// once shutdown has started or the draining job has ended. Rejections for a full
    /// queue are counted in `shop_queue_rejected_total{queue}`.
    pub fn try_submit(&self, item: T) -> Result<(), SubmitError<T>> {
        if self.token.is_cancelled() {
            return Err(SubmitError::QueueClosed(item));
        }
        match self.sender.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => {
                metrics::counter!("shop_queue_rejected_total", "queue" => self.name.to_string())
                    .increment(1);
                Err(SubmitError::QueueFull(item))
            }
            Err(TrySendError::Closed(item)) => Err(SubmitError::QueueClosed(item)),
        }
    }

    /// Items waiting in the queue (not counting those being handled).
    pub fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// The most items the queue holds before [`try_submit`](Self::try_submit) refuses.
    pub fn capacity(&self) -> usize {
        self.sender.max_capacity()
    }

    /// Whether the queue refuses every submission (shutdown started or job ended).
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled() || self.sender.is_closed()
    }

    /// The name of the queue, which is also the name of its draining job.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the draining job, to find it in [`Lifecycle::jobs`].
    pub fn job_id(&self) -> JobId {
        self.job
    }

    /// Sets the gauges `shop_queue_depth{queue}` and `shop_queue_capacity{queue}`;
    /// call it from the same sampler as [`Lifecycle::record_metrics`].
    pub fn record_metrics(&self) {
        metrics::gauge!("shop_queue_depth", "queue" => self.name.to_string())
            .set(self.depth() as f64);
        metrics::gauge!("shop_queue_capacity", "queue" => self.name.to_string())
            .set(self.capacity() as f64);
    }
}

/// Why [`WorkQueue::try_submit`] refused an item; the item is handed back.
pub enum SubmitError<T> {
    /// The queue is at capacity: shed load rather than wait.
    QueueFull(T),
    /// Shutdown has started (or the draining job has ended): nothing more is accepted.
    QueueClosed(T),
}

impl<T> SubmitError<T> {
    /// The refused item.
    pub fn into_inner(self) -> T {
        match self {
            Self::QueueFull(item) | Self::QueueClosed(item) => item,
        }
    }

    /// Whether the queue was full (as opposed to closed).
    pub const fn is_full(&self) -> bool {
        matches!(self, Self::QueueFull(_))
    }
}

// Debug and Display by hand, without the item, so that `T` needs no bounds (as with
// tokio's own `TrySendError`) and a rejected payload never ends up in a log line.
impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueueFull(_) => f.write_str("QueueFull(..)"),
            Self::QueueClosed(_) => f.write_str("QueueClosed(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueueFull(_) => f.write_str("work queue is full"),
            Self::QueueClosed(_) => f.write_str("work queue is closed"),
        }
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// The body of the draining job.
async fn drain<T, H, Fut>(
    receiver: mpsc::Receiver<T>,
    token: CancellationToken,
    concurrency: usize,
    handler: H,
    name: Arc<str>,
) -> anyhow::Result<()>
where
    H: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    // The items as a stream that ends when the queue is closed *and* empty. Until
    // cancellation it waits for either; on cancellation it closes the receiver, which
    // refuses new items but still yields the ones already queued. `recv()` is
    // cancel-safe, so losing the `select!` race never loses an item.
    let items = futures::stream::unfold(
        (receiver, token, false),
        |(mut receiver, token, closed)| async move {
            if !closed {
                tokio::select! {
                    biased;
                    item = receiver.recv() => return item.map(|item| (item, (receiver, token, false))),
                    () = token.cancelled() => receiver.close(),
                }
            }
            let item = receiver.recv().await?;
            Some((item, (receiver, token, true)))
        },
    );

    // `for_each_concurrent` pulls the next item only when fewer than `concurrency` are
    // in flight, so the limit holds and the backlog stays in the bounded channel.
    items
        .for_each_concurrent(concurrency, |item| {
            // AssertUnwindSafe: a handler that panics is dropped and never polled again,
            // and it shares no state with the queue, so nothing half-updated is seen.
            let handled = AssertUnwindSafe(handler(item)).catch_unwind();
            let name = Arc::clone(&name);
            async move {
                if let Err(payload) = handled.await {
                    let message = panic_message(payload.as_ref());
                    tracing::error!(queue = %name, panic = %message, "work queue handler panicked");
                }
            }
        })
        .await;
    tracing::debug!(queue = %name, "work queue drained");
    Ok(())
}
