//! Pitfall 1: a long-lived task that nothing can stop.
//!
//! Workload: a cache refresher, a loop that refreshes every 50 ms, is (re)started on
//! every configuration reload. The lab makes `iterations` reloads, then one reload per
//! background event during the window (standing for a file watcher, a reconnect or a
//! leader election: no request involved).
//!
//! * leaky: `reload` is a bare `tokio::spawn(loop { ... })` whose `JoinHandle` is
//!   dropped. The previous refresher cannot be stopped, so every reload adds one.
//! * fixed: `reload` cancels the previous refresher's child token and starts the new
//!   one with `Lifecycle::spawn_job`; the loop `select!`s on its token. One refresher
//!   runs at any time, and shutdown waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shop_lifecycle::{CancellationToken, Lifecycle};

use crate::probe::{Probe, observe};
use crate::report::{Check, VariantReport};
use crate::{LabConfig, Pitfall, Variant};

const REFRESH_EVERY: Duration = Duration::from_millis(50);

mod leaky {
    use super::*;

    /// Starts the refresher after a config reload.
    // This is the bug, on purpose: the JoinHandle is dropped, so nothing can ever stop
    // this loop; the next reload starts another one beside it.
    pub(super) fn start_refresher(refreshes: Arc<AtomicU64>) {
        #[expect(
            clippy::disallowed_methods,
            reason = "the leaky variant: a detached loop, on purpose"
        )]
        drop(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH_EVERY);
            loop {
                ticks.tick().await;
                refreshes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
}

/// The cure: the refresher is a supervised job, and a reload replaces it.
struct SupervisedRefresher {
    lifecycle: Lifecycle,
    current: Option<CancellationToken>,
    refreshes: Arc<AtomicU64>,
}

impl SupervisedRefresher {
    fn reload(&mut self) {
        if let Some(previous) = self.current.take() {
            previous.cancel();
        }
        let refreshes = Arc::clone(&self.refreshes);
        let mut job_token = None;
        self.lifecycle.spawn_job("cache_refresher", |token| {
            job_token = Some(token.clone());
            refresh_until_cancelled(token, refreshes)
        });
        self.current = job_token;
    }
}

async fn refresh_until_cancelled(
    token: CancellationToken,
    refreshes: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(REFRESH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            _ = ticks.tick() => { refreshes.fetch_add(1, Ordering::Relaxed); }
        }
    }
}

pub(super) async fn run(variant: Variant, config: &LabConfig) -> anyhow::Result<VariantReport> {
    let probe = Probe::default();
    let refreshes = Arc::new(AtomicU64::new(0));
    let lifecycle = Lifecycle::new();
    let mut supervised = SupervisedRefresher {
        lifecycle: lifecycle.clone(),
        current: None,
        refreshes: Arc::clone(&refreshes),
    };
    let mut reload = || match variant {
        Variant::Leaky => leaky::start_refresher(Arc::clone(&refreshes)),
        Variant::Fixed => supervised.reload(),
    };

    let alive_before = shop_lifecycle::alive_tasks();
    for _ in 0..config.iterations {
        reload();
    }
    tokio::time::sleep(REFRESH_EVERY).await;
    let alive_after_workload = shop_lifecycle::alive_tasks();
    let detector = observe(&probe, &config.sampling, || {
        reload();
        std::future::ready(())
    })
    .await;
    let reloads = config.iterations + config.sampling.window * config.sampling.events_per_sample;

    let mut report = VariantReport::new(
        Pitfall::DetachedLoop,
        variant,
        alive_before,
        alive_after_workload,
        &detector,
    );
    report.notes.push(format!(
        "{reloads} reloads, {} refreshes",
        refreshes.load(Ordering::Relaxed)
    ));
    let shutdown = lifecycle.shutdown(Duration::from_secs(1)).await;
    let left = shop_lifecycle::alive_tasks();
    match variant {
        Variant::Leaky => report.notes.push(format!(
            "{left} loops still alive after shutdown; only dropping the runtime ends them"
        )),
        Variant::Fixed => report.checks.push(Check::new(
            format!(
                "shutdown clean (tracked after = {}), alive after = {left}",
                shutdown.tracked_after
            ),
            // Not `left == alive_before`: a finished task leaves the runtime's count a
            // moment after it leaves the tracker, and that race is not a leak.
            shutdown.is_clean(),
        )),
    }
    Ok(report)
}
