//! Periodic jobs: the cure for timers that accumulate (pitfall 4).
//!
//! The leak this module prevents is a job that spawns a task per tick and ticks faster
//! than the work finishes, or an `interval` left on the default
//! `MissedTickBehavior::Burst` that fires a storm of runs after a stall. Here a
//! periodic job is **one** task: each run is awaited inside the loop, so runs never
//! overlap; the missed-tick behaviour is explicit (default `Delay`); every run has a
//! timeout; and the loop `select!`s on its token so it ends promptly at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::job::{JobId, Registry};

/// How a periodic job is scheduled. Built with [`PeriodicConfig::new`] and the
/// `with_*` methods.
#[derive(Clone, Debug)]
pub struct PeriodicConfig {
    /// Time between the starts of two runs (when runs are shorter than this).
    pub period: Duration,
    /// The longest one run may take. A run that exceeds it is dropped, counted as a
    /// failure and logged; the loop then waits for the next tick.
    pub timeout: Duration,
    /// What to do with ticks missed while a run was slow. `Delay` (the default) waits
    /// a full period after a late run; `Burst`, tokio's own default, would fire the
    /// missed ticks back to back, which is exactly the storm pitfall 4 warns about.
    pub missed_tick_behavior: MissedTickBehavior,
    /// Run once as soon as the job starts (default), rather than after one period.
    pub run_immediately: bool,
    /// At shutdown, drop the run in flight instead of letting it finish (default
    /// `false`). Dropping is only safe when the work is cancel-safe, e.g. read-only;
    /// the default lets the current run finish, bounded by `timeout`, so a run is
    /// never cut off halfway through a write.
    pub drop_run_on_cancel: bool,
}

impl PeriodicConfig {
    /// Runs every `period`, with a timeout of one period, `MissedTickBehavior::Delay`,
    /// a first run as soon as the job starts, and the run in flight allowed to finish
    /// at shutdown.
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            timeout: period,
            missed_tick_behavior: MissedTickBehavior::Delay,
            run_immediately: true,
            drop_run_on_cancel: false,
        }
    }

    /// Sets the longest one run may take.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets what happens to ticks missed while a run was slow.
    #[must_use]
    pub const fn with_missed_tick_behavior(mut self, behavior: MissedTickBehavior) -> Self {
        self.missed_tick_behavior = behavior;
        self
    }

    /// Sets whether the first run starts at once (`true`) or after one period.
    #[must_use]
    pub const fn with_run_immediately(mut self, run_immediately: bool) -> Self {
        self.run_immediately = run_immediately;
        self
    }

    /// Sets whether shutdown drops the run in flight (`true`) or lets it finish
    /// within its timeout (`false`, the default).
    #[must_use]
    pub const fn with_drop_run_on_cancel(mut self, drop_run_on_cancel: bool) -> Self {
        self.drop_run_on_cancel = drop_run_on_cancel;
        self
    }
}

/// The body of a periodic job: the one loop that owns the interval.
///
/// Returns `Ok(())` when the token is cancelled. A failed run never ends the loop; a
/// panicking run does (the caller catches it and marks the job `Panicked`), because a
/// panic is a bug that a restart loop would only hide.
pub(crate) async fn run_periodic<F, Fut>(
    id: JobId,
    name: Arc<str>,
    registry: Arc<Registry>,
    config: PeriodicConfig,
    token: CancellationToken,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let first_tick = if config.run_immediately {
        Instant::now()
    } else {
        Instant::now() + config.period
    };
    let mut ticks = tokio::time::interval_at(first_tick, config.period);
    ticks.set_missed_tick_behavior(config.missed_tick_behavior);

    loop {
        // `biased`: once cancelled, never start another run, even if a tick is due.
        // Both branches are cancel-safe: losing a pending tick or `cancelled()` is fine.
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            _ = ticks.tick() => {}
        }

        // The run is awaited right here, inside the loop: this is what guarantees that
        // two runs of the same job never overlap, however slow the work gets.
        let run = tokio::time::timeout(config.timeout, work(token.clone()));
        let outcome = if config.drop_run_on_cancel {
            tokio::select! {
                biased;
                outcome = run => outcome,
                () = token.cancelled() => {
                    tracing::debug!(job = %name, "run dropped at shutdown");
                    break;
                }
            }
        } else {
            run.await
        };

        match outcome {
            Ok(Ok(())) => registry.record_run(id, Ok(())),
            Ok(Err(error)) => {
                let message = format!("{error:#}");
                tracing::warn!(job = %name, error = %message, "periodic run failed");
                registry.record_run(id, Err(message));
            }
            Err(_elapsed) => {
                let message = format!("run timed out after {:?}", config.timeout);
                tracing::warn!(job = %name, timeout = ?config.timeout, "periodic run timed out");
                registry.record_run(id, Err(message));
            }
        }
    }
    Ok(())
}
