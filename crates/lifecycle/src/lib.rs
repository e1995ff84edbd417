//! The supervisor that owns every background task in shop.
//!
//! A task that nothing owns is the first leak in `docs/leaks.md` (pitfall 1): a
//! detached `tokio::spawn` whose `JoinHandle` is dropped keeps running after
//! everyone has forgotten it, is cut off mid-write when the runtime drops, or holds a
//! pool connection forever. This crate is the one place in the workspace allowed to
//! spawn (`clippy.toml` forbids `tokio::spawn`, and spawning on a `TaskTracker` or
//! `JoinSet` of one's own, everywhere else), so every task has:
//!
//! * **an owner**: a [`Lifecycle`] holding one root [`CancellationToken`] and one
//!   [`TaskTracker`](tokio_util::task::TaskTracker);
//! * **a way to be stopped**: every job gets a child token and must end when it is
//!   cancelled;
//! * **a name**: jobs are listed by [`Lifecycle::jobs`] (for a debug endpoint),
//!   exported by [`Lifecycle::record_metrics`], and named in the [`ShutdownReport`]
//!   when they miss the shutdown deadline.
//!
//! Beside the supervisor live two cures that services share: [`queue::WorkQueue`], the
//! bounded tracked queue for work that must outlive a request (pitfall 2), and
//! [`leak::LeakDetector`], which turns samples of the alive-task count into a verdict.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use shop_lifecycle::{Lifecycle, PeriodicConfig};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let lifecycle = Lifecycle::new();
//!
//!     // A long-lived job: it ends when its token is cancelled.
//!     lifecycle.spawn_job("outbox_relay", |token| async move {
//!         loop {
//!             tokio::select! {
//!                 () = token.cancelled() => return Ok(()),
//!                 () = tokio::time::sleep(Duration::from_millis(10)) => { /* relay a batch */ }
//!             }
//!         }
//!     });
//!
//!     // A periodic job: one task, runs never overlap, each run has a timeout.
//!     let every_minute = PeriodicConfig::new(Duration::from_secs(60))
//!         .with_timeout(Duration::from_secs(10));
//!     lifecycle.spawn_periodic("cache_warmer", every_minute, |_token| async {
//!         // warm the cache
//!         Ok(())
//!     });
//!
//!     // A service waits for `shop_lifecycle::shutdown_signal().await` here.
//!
//!     let report = lifecycle.shutdown(Duration::from_secs(5)).await;
//!     assert!(report.is_clean(), "{report:?}");
//!     assert_eq!(lifecycle.tracked_tasks(), 0);
//! }
//! ```

mod export;
mod job;
pub mod leak;
mod periodic;
pub mod queue;
mod shutdown;
mod supervisor;

pub use job::{JobId, JobInfo, JobKind, JobState};
pub use periodic::PeriodicConfig;
pub use shutdown::{ShutdownReport, shutdown_signal};
pub use supervisor::Lifecycle;
pub use tokio_util::sync::CancellationToken;

/// The number of tasks alive in the current tokio runtime.
///
/// This is the signal that reveals a task leak: after shutdown, or once traffic stops,
/// it must come back to its baseline. It reads
/// `tokio::runtime::Handle::current().metrics().num_alive_tasks()` (stable API), so it
/// counts every task of the runtime, supervised or not, but not `spawn_blocking`
/// work, which runs on the blocking pool. The future that `block_on` drives (a
/// `#[tokio::main]` body or a `#[tokio::test]` body) is not a task either.
///
/// Returns 0 when called outside a tokio runtime, rather than panicking, so that a
/// metrics sampler running on a plain thread cannot bring the process down.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|handle| handle.metrics().num_alive_tasks())
        .unwrap_or(0)
}
