//! Periodic jobs: one task, runs never overlap, every run has a timeout (pitfall 4).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use shop_lifecycle::{JobKind, JobState, Lifecycle, PeriodicConfig, alive_tasks};
use tokio::time::MissedTickBehavior;

#[tokio::test(start_paused = true)]
async fn a_periodic_job_whose_work_outlasts_its_period_never_runs_twice_at_once() {
    let lifecycle = Lifecycle::new();
    let baseline = alive_tasks();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));

    // `Burst` is the worst case: after every slow run, missed ticks are due at once.
    let config = PeriodicConfig::new(Duration::from_millis(10))
        .with_timeout(Duration::from_secs(1))
        .with_missed_tick_behavior(MissedTickBehavior::Burst);
    let id = lifecycle.spawn_periodic("slow_report", config, {
        let in_flight = Arc::clone(&in_flight);
        let max_in_flight = Arc::clone(&max_in_flight);
        move |_token| {
            let in_flight = Arc::clone(&in_flight);
            let max_in_flight = Arc::clone(&max_in_flight);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                // Three and a half periods of work.
                tokio::time::sleep(Duration::from_millis(35)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }
    });

    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The task count stays flat: one task, however far behind the work is.
        assert_eq!(lifecycle.tracked_tasks(), 1);
        assert_eq!(alive_tasks(), baseline + 1);
    }
    let report = lifecycle.shutdown(Duration::from_secs(1)).await;

    assert!(report.is_clean(), "{report:?}");
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 1);
    let job = lifecycle.job(id).expect("registered");
    assert_eq!(job.kind, JobKind::Periodic);
    assert!(job.runs >= 10, "only {} runs in a second", job.runs);
    assert_eq!(job.failures, 0);
    assert_eq!(job.state, JobState::Finished);
}

#[tokio::test(start_paused = true)]
async fn a_periodic_run_that_exceeds_its_timeout_is_counted_as_a_failure_and_the_loop_continues() {
    let lifecycle = Lifecycle::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let config =
        PeriodicConfig::new(Duration::from_millis(100)).with_timeout(Duration::from_millis(50));
    let id = lifecycle.spawn_periodic("stuck_once", config, {
        let calls = Arc::clone(&calls);
        move |_token| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    // A dependency that hangs: only the timeout gets the loop going again.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok(())
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = lifecycle.job(id).expect("registered");
    assert_eq!(job.failures, 1);
    assert!(job.runs >= 5, "the loop stopped after {} runs", job.runs);
    assert!(job.last_success.is_some());
    let error = job.last_error.expect("the timeout is recorded");
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(job.state, JobState::Running);

    assert!(lifecycle.shutdown(Duration::from_secs(1)).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_periodic_run_that_fails_is_counted_and_the_loop_continues() {
    let lifecycle = Lifecycle::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let id = lifecycle.spawn_periodic("flaky", PeriodicConfig::new(Duration::from_millis(100)), {
        let calls = Arc::clone(&calls);
        move |_token| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                anyhow::ensure!(call.is_multiple_of(2), "odd call {call}");
                Ok(())
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(950)).await;
    let job = lifecycle.job(id).expect("registered");
    assert_eq!(job.runs, 10, "runs at 0, 100, ..., 900 ms");
    assert_eq!(job.failures, 5);
    assert_eq!(job.last_error.as_deref(), Some("odd call 9"));
    assert_eq!(job.state, JobState::Running);
    assert!(lifecycle.shutdown(Duration::from_secs(1)).await.is_clean());
}

/// A periodic job whose one run takes ten seconds; returns its id and a flag set when
/// the run completes.
fn spawn_long_run(
    lifecycle: &Lifecycle,
    config: PeriodicConfig,
) -> (shop_lifecycle::JobId, Arc<AtomicBool>) {
    let completed = Arc::new(AtomicBool::new(false));
    let id = lifecycle.spawn_periodic("nightly_export", config, {
        let completed = Arc::clone(&completed);
        move |_token| {
            let completed = Arc::clone(&completed);
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                completed.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    (id, completed)
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_the_periodic_run_in_flight_finishes_by_default() {
    let lifecycle = Lifecycle::new();
    let config = PeriodicConfig::new(Duration::from_secs(60)).with_timeout(Duration::from_secs(30));
    let (id, completed) = spawn_long_run(&lifecycle, config);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = lifecycle.shutdown(Duration::from_secs(60)).await;

    assert!(report.is_clean(), "{report:?}");
    assert!(completed.load(Ordering::SeqCst), "the run was cut off");
    let job = lifecycle.job(id).expect("registered");
    assert_eq!((job.runs, job.failures), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_periodic_job_configured_to_drop_its_run_stops_at_once_at_shutdown() {
    let lifecycle = Lifecycle::new();
    let config = PeriodicConfig::new(Duration::from_secs(60))
        .with_timeout(Duration::from_secs(30))
        .with_drop_run_on_cancel(true);
    let (id, completed) = spawn_long_run(&lifecycle, config);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = lifecycle.shutdown(Duration::from_secs(60)).await;

    assert!(report.is_clean(), "{report:?}");
    assert!(report.elapsed < Duration::from_secs(9), "{report:?}");
    assert!(!completed.load(Ordering::SeqCst));
    let job = lifecycle.job(id).expect("registered");
    assert_eq!(
        (job.runs, job.failures),
        (0, 0),
        "a dropped run is not a failure"
    );
    assert_eq!(job.state, JobState::Finished);
}

#[tokio::test(start_paused = true)]
async fn a_periodic_job_can_wait_one_period_before_its_first_run() {
    let lifecycle = Lifecycle::new();
    let config = PeriodicConfig::new(Duration::from_secs(10)).with_run_immediately(false);
    let id = lifecycle.spawn_periodic("later", config, |_token| async { Ok(()) });

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(lifecycle.job(id).map(|job| job.runs), Some(0));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(lifecycle.job(id).map(|job| job.runs), Some(1));
    assert!(lifecycle.shutdown(Duration::from_secs(1)).await.is_clean());
}
