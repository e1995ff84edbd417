//! Pitfall 4: timers that accumulate.
//!
//! Workload: a report builder that should run every 20 ms, while its dependency is
//! stalled: each run takes 30 s. The lab lets it tick `iterations` times, then
//! watches; nothing else happens, the job grows (or not) on its own.
//!
//! * leaky: the job's loop (itself supervised) spawns a task per tick, on tokio's
//!   default `MissedTickBehavior::Burst`: runs overlap and pile up, one more per tick.
//! * fixed: `Lifecycle::spawn_periodic`: one task, each run awaited inside the loop
//!   with a timeout, `MissedTickBehavior::Delay`. At most one run is ever in flight.

use std::time::Duration;

use shop_lifecycle::{CancellationToken, Lifecycle, PeriodicConfig};

use crate::probe::{Gauge, Probe, observe};
use crate::report::{Check, VariantReport};
use crate::{LabConfig, Pitfall, Variant};

const PERIOD: Duration = Duration::from_millis(20);
/// How long one run takes while the dependency is stalled.
const STALLED_RUN: Duration = Duration::from_secs(30);

/// One run of the report builder, against a stalled dependency. `runs` counts the
/// runs in flight (the "waiters" of this pitfall); `max_runs` their high-water mark.
async fn build_report(runs: Gauge, max_runs: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let _run = runs.enter();
    max_runs.fetch_max(runs.get(), std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(STALLED_RUN).await;
}

mod leaky {
    use super::*;

    /// The job's loop: one tick, one spawned run.
    // This is the bug, on purpose: a task per tick, never awaited, so runs overlap and
    // pile up whenever the work is slower than the period.
    pub(super) async fn tick_loop(
        token: CancellationToken,
        runs: Gauge,
        max_runs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(PERIOD); // default: MissedTickBehavior::Burst
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                _ = ticks.tick() => {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "the leaky variant: a task per tick, never awaited, on purpose"
                    )]
                    drop(tokio::spawn(build_report(runs.clone(), max_runs.clone())));
                }
            }
        }
    }
}

pub(super) async fn run(variant: Variant, config: &LabConfig) -> anyhow::Result<VariantReport> {
    let probe = Probe::default();
    let max_runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lifecycle = Lifecycle::new();
    let runs = probe.waiters.clone();

    let alive_before = shop_lifecycle::alive_tasks();
    match variant {
        Variant::Leaky => {
            let (runs, max_runs) = (runs.clone(), max_runs.clone());
            lifecycle.spawn_job("report_builder", move |token| {
                leaky::tick_loop(token, runs, max_runs)
            });
        }
        Variant::Fixed => {
            let (runs, max_runs) = (runs.clone(), max_runs.clone());
            let every = PeriodicConfig::new(PERIOD)
                .with_timeout(Duration::from_millis(200))
                // A report run only reads: dropping it at shutdown is safe.
                .with_drop_run_on_cancel(true);
            lifecycle.spawn_periodic("report_builder", every, move |_token| {
                let (runs, max_runs) = (runs.clone(), max_runs.clone());
                async move {
                    build_report(runs, max_runs).await;
                    Ok(())
                }
            });
        }
    }
    let ticks = u32::try_from(config.iterations).unwrap_or(u32::MAX);
    tokio::time::sleep(PERIOD * ticks).await;
    let alive_after_workload = shop_lifecycle::alive_tasks();
    // No events: the job grows, or not, by itself.
    let detector = observe(&probe, &config.sampling, || std::future::ready(())).await;

    let mut report = VariantReport::new(
        Pitfall::TimerPerTick,
        variant,
        alive_before,
        alive_after_workload,
        &detector,
    );
    let max = max_runs.load(std::sync::atomic::Ordering::SeqCst);
    let shutdown = lifecycle.shutdown(Duration::from_secs(1)).await;
    match variant {
        Variant::Leaky => report.notes.push(format!(
            "at most {max} runs in flight at once; {} still running after the job stopped",
            runs.get()
        )),
        Variant::Fixed => {
            report.checks.push(Check::new(
                format!("at most {max} run in flight at once"),
                max <= 1,
            ));
            report.checks.push(Check::new(
                format!(
                    "shutdown clean (tracked after = {})",
                    shutdown.tracked_after
                ),
                shutdown.is_clean(),
            ));
        }
    }
    Ok(report)
}
