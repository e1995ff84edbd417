//! The live leak demo: pitfall 2 switched on in the running service, for a bounded
//! time, so that the dashboards, the alert rule and the leak alarm can be watched
//! catching it (docs/leaks.md, "Watching a leak in the running stack").
//!
//! Refused unless the service was started with `LEAK_DEMO=1`. When allowed,
//! `POST /admin/leak-demo` (internal; the gateway only forwards `/v1/...`) opens a
//! **window** during which every `GET /v1/products/{id}` also sends a "product view"
//! audit record to an analytics sink that has stalled, fire-and-forget: a detached
//! `tokio::spawn` per request ([`leaky`]), the very bug that `clippy.toml` forbids
//! everywhere else, written once, on purpose. The response is unchanged; the task it
//! leaves behind is not owned by anyone.
//!
//! The demo is bounded three ways, so that it shows a leak without becoming one:
//!
//! * **in time**: the window (1 s ..= `LEAK_DEMO_MAX_DURATION`) is closed by a
//!   supervised job, `leak_demo_window`, when it runs out, by
//!   `DELETE /admin/leak-demo`, or at shutdown; from then on no request spawns anything
//!   (a request already past the check when the window closes may still leak its one task);
//! * **in lifetime**: each leaked task waits on the stalled sink for
//!   `LEAK_DEMO_TASK_LIFETIME`, then ends by itself, so alive tasks are back to their
//!   baseline that long after the window closed. Nothing else can end them early: that
//!   is what a leak is;
//! * **in number**: at most `LEAK_DEMO_MAX_TASKS` leaked tasks are alive at once; past
//!   it requests are served without leaking, and counted.
//!
//! **Shutdown** does not wait for the leaked tasks: they are not in the lifecycle's
//! tracker (that is the bug), so `Lifecycle::shutdown` completes as usual, its report
//! counts them in `alive_tasks_after`, `run_until_stopped` logs how many are left, and
//! they are dropped with the runtime when the process exits.
//!
//! Metrics: `shop_leak_demo_active` (1 while a window is open),
//! `shop_leak_demo_tasks_leaked_total`, `shop_leak_demo_tasks_alive`,
//! `shop_leak_demo_tasks_capped_total`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use parking_lot::{Mutex, MutexGuard};
use serde::Deserialize;
use serde_json::{Value, json};
use shop_lifecycle::{CancellationToken, Lifecycle};
use uuid::Uuid;

use crate::{config::Config, error::ApiError};

/// The pitfalls the demo can switch on, by the name `POST /admin/leak-demo` takes.
pub const PITFALLS: &[&str] = &["spawn-per-request"];
/// The live code path that leaks while a window is open.
pub const LEAKY_ROUTE: &str = "GET /v1/products/{id}";
/// The name of the supervised job that closes a window.
pub const WINDOW_JOB: &str = "leak_demo_window";

/// `POST /admin/leak-demo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// One of [`PITFALLS`].
    pub pitfall: String,
    /// Length of the window, 1 ..= `LEAK_DEMO_MAX_DURATION` in seconds.
    pub duration_secs: u64,
}

/// Why a window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// It ran for its whole duration.
    Elapsed,
    /// `DELETE /admin/leak-demo`.
    Request,
    /// The service is shutting down.
    Shutdown,
}

impl EndedBy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Elapsed => "elapsed",
            Self::Request => "request",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The demo's switch and counters. Cheap to clone; every clone is the same demo.
#[derive(Clone, Debug)]
pub struct LeakDemo {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `LEAK_DEMO`: false means every admin call is refused and [`Self::active`] never
    /// becomes true.
    enabled: bool,
    max_duration: Duration,
    task_lifetime: Duration,
    max_tasks: usize,
    /// Read on every product request; the only cost of the demo while no window is open.
    active: AtomicBool,
    /// Leaked tasks still alive: the cap, and `shop_leak_demo_tasks_alive`.
    alive: AtomicUsize,
    leaked_total: AtomicU64,
    capped_total: AtomicU64,
    next_window: AtomicU64,
    /// The open window, or the last one. A synchronous (parking_lot) mutex, not a tokio
    /// one: held for a few field reads and writes, never across an `.await`.
    window: Mutex<Option<Window>>,
}

#[derive(Debug)]
struct Window {
    id: u64,
    pitfall: &'static str,
    started_at: SystemTime,
    ends_at: SystemTime,
    /// `leaked_total` when the window opened, and when it closed.
    leaked_before: u64,
    leaked_after: Option<u64>,
    ended: Option<(SystemTime, EndedBy)>,
    /// Cancelled when the window closes early, so its job returns at once.
    stop: CancellationToken,
}

