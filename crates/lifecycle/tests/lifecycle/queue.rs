//! The bounded work queue: load is shed, never queued without bound (pitfall 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shop_lifecycle::queue::{SubmitError, WorkQueue};
use shop_lifecycle::{JobState, Lifecycle};

/// A handler that counts the items it finished, after `work` of (paused) time.
fn counting_handler(
    handled: &Arc<AtomicUsize>,
    work: Duration,
) -> impl Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static {
    let handled = Arc::clone(handled);
    move |_item| {
        let handled = Arc::clone(&handled);
        Box::pin(async move {
            tokio::time::sleep(work).await;
            handled.fetch_add(1, Ordering::SeqCst);
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_work_queue_rejects_instead_of_waiting() {
    let lifecycle = Lifecycle::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let queue = WorkQueue::start(
        &lifecycle,
        "order_events",
        2,
        1,
        counting_handler(&handled, Duration::from_millis(10)),
    );
    assert_eq!(queue.capacity(), 2);

    // The draining job has not run yet (nothing has yielded), so nothing is taken out.
    queue.try_submit(1).expect("room for the first item");
    queue.try_submit(2).expect("room for the second item");
    assert_eq!(queue.depth(), 2);
    match queue.try_submit(3) {
        Err(SubmitError::QueueFull(item)) => assert_eq!(item, 3, "the item is handed back"),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(queue.depth(), 2, "the rejected item took no room");

    let report = lifecycle.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_work_queue_drains_queued_items_at_shutdown_then_refuses_new_ones() {
    let lifecycle = Lifecycle::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let queue = WorkQueue::start(
        &lifecycle,
        "cache_warm",
        16,
        1,
        counting_handler(&handled, Duration::from_millis(100)),
    );
    for item in 0..10 {
        queue.try_submit(item).expect("room");
    }

    // Ten items of 100 ms one at a time: the deadline is far enough.
    let report = lifecycle.shutdown(Duration::from_secs(5)).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        10,
        "every queued item was handled"
    );
    assert_eq!(queue.depth(), 0);
    assert!(queue.is_closed());
    let refused = queue.try_submit(99).expect_err("closed after shutdown");
    assert!(
        matches!(refused, SubmitError::QueueClosed(99)),
        "{refused:?}"
    );
    assert_eq!(
        lifecycle.job(queue.job_id()).map(|job| job.state),
        Some(JobState::Finished)
    );
}

#[tokio::test(start_paused = true)]
async fn items_queued_past_the_shutdown_deadline_leave_the_queue_named_as_unfinished() {
    let lifecycle = Lifecycle::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let queue = WorkQueue::start(
        &lifecycle,
        "slow_queue",
        16,
        1,
        counting_handler(&handled, Duration::from_secs(1)),
    );
    for item in 0..10 {
        queue.try_submit(item).expect("room");
    }

    let report = lifecycle.shutdown(Duration::from_millis(2500)).await;

    assert_eq!(report.unfinished, vec!["slow_queue".to_owned()]);
    assert_eq!(handled.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_work_queue_never_handles_more_items_at_once_than_its_concurrency() {
    let lifecycle = Lifecycle::new();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let queue = WorkQueue::start(&lifecycle, "fan_out", 32, 3, {
        let (in_flight, max_in_flight, handled) = (
            Arc::clone(&in_flight),
            Arc::clone(&max_in_flight),
            Arc::clone(&handled),
        );
        move |_item: u32| {
            let (in_flight, max_in_flight, handled) = (
                Arc::clone(&in_flight),
                Arc::clone(&max_in_flight),
                Arc::clone(&handled),
            );
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                handled.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    for item in 0..20 {
        queue.try_submit(item).expect("room");
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    // One task drains the queue, whatever its concurrency: no spawn per item.
    assert_eq!(lifecycle.tracked_tasks(), 1);

    let report = lifecycle.shutdown(Duration::from_secs(5)).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 20);
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_does_not_stop_the_work_queue() {
    let lifecycle = Lifecycle::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let queue = WorkQueue::start(&lifecycle, "fragile", 8, 2, {
        let handled = Arc::clone(&handled);
        move |item: u32| {
            let handled = Arc::clone(&handled);
            async move {
                assert_ne!(item, 1, "item 1 is poison");
                handled.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    for item in 0..4 {
        queue.try_submit(item).expect("room");
    }

    let report = lifecycle.shutdown(Duration::from_secs(5)).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert_eq!(
        lifecycle.job(queue.job_id()).map(|job| job.state),
        Some(JobState::Finished)
    );
}
