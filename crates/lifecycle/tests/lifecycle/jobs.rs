//! Long-lived jobs, short tasks and blocking work under the supervisor (pitfall 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shop_lifecycle::{JobKind, JobState, Lifecycle};

/// A job that does what every job must: `select!` on its token wherever it waits.
async fn cooperating_job(
    token: shop_lifecycle::CancellationToken,
    ticks: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cooperating_job_stops_within_the_deadline() {
    let lifecycle = Lifecycle::new();
    let ticks = Arc::new(AtomicUsize::new(0));
    let id = lifecycle.spawn_job("outbox_relay", {
        let ticks = Arc::clone(&ticks);
        |token| cooperating_job(token, ticks)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ticks.load(Ordering::SeqCst) > 0, "the job never ran");
    assert_eq!(lifecycle.tracked_tasks(), 1);

    let deadline = Duration::from_secs(5);
    let report = lifecycle.shutdown(deadline).await;

    assert!(report.is_clean(), "{report:?}");
    assert!(report.elapsed < deadline, "{report:?}");
    assert_eq!(report.tracked_before, 1);
    assert_eq!(report.tracked_after, 0);
    assert!(lifecycle.is_shutting_down());
    let job = lifecycle.job(id).expect("the job is registered");
    assert_eq!(job.state, JobState::Finished);
    assert!(job.finished_at.is_some());
    assert_eq!(job.kind, JobKind::Job);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_ignores_its_token_is_named_in_the_shutdown_report() {
    let lifecycle = Lifecycle::new();
    let ticks = Arc::new(AtomicUsize::new(0));
    lifecycle.spawn_job("polite", {
        let ticks = Arc::clone(&ticks);
        |token| cooperating_job(token, ticks)
    });
    let stubborn = lifecycle.spawn_job("stubborn", |_token| async {
        // Never looks at its token: pitfall 1 in one line.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    });

    let deadline = Duration::from_secs(1);
    let report = lifecycle.shutdown(deadline).await;

    assert!(!report.is_clean());
    assert_eq!(report.unfinished, vec!["stubborn".to_owned()]);
    assert_eq!(report.tracked_before, 2);
    assert_eq!(report.tracked_after, 1);
    assert!(report.elapsed >= deadline, "{report:?}");
    let job = lifecycle.job(stubborn).expect("the job is registered");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.finished_at, None);
}

/// Stands for a bug deep inside a job.
fn check_invariant(holds: bool) -> anyhow::Result<()> {
    assert!(holds, "invariant broken");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_is_reported_failed_and_a_panicking_job_panicked() {
    let lifecycle = Lifecycle::new();
    let failing = lifecycle.spawn_job("failing", |_token| async {
        Err(anyhow::anyhow!("database is gone").context("relay batch"))
    });
    let panicking = lifecycle.spawn_job("panicking", |_token| async { check_invariant(false) });

    let report = lifecycle.shutdown(Duration::from_secs(5)).await;
    // Neither outcome leaves a task behind, and neither is "unfinished".
    assert!(report.is_clean(), "{report:?}");

    let failing = lifecycle.job(failing).expect("registered");
    assert_eq!(failing.state, JobState::Failed);
    assert_eq!(failing.state.as_str(), "failed");
    assert_eq!(
        failing.last_error.as_deref(),
        Some("relay batch: database is gone")
    );
    assert!(failing.finished_at.is_some());

    let panicking = lifecycle.job(panicking).expect("registered");
    assert_eq!(panicking.state, JobState::Panicked);
    assert_eq!(panicking.state.as_str(), "panicked");
    assert_eq!(panicking.last_error.as_deref(), Some("invariant broken"));
}

#[tokio::test(start_paused = true)]
async fn jobs_are_listed_by_name_with_their_state() {
    let lifecycle = Lifecycle::new();
    lifecycle.spawn_job("zeta", |token| async move {
        token.cancelled().await;
        Ok(())
    });
    lifecycle.spawn_job("alpha", |_token| async { Ok(()) });
    lifecycle.spawn_job("mid", |token| async move {
        token.cancelled().await;
        Ok(())
    });
    // Let "alpha" run to its end.
    tokio::time::sleep(Duration::from_millis(1)).await;

    let jobs = lifecycle.jobs();
    let listed: Vec<(&str, &str)> = jobs
        .iter()
        .map(|job| (job.name.as_str(), job.state.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("alpha", "finished"),
            ("mid", "running"),
            ("zeta", "running")
        ]
    );
    assert_eq!(lifecycle.tracked_tasks(), 2);
    assert!(lifecycle.shutdown(Duration::from_secs(1)).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_short_lived_task_is_tracked_and_named_if_it_outlives_the_deadline() {
    let lifecycle = Lifecycle::new();
    let quick = lifecycle.spawn_task("flush", async { 7 });
    let slow = lifecycle.spawn_task("test_server", async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    assert_eq!(quick.await.expect("the task completes"), 7);
    assert_eq!(lifecycle.tracked_tasks(), 1);

    let report = lifecycle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.unfinished, vec!["test_server".to_owned()]);
    assert_eq!(report.tracked_after, 1);

    // Aborting it through its handle removes it from the tracker and the report.
    slow.abort();
    assert!(slow.await.expect_err("aborted").is_cancelled());
    let report = lifecycle.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn blocking_work_is_tracked_and_awaited_at_shutdown() {
    let lifecycle = Lifecycle::new();
    let (release, gate) = std::sync::mpsc::sync_channel::<()>(1);
    let hashed = lifecycle.spawn_blocking(move || {
        // Stands for CPU-heavy work such as password hashing.
        gate.recv().expect("the test releases the gate");
        "hash"
    });
    assert_eq!(lifecycle.tracked_tasks(), 1);
    release.send(()).expect("the blocking task is waiting");

    let report = lifecycle.shutdown(Duration::from_secs(30)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.tracked_before, 1);
    assert_eq!(hashed.await.expect("completes"), "hash");
}
