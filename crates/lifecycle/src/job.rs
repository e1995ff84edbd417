//! The registry of supervised jobs: their identity, kind, state and run counters.
//!
//! The registry is what makes a job *visible*: [`Lifecycle::jobs`](crate::Lifecycle::jobs)
//! snapshots it for a debug endpoint, [`Lifecycle::record_metrics`](crate::Lifecycle::record_metrics)
//! exports it, and [`Lifecycle::shutdown`](crate::Lifecycle::shutdown) reads it to name
//! every job (and every short-lived task) that missed the deadline.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

/// Identifies one supervised job for the lifetime of its [`Lifecycle`](crate::Lifecycle).
///
/// Ids are handed out in spawn order and never reused, so two jobs with the same name
/// (which is allowed, though it makes metrics ambiguous) are still told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u64);

impl JobId {
    /// The raw number behind the id, e.g. for a debug endpoint.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// How a job was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A long-lived job started with [`Lifecycle::spawn_job`](crate::Lifecycle::spawn_job).
    Job,
    /// A periodic job started with [`Lifecycle::spawn_periodic`](crate::Lifecycle::spawn_periodic).
    Periodic,
}

impl JobKind {
    /// A lower-case name for logs, metrics and debug endpoints: `"job"` or `"periodic"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Periodic => "periodic",
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Spawned and not yet ended.
    Running,
    /// Ended with `Ok(())`, normally because its token was cancelled.
    Finished,
    /// Ended with `Err`; the error is in [`JobInfo::last_error`].
    Failed,
    /// Panicked; the panic message is in [`JobInfo::last_error`].
    Panicked,
}

impl JobState {
    /// A lower-case name for logs, metrics and debug endpoints:
    /// `"running"`, `"finished"`, `"failed"` or `"panicked"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Panicked => "panicked",
        }
    }

    /// Whether the job has ended, whatever the outcome.
    pub const fn is_ended(&self) -> bool {
        !matches!(self, Self::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one supervised job, as returned by
/// [`Lifecycle::jobs`](crate::Lifecycle::jobs).
#[derive(Clone, Debug)]
pub struct JobInfo {
    /// The job's id, unique within its `Lifecycle`.
    pub id: JobId,
    /// The name given at spawn time; it labels logs, metrics and the shutdown report.
    pub name: String,
    /// Long-lived or periodic.
    pub kind: JobKind,
    /// Where the job is in its life.
    pub state: JobState,
    /// When the job was spawned (wall clock, for humans).
    pub started_at: SystemTime,
    /// When the job ended, if it has.
    pub finished_at: Option<SystemTime>,
    /// Periodic jobs: runs attempted so far, failed ones included. Always 0 for `Job`.
    pub runs: u64,
    /// Periodic jobs: runs that returned `Err` or exceeded their timeout. Always 0 for `Job`.
    pub failures: u64,
    /// Periodic jobs: when a run last succeeded.
    pub last_success: Option<SystemTime>,
    /// The most recent error or panic message. It is *not* cleared by a later
    /// successful run, so a debug endpoint still shows what went wrong last.
    pub last_error: Option<String>,
}

/// The shared state behind every clone of a [`Lifecycle`](crate::Lifecycle).
///
/// Both maps sit behind a synchronous (`parking_lot`) mutex, not a tokio one: every
/// critical section is a map lookup or insert that never `.await`s, and `jobs()` /
/// `record_metrics()` must be callable from synchronous code. `parking_lot` locks do not
/// poison: a panic elsewhere never turns a debug snapshot into a second panic.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    jobs: Mutex<BTreeMap<JobId, JobInfo>>,
    /// Short-lived tasks from `spawn_task` that are still running, by an internal id,
    /// so that a shutdown that misses its deadline can name them too.
    tasks: Mutex<BTreeMap<u64, String>>,
}

impl Registry {
    fn next_id(&self) -> u64 {
        // Relaxed is enough: the counter only has to hand out distinct numbers.
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a job in the `Running` state and returns its id.
    pub(crate) fn register(&self, name: String, kind: JobKind) -> JobId {
        let id = JobId(self.next_id());
        let info = JobInfo {
            id,
            name,
            kind,
            state: JobState::Running,
            started_at: SystemTime::now(),
            finished_at: None,
            runs: 0,
            failures: 0,
            last_success: None,
            last_error: None,
        };
        self.jobs.lock().insert(id, info);
        id
    }

    /// Records one run of a periodic job: `Ok` for success, `Err(message)` for a failure.
    pub(crate) fn record_run(&self, id: JobId, outcome: Result<(), String>) {
        if let Some(job) = self.jobs.lock().get_mut(&id) {
            job.runs += 1;
            match outcome {
                Ok(()) => job.last_success = Some(SystemTime::now()),
                Err(message) => {
                    job.failures += 1;
                    job.last_error = Some(message);
                }
            }
        }
    }

    /// Marks a job as ended.
    pub(crate) fn finish(&self, id: JobId, state: JobState, error: Option<String>) {
        if let Some(job) = self.jobs.lock().get_mut(&id) {
            job.state = state;
            job.finished_at = Some(SystemTime::now());
            if error.is_some() {
                job.last_error = error;
            }
        }
    }

    /// One job, if the id is known.
    pub(crate) fn job(&self, id: JobId) -> Option<JobInfo> {
        self.jobs.lock().get(&id).cloned()
    }

    /// Every job, sorted by name (then by id, for jobs that share a name).
    pub(crate) fn snapshot(&self) -> Vec<JobInfo> {
        let mut jobs: Vec<JobInfo> = self.jobs.lock().values().cloned().collect();
        jobs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        jobs
    }

    /// Names of every job still running and every `spawn_task` task still alive:
    /// jobs first, sorted by name, then tasks, sorted by name.
    pub(crate) fn unfinished(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .snapshot()
            .into_iter()
            .filter(|job| job.state == JobState::Running)
            .map(|job| job.name)
            .collect();
        let mut tasks: Vec<String> = self.tasks.lock().values().cloned().collect();
        tasks.sort();
        names.extend(tasks);
        names
    }

    /// Remembers a running `spawn_task` task until the returned guard is dropped.
    pub(crate) fn track_task(self: &Arc<Self>, name: String) -> TaskGuard {
        let id = self.next_id();
        self.tasks.lock().insert(id, name);
        TaskGuard {
            registry: Arc::clone(self),
            id,
        }
    }
}

/// Removes a `spawn_task` task from the registry when dropped.
///
/// It lives inside the task's future, so it is dropped however the task ends:
/// completion, panic, or `JoinHandle::abort`.
#[derive(Debug)]
pub(crate) struct TaskGuard {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.registry.tasks.lock().remove(&self.id);
    }
}

/// The message carried by a panic payload, for logs and [`JobInfo::last_error`].
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