impl LeakDemo {
    /// The demo as configured (`LEAK_DEMO*`).
    pub fn new(config: &Config) -> Self {
        if config.leak_demo {
            tracing::warn!(
                max_duration = ?config.leak_demo_max_duration,
                task_lifetime = ?config.leak_demo_task_lifetime,
                max_tasks = config.leak_demo_max_tasks,
                "LEAK_DEMO is on: POST /admin/leak-demo can make {LEAKY_ROUTE} leak tasks \
                 (docs/leaks.md); never enable it in production"
            );
        }
        metrics::gauge!("shop_leak_demo_active").set(0.0);
        Self {
            inner: Arc::new(Inner {
                enabled: config.leak_demo,
                max_duration: config.leak_demo_max_duration,
                task_lifetime: config.leak_demo_task_lifetime,
                max_tasks: config.leak_demo_max_tasks,
                active: AtomicBool::new(false),
                alive: AtomicUsize::new(0),
                leaked_total: AtomicU64::new(0),
                capped_total: AtomicU64::new(0),
                next_window: AtomicU64::new(1),
                window: Mutex::new(None),
            }),
        }
    }

    /// Whether `LEAK_DEMO` allows the demo.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Whether a window is open (the leaky path is live).
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Leaked tasks still alive.
    pub fn tasks_alive(&self) -> usize {
        self.inner.alive.load(Ordering::Relaxed)
    }

    /// The refusal of every admin call when `LEAK_DEMO` is off: 403 `leak-demo-disabled`.
    pub fn ensure_enabled(&self) -> Result<(), ApiError> {
        if self.inner.enabled {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "leak-demo-disabled",
                "the leak demo is disabled; start orders with LEAK_DEMO=1 to allow it \
                 (development stacks only, see docs/leaks.md)",
            ))
        }
    }

    /// Opens a window: validates the request (422), refuses a second window (409),
    /// then starts the supervised job that closes it.
    pub fn start(&self, lifecycle: &Lifecycle, request: &StartRequest) -> Result<Value, ApiError> {
        self.ensure_enabled()?;
        let Some(pitfall) = PITFALLS.iter().copied().find(|p| *p == request.pitfall) else {
            return Err(ApiError::unprocessable(
                "invalid-leak-demo",
                format!(
                    "unknown pitfall {:?}; known: {}",
                    request.pitfall,
                    PITFALLS.join(", ")
                ),
            ));
        };
        let max = self.inner.max_duration.as_secs().max(1);
        if !(1..=max).contains(&request.duration_secs) {
            return Err(ApiError::unprocessable(
                "invalid-leak-demo",
                format!("duration_secs must be between 1 and {max} (LEAK_DEMO_MAX_DURATION)"),
            ));
        }
        let duration = Duration::from_secs(request.duration_secs);
        let id = self.inner.next_window.fetch_add(1, Ordering::Relaxed);
        let stop = CancellationToken::new();
        {
            let mut window = self.lock_window();
            if window.as_ref().is_some_and(|w| w.ended.is_none()) {
                return Err(ApiError::conflict(
                    "leak-demo-active",
                    "a leak demo is already running; DELETE /admin/leak-demo ends it",
                ));
            }
            let now = SystemTime::now();
            *window = Some(Window {
                id,
                pitfall,
                started_at: now,
                ends_at: now + duration,
                leaked_before: self.inner.leaked_total.load(Ordering::Relaxed),
                leaked_after: None,
                ended: None,
                stop: stop.clone(),
            });
            self.inner.active.store(true, Ordering::Relaxed);
        }
        metrics::gauge!("shop_leak_demo_active").set(1.0);
        tracing::warn!(
            pitfall,
            ?duration,
            task_lifetime = ?self.inner.task_lifetime,
            max_tasks = self.inner.max_tasks,
            "LEAK DEMO STARTED: for {duration:?}, every {LEAKY_ROUTE} spawns a detached task \
             that outlives its request (pitfall 2); each lives {:?}",
            self.inner.task_lifetime
        );
        let demo = self.clone();
        let deadline = tokio::time::Instant::now() + duration;
        lifecycle.spawn_job(WINDOW_JOB, move |token| async move {
            let ended_by = tokio::select! {
                biased;
                () = token.cancelled() => EndedBy::Shutdown,
                () = stop.cancelled() => EndedBy::Request,
                () = tokio::time::sleep_until(deadline) => EndedBy::Elapsed,
            };
            demo.end(id, ended_by);
            Ok(())
        });
        Ok(self.status())
    }

    /// Closes the open window, if any (`DELETE /admin/leak-demo`); the tasks already
    /// leaked live on until their lifetime is over.
    pub fn stop(&self) -> Result<Value, ApiError> {
        self.ensure_enabled()?;
        let open = self
            .lock_window()
            .as_ref()
            .filter(|w| w.ended.is_none())
            .map(|w| w.id);
        if let Some(id) = open {
            self.end(id, EndedBy::Request);
        }
        Ok(self.status())
    }

    /// The demo's state, for `GET /admin/leak-demo`.
    pub fn status_checked(&self) -> Result<Value, ApiError> {
        self.ensure_enabled()?;
        Ok(self.status())
    }

    fn status(&self) -> Value {
        let inner = &self.inner;
        let leaked_total = inner.leaked_total.load(Ordering::Relaxed);
        let window = self.lock_window().as_ref().map(|w| {
            let remaining = match w.ended {
                Some(_) => 0.0,
                None => w
                    .ends_at
                    .duration_since(SystemTime::now())
                    .map_or(0.0, |d| d.as_secs_f64()),
            };
            json!({
                "pitfall": w.pitfall,
                "started_at": unix(w.started_at),
                "ends_at": unix(w.ends_at),
                "remaining_secs": remaining,
                "ended_at": w.ended.map(|(at, _)| unix(at)),
                "ended_by": w.ended.map(|(_, by)| by.as_str()),
                "tasks_leaked": w.leaked_after.unwrap_or(leaked_total) - w.leaked_before,
            })
        });
        json!({
            "enabled": inner.enabled,
            "active": self.is_active(),
            "leaky_route": LEAKY_ROUTE,
            "pitfalls": PITFALLS,
            "window": window,
            "tasks_alive": self.tasks_alive(),
            "tasks_leaked_total": leaked_total,
            "tasks_capped_total": inner.capped_total.load(Ordering::Relaxed),
            "limits": {
                "max_duration_secs": inner.max_duration.as_secs(),
                "task_lifetime_secs": inner.task_lifetime.as_secs_f64(),
                "max_tasks": inner.max_tasks,
            },
        })
    }

    /// Closes window `id` if it is still open: the leaky path goes dark at once.
    fn end(&self, id: u64, by: EndedBy) {
        let leaked = {
            let mut window = self.lock_window();
            let Some(w) = window.as_mut().filter(|w| w.id == id && w.ended.is_none()) else {
                return;
            };
            self.inner.active.store(false, Ordering::Relaxed);
            let after = self.inner.leaked_total.load(Ordering::Relaxed);
            w.leaked_after = Some(after);
            w.ended = Some((SystemTime::now(), by));
            w.stop.cancel();
            after - w.leaked_before
        };
        metrics::gauge!("shop_leak_demo_active").set(0.0);
        tracing::warn!(
            ended_by = by.as_str(),
            tasks_leaked = leaked,
            tasks_alive = self.tasks_alive(),
            "LEAK DEMO ENDED ({}): {LEAKY_ROUTE} no longer leaks; the {} tasks still alive \
             end on their own within {:?}",
            by.as_str(),
            self.tasks_alive(),
            self.inner.task_lifetime
        );
    }

    /// Called by `GET /v1/products/{id}` on every request: nothing unless a window is
    /// open, then one leaked task (or, at the cap, one counted refusal to leak).
    pub fn on_product_view(&self, product: Uuid) {
        let inner = &self.inner;
        if !inner.active.load(Ordering::Relaxed) {
            return;
        }
        if inner.alive.fetch_add(1, Ordering::Relaxed) >= inner.max_tasks {
            inner.alive.fetch_sub(1, Ordering::Relaxed);
            inner.capped_total.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("shop_leak_demo_tasks_capped_total").increment(1);
            return;
        }
        inner.leaked_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("shop_leak_demo_tasks_leaked_total").increment(1);
        metrics::gauge!("shop_leak_demo_tasks_alive").increment(1.0);
        let alive = AliveGuard {
            inner: Arc::clone(inner),
        };
        let record = AuditRecord {
            product,
            viewed_at: SystemTime::now(),
        };
        leaky::audit_product_view(record, alive, inner.task_lifetime);
    }

    fn lock_window(&self) -> MutexGuard<'_, Option<Window>> {
        self.inner.window.lock()
    }
}

