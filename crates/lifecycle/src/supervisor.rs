//! [`Lifecycle`]: the one owner of every background task (the cure for pitfall 1).
//!
//! Every task in the workspace is started here, so every task is tracked by one
//! [`TaskTracker`] and can be stopped through one root [`CancellationToken`].
//! Shutdown is the sequence `docs/leaks.md` prescribes: cancel the root token, close
//! the tracker, wait for it under a deadline, and name whatever did not finish.
//!
//! The only two functions in the workspace that actually spawn are the private
//! [`Lifecycle::spawn_tracked`] and [`Lifecycle::spawn_blocking`] below.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::job::{JobId, JobInfo, JobKind, JobState, Registry, panic_message};
use crate::periodic::{PeriodicConfig, run_periodic};
use crate::shutdown::ShutdownReport;

/// The supervisor of every background task: one root token, one tracker, named jobs.
///
/// Cheap to clone (three reference-counted handles); every clone supervises the same
/// tasks, so a service keeps one in its `AppState` and hands clones to whoever needs
/// to spawn.
///
/// # Spawning after shutdown
///
/// Spawning is never refused, because a refusal would have to be handled by every
/// caller and the signatures return a handle unconditionally. Instead, a job spawned
/// once shutdown has started gets an **already-cancelled** token, so a cooperating job
/// returns at its first `select!`; and every task spawned after shutdown is still
/// tracked, so [`tracked_tasks`](Self::tracked_tasks) counts it and a shutdown still
/// waiting (or a second call to [`shutdown`](Self::shutdown)) waits for it.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// Cancelled by `shutdown`; every job's token is a child of it, so cancelling it
    /// reaches every job at once.
    token: CancellationToken,
    /// Counts every task spawned through this lifecycle; `shutdown` closes it and
    /// waits until it is empty.
    tracker: TaskTracker,
    /// Names, states and run counters of the jobs, and names of the live tasks.
    registry: Arc<Registry>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A fresh supervisor with no tasks.
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            registry: Arc::new(Registry::default()),
        }
    }

    /// A clone of the root token, cancelled when shutdown starts.
    ///
    /// Hand `lifecycle.token().cancelled_owned()` to axum's `with_graceful_shutdown`
    /// so that the server stops accepting at the same moment the jobs are told to stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A new child of the root token: cancelled at shutdown, and cancellable on its own
    /// without touching anything else.
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Whether shutdown has started (the root token is cancelled).
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Starts a long-lived named background job.
    ///
    /// `f` is called at once, on the caller's thread, with a child token; the future it
    /// returns runs as a tracked task and must end when that token is cancelled (a
    /// job that ignores it is named in the [`ShutdownReport`]). The job's outcome
    /// becomes its [`JobState`]: `Ok(())` is `Finished`; `Err` is logged with the job
    /// name and becomes `Failed`; a panic is caught (so it is logged with the name,
    /// not lost in a `JoinHandle` nobody awaits) and becomes `Panicked`.
    ///
    /// The job is not restarted: a failed background job is a bug to see in
    /// [`jobs`](Self::jobs) and metrics, not to hide behind a retry loop.
    pub fn spawn_job<F, Fut>(&self, name: impl Into<String>, f: F) -> JobId
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name: Arc<str> = name.into().into();
        let id = self.registry.register(name.to_string(), JobKind::Job);
        let job = f(self.child_token());
        self.spawn_supervised(id, name, job);
        id
    }

    /// Starts a periodic job: one task that calls `f` every `config.period`.
    ///
    /// Each run is awaited inside the job's loop, so runs never overlap; the interval
    /// uses `config.missed_tick_behavior` (default `Delay`); each run is bounded by
    /// `config.timeout`, and a timeout counts as a failed run (logged, then the loop
    /// goes on). At shutdown the loop stops before the next tick; the run in flight is
    /// allowed to finish within its timeout, unless `config.drop_run_on_cancel` says
    /// to drop it. Runs, failures and the last success are recorded in [`JobInfo`].
    ///
    /// # Panics
    ///
    /// Panics if `config.period` is zero, here at the call site rather than inside the
    /// job, where tokio's `interval` would panic.
    pub fn spawn_periodic<F, Fut>(
        &self,
        name: impl Into<String>,
        config: PeriodicConfig,
        f: F,
    ) -> JobId
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        assert!(
            !config.period.is_zero(),
            "a periodic job needs a non-zero period"
        );
        let name: Arc<str> = name.into().into();
        let id = self.registry.register(name.to_string(), JobKind::Periodic);
        let job = run_periodic(
            id,
            Arc::clone(&name),
            Arc::clone(&self.registry),
            config,
            self.child_token(),
            f,
        );
        self.spawn_supervised(id, name, job);
        id
    }

    /// Starts a short-lived tracked task, e.g. a test server or a one-off flush.
    ///
    /// Unlike a job it gets no token and has no [`JobInfo`] (pass it a
    /// [`child_token`](Self::child_token) if it can block), but it is counted by
    /// [`tracked_tasks`](Self::tracked_tasks), awaited at shutdown, and named in the
    /// [`ShutdownReport`] if it is still running at the deadline. Its panics reach the
    /// returned `JoinHandle`, as with a plain spawn.
    pub fn spawn_task<Fut>(&self, name: impl Into<String>, fut: Fut) -> JoinHandle<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let name = name.into();
        let span = detached_span(tracing::info_span!(parent: None, "task", task = %name));
        self.spawn_task_in(span, name, fut)
    }

    /// Like [`spawn_task`](Self::spawn_task), for a task that serves one connection (a
    /// server's accepted connection, an HTTP client's pooled one). Its span is at DEBUG,
    /// so off unless `RUST_LOG` turns on `shop_lifecycle=debug`: such a task is polled
    /// for every request on its connection, and entering an INFO span on each poll cost
    /// the gateway about a tenth of its CPU per proxied request. Request spans inside
    /// it are unaffected.
    pub fn spawn_connection_task<Fut>(
        &self,
        name: impl Into<String>,
        fut: Fut,
    ) -> JoinHandle<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let name = name.into();
        let span = detached_span(tracing::debug_span!(parent: None, "task", task = %name));
        self.spawn_task_in(span, name, fut)
    }

    fn spawn_task_in<Fut>(
        &self,
        span: tracing::Span,
        name: String,
        fut: Fut,
    ) -> JoinHandle<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let guard = self.registry.track_task(name);
        self.spawn_tracked(
            async move {
                // Dropped when the task ends, however it ends: see `TaskGuard`.
                let _guard = guard;
                fut.await
            }
            .instrument(span),
        )
    }

    /// Runs CPU-heavy or blocking work (password hashing, a blocking library) on the
    /// blocking pool, tracked so that shutdown waits for it.
    ///
    /// Blocking work cannot be cancelled (pitfall 3): keep each call short, and put a
    /// timeout around the `JoinHandle` if the caller has a deadline.
    #[expect(
        clippy::disallowed_methods,
        reason = "the supervisor itself: one of the two places in the workspace that may spawn"
    )]
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.tracker.spawn_blocking(f)
    }

    /// A snapshot of every job ever spawned on this lifecycle, sorted by name.
    pub fn jobs(&self) -> Vec<JobInfo> {
        self.registry.snapshot()
    }

    /// A snapshot of one job, if the id belongs to this lifecycle.
    pub fn job(&self, id: JobId) -> Option<JobInfo> {
        self.registry.job(id)
    }

    /// The number of tasks (jobs, tasks and blocking work) that have not ended yet.
    pub fn tracked_tasks(&self) -> usize {
        self.tracker.len()
    }

    /// Stops everything: cancels the root token, closes the tracker, waits up to
    /// `deadline` for every tracked task, then logs (`warn`) by name every job and
    /// task that did not finish, and reports.
    ///
    /// Safe to call more than once (a second call waits for whatever was spawned
    /// after the first). Tasks that miss the deadline are left running: they can only
    /// be dropped with the runtime, and the report says which they are.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let started = tokio::time::Instant::now();
        let alive_tasks_before = crate::alive_tasks();
        let tracked_before = self.tracker.len();
        tracing::info!(
            tracked = tracked_before,
            ?deadline,
            "shutting down: cancelling every job"
        );

        self.token.cancel();
        self.tracker.close();
        let all_finished = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        if all_finished {
            // A task leaves the tracker just before the runtime releases it; one yield
            // lets that release happen before `alive_tasks_after` is read.
            tokio::task::yield_now().await;
        }

        let unfinished = self.registry.unfinished();
        for name in &unfinished {
            tracing::warn!(job = %name, ?deadline, "did not finish before the shutdown deadline");
        }
        let report = ShutdownReport {
            alive_tasks_before,
            alive_tasks_after: crate::alive_tasks(),
            tracked_before,
            tracked_after: self.tracker.len(),
            unfinished,
            elapsed: started.elapsed(),
        };
        if report.is_clean() {
            tracing::info!(elapsed = ?report.elapsed, "shutdown complete");
        }
        report
    }

    /// Runs a job's future as a tracked task and turns its outcome into a [`JobState`].
    fn spawn_supervised<Fut>(&self, id: JobId, name: Arc<str>, job: Fut)
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let registry = Arc::clone(&self.registry);
        let span = detached_span(tracing::info_span!(parent: None, "job", job = %name));
        let supervised = async move {
            tracing::debug!("job started");
            // AssertUnwindSafe: after a panic the job's future is never polled again,
            // and the registry it shares is only touched under a lock that the job
            // never holds, so no broken invariant can be observed.
            match AssertUnwindSafe(job).catch_unwind().await {
                Ok(Ok(())) => {
                    tracing::debug!("job finished");
                    registry.finish(id, JobState::Finished, None);
                }
                Ok(Err(error)) => {
                    let message = format!("{error:#}");
                    tracing::error!(job = %name, error = %message, "job failed");
                    registry.finish(id, JobState::Failed, Some(message));
                }
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    tracing::error!(job = %name, panic = %message, "job panicked");
                    registry.finish(id, JobState::Panicked, Some(message));
                }
            }
        };
        // Nobody needs the handle: the tracker waits for the task and the registry
        // holds its outcome, so dropping it detaches nothing.
        drop(self.spawn_tracked(supervised.instrument(span)));
    }

    /// Spawns `fut` as a task counted by the tracker.
    #[expect(
        clippy::disallowed_methods,
        reason = "the supervisor itself: one of the two places in the workspace that may spawn (the other is `spawn_blocking`)"
    )]
    fn spawn_tracked<Fut>(&self, fut: Fut) -> JoinHandle<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }
}

/// A task's span is a root that only *follows from* the span that spawned it. As a child
/// it would keep its parent open for the task's whole life (tracing closes a span after
/// its last child): a pooled connection spawned during a request would hold that
/// request's span, unexported, until the connection closed.
fn detached_span(span: tracing::Span) -> tracing::Span {
    span.follows_from(tracing::Span::current());
    span
}
