//! What starts a shutdown ([`shutdown_signal`]) and what a shutdown found
//! ([`ShutdownReport`]).

use std::time::Duration;

/// What [`Lifecycle::shutdown`](crate::Lifecycle::shutdown) found.
///
/// The alive-task counts come from the whole runtime ([`alive_tasks`](crate::alive_tasks)),
/// so they include tasks this lifecycle does not own (and, if `shutdown` is awaited
/// inside a spawned task, that task itself). The tracked counts are this lifecycle's
/// own tasks only.
#[derive(Clone, Debug)]
pub struct ShutdownReport {
    /// Runtime alive tasks when shutdown started.
    pub alive_tasks_before: usize,
    /// Runtime alive tasks when shutdown ended.
    pub alive_tasks_after: usize,
    /// Tracked tasks when shutdown started.
    pub tracked_before: usize,
    /// Tracked tasks still running when shutdown ended (0 on a clean shutdown).
    pub tracked_after: usize,
    /// Names of the jobs and `spawn_task` tasks that missed the deadline, jobs first.
    /// Blocking work has no name, so it shows only in `tracked_after`.
    pub unfinished: Vec<String>,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether every tracked task ended before the deadline.
    pub fn is_clean(&self) -> bool {
        self.tracked_after == 0 && self.unfinished.is_empty()
    }
}

/// Resolves when the process is asked to stop: on SIGTERM (what Docker and
/// Kubernetes send) or Ctrl-C on unix, on Ctrl-C elsewhere.
///
/// If a handler cannot be installed, the failure is logged and that source is ignored
/// rather than panicking: a service that can still be stopped by the other signal is
/// better than one that cannot start.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("received Ctrl-C, shutting down"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
                tracing::info!("received SIGTERM, shutting down");
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