/// What the leaked task carries: one product view.
#[derive(Debug)]
struct AuditRecord {
    product: Uuid,
    viewed_at: SystemTime,
}

/// Counts one leaked task as alive until it ends, however it ends (its lifetime is
/// over, or the runtime drops it at exit).
#[derive(Debug)]
struct AliveGuard {
    inner: Arc<Inner>,
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        metrics::gauge!("shop_leak_demo_tasks_alive").decrement(1.0);
        let was = self.inner.alive.fetch_sub(1, Ordering::Relaxed);
        if was == 1 && !self.inner.active.load(Ordering::Relaxed) {
            tracing::info!("leak demo: every leaked task has ended");
        }
    }
}

/// The analytics sink, stalled: the send never completes before the client's own
/// timeout, `stall`.
async fn send_to_stalled_sink(record: AuditRecord, stall: Duration) {
    tokio::time::sleep(stall).await;
    tracing::trace!(product = %record.product, viewed_at = ?record.viewed_at, "audit send timed out");
}

mod leaky {
    use super::*;

    /// Sends the audit record of one product view, fire-and-forget.
    // This is the bug, on purpose (pitfall 2, docs/leaks.md): the send is spawned and its
    // handle dropped, so it outlives the request, nobody owns it, shutdown does not wait
    // for it, and one more piles up per request while the sink is stalled. It is the one
    // bare `tokio::spawn` in the services, reachable only while a leak demo window is
    // open, which only `LEAK_DEMO=1` allows.
    pub(super) fn audit_product_view(record: AuditRecord, alive: AliveGuard, stall: Duration) {
        #[expect(
            clippy::disallowed_methods,
            reason = "the leak demo: a detached send, on purpose (LEAK_DEMO=1 only)"
        )]
        drop(tokio::spawn(async move {
            let _alive = alive;
            send_to_stalled_sink(record, stall).await;
        }));
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
