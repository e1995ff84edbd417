//! Shutdown as a whole: the runtime comes back to its baseline (pitfall 1's proof),
//! and what happens to work spawned once shutdown has started.

use std::time::Duration;

use shop_lifecycle::{JobState, Lifecycle, PeriodicConfig, alive_tasks};
use shop_testkit::eventually_ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_runtime_alive_task_count_is_back_to_its_baseline() {
    let baseline = alive_tasks();
    let lifecycle = Lifecycle::new();

    for n in 0..5 {
        lifecycle.spawn_job(format!("worker_{n}"), |token| async move {
            token.cancelled().await;
            Ok(())
        });
    }
    lifecycle.spawn_periodic(
        "sampler",
        PeriodicConfig::new(Duration::from_millis(5)),
        |_token| async { Ok(()) },
    );
    let server_token = lifecycle.child_token();
    lifecycle.spawn_task("server", async move { server_token.cancelled().await });
    lifecycle.spawn_blocking(|| std::thread::sleep(Duration::from_millis(20)));

    assert_eq!(alive_tasks(), baseline + 7, "every async task is alive");
    assert_eq!(lifecycle.tracked_tasks(), 8, "blocking work is tracked too");

    let report = lifecycle.shutdown(Duration::from_secs(30)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.tracked_after, 0);

    // A task leaves the tracker a moment before the runtime releases it, so give the
    // workers a generous bound to catch up; a leak never would.
    eventually_ok(
        Duration::from_secs(5),
        "alive tasks are back to the baseline",
        async || match alive_tasks() {
            alive if alive == baseline => Ok(()),
            alive => Err(format!("{alive} alive tasks, baseline {baseline}")),
        },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_job_spawned_after_shutdown_started_gets_a_cancelled_token_and_is_still_tracked() {
    let lifecycle = Lifecycle::new();
    assert!(lifecycle.shutdown(Duration::from_secs(1)).await.is_clean());

    let (saw_cancelled, seen) = tokio::sync::oneshot::channel();
    let late = lifecycle.spawn_job("late", |token| {
        // Decided at spawn time: the token is already cancelled...
        let cancelled_at_spawn = token.is_cancelled();
        async move {
            let _ = saw_cancelled.send(cancelled_at_spawn);
            token.cancelled().await;
            Ok(())
        }
    });
    // ...and the job is still tracked, so a second shutdown waits for it.
    assert_eq!(lifecycle.tracked_tasks(), 1);
    assert!(seen.await.expect("the job ran"));

    let report = lifecycle.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        lifecycle.job(late).map(|job| job.state),
        Some(JobState::Finished)
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_spawned_after_shutdown_started_is_still_tracked_and_awaited() {
    let lifecycle = Lifecycle::new();
    lifecycle.shutdown(Duration::from_secs(1)).await;

    let flush = lifecycle.spawn_task("final_flush", async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        "flushed"
    });
    assert_eq!(lifecycle.tracked_tasks(), 1);

    let report = lifecycle.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.tracked_before, 1);
    assert_eq!(flush.await.expect("completes"), "flushed");
}
