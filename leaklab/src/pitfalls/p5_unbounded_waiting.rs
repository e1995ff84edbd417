//! Pitfall 5: waiting forever on a shared resource.
//!
//! Workload, against the real Postgres: a pool of 4 connections, all 4 held by slow
//! work (the pool is exhausted). Requests that need a connection arrive:
//! `iterations` at once, then two per sample during the window.
//!
//! * leaky: the handler puts the job on an **unbounded** channel and answers 202; one
//!   worker takes jobs off it and waits for a connection with **no acquire timeout**.
//!   Every request adds a waiter that nothing bounds and nothing ends.
//! * fixed: the handler acquires from a pool built like the orders pool, with an
//!   acquire timeout, and answers 503 at once when it passes (load shedding). Waiters
//!   never outlive their request. Once the slow work lets go, a request succeeds again.

use std::time::Duration;

use shop_lifecycle::{CancellationToken, Lifecycle};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::db::{PoolLimits, acquire_for_setup, ensure_database, pool};
use crate::probe::{Gauge, Probe, observe};
use crate::report::{Check, VariantReport};
use crate::{LabConfig, Pitfall, Variant};

const POOL_SIZE: u32 = 4;
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(100);

/// The work a request needs a connection for.
async fn check_stock(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query("select 1").execute(&mut *conn).await?;
    Ok(())
}

mod leaky {
    use super::*;

    /// The queue between handlers and the worker.
    // This is the bug, on purpose: an unbounded channel, so nothing ever says "full"
    // and every request waits, however many are already waiting.
    #[expect(
        clippy::disallowed_methods,
        reason = "the leaky variant: an unbounded queue, on purpose"
    )]
    pub(super) fn job_queue() -> (mpsc::UnboundedSender<()>, mpsc::UnboundedReceiver<()>) {
        mpsc::unbounded_channel()
    }

    /// The worker: one job at a time, each waiting for a connection as long as it
    /// takes (the pool has no acquire timeout).
    pub(super) async fn worker(
        mut jobs: mpsc::UnboundedReceiver<()>,
        pool: PgPool,
        waiters: Gauge,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let job = tokio::select! {
                () = token.cancelled() => return Ok(()),
                job = jobs.recv() => job,
            };
            if job.is_none() {
                return Ok(());
            }
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                _ = check_stock(&pool) => {}
            }
            waiters.sub();
        }
    }
}

/// Answers of the two handlers, as HTTP statuses.
const ACCEPTED: u16 = 202;
const OK: u16 = 200;
const SERVICE_UNAVAILABLE: u16 = 503;

/// The fixed handler: the wait is bounded by the pool's acquire timeout, and the answer
/// to an exhausted pool is 503 at once.
async fn fixed_request(pool: &PgPool, probe: &Probe) -> u16 {
    let _in_flight = probe.in_flight.enter();
    let _waiting = probe.waiters.enter();
    match check_stock(pool).await {
        Ok(()) => OK,
        Err(_) => SERVICE_UNAVAILABLE,
    }
}

/// The leaky handler: queue and say "accepted".
fn leaky_request(jobs: &mpsc::UnboundedSender<()>, probe: &Probe) -> u16 {
    let _in_flight = probe.in_flight.enter();
    probe.waiters.add();
    match jobs.send(()) {
        Ok(()) => ACCEPTED,
        Err(_) => {
            probe.waiters.sub();
            SERVICE_UNAVAILABLE
        }
    }
}

pub(super) async fn run(variant: Variant, config: &LabConfig) -> anyhow::Result<VariantReport> {
    ensure_database(&config.database_url).await?;
    let limits = PoolLimits {
        max_connections: POOL_SIZE,
        acquire_timeout: match variant {
            Variant::Leaky => None,
            Variant::Fixed => Some(ACQUIRE_TIMEOUT),
        },
        statement_timeout: Some(Duration::from_secs(5)),
    };
    let pool = pool(&config.database_url, limits)?;
    // The slow work that exhausts the pool: every connection taken and held.
    let mut hogs = Vec::new();
    for _ in 0..POOL_SIZE {
        let mut conn = acquire_for_setup(&pool).await?;
        sqlx::query("select 1").execute(&mut *conn).await?;
        hogs.push(conn);
    }

    let probe = Probe::default();
    let lifecycle = Lifecycle::new();
    let jobs = match variant {
        Variant::Leaky => {
            let (sender, receiver) = leaky::job_queue();
            let (pool, waiters) = (pool.clone(), probe.waiters.clone());
            lifecycle.spawn_job("stock_checker", move |token| {
                leaky::worker(receiver, pool, waiters, token)
            });
            Some(sender)
        }
        Variant::Fixed => None,
    };
    let request = |pool: PgPool, probe: Probe, jobs: Option<mpsc::UnboundedSender<()>>| async move {
        match &jobs {
            Some(jobs) => leaky_request(jobs, &probe),
            None => fixed_request(&pool, &probe).await,
        }
    };
    tokio::time::sleep(Duration::from_millis(10)).await;

    let alive_before = shop_lifecycle::alive_tasks();
    let mut statuses = futures::future::join_all(
        (0..config.iterations).map(|_| request(pool.clone(), probe.clone(), jobs.clone())),
    )
    .await;
    let alive_after_workload = shop_lifecycle::alive_tasks();
    let later = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let detector = observe(&probe, &config.sampling, || {
        let (pool, probe, jobs, later) = (pool.clone(), probe.clone(), jobs.clone(), later.clone());
        async move {
            let status = request(pool, probe, jobs).await;
            later.lock().push(status);
        }
    })
    .await;
    let mut report = VariantReport::new(
        Pitfall::UnboundedWaiting,
        variant,
        alive_before,
        alive_after_workload,
        &detector,
    );
    statuses.extend(std::mem::take(&mut *later.lock()));
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    report.notes.push(format!(
        "{} requests on an exhausted pool: {} accepted into the queue, {} shed with 503",
        statuses.len(),
        count(ACCEPTED),
        count(SERVICE_UNAVAILABLE)
    ));

    // The slow work lets go of its connections.
    drop(hogs);
    match variant {
        Variant::Leaky => {
            let backlog = probe.waiters.get();
            let started = tokio::time::Instant::now();
            while probe.waiters.get() > 0 && started.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            report.notes.push(format!(
                "a backlog of {backlog} waiters took {:?} to drain once the pool was free",
                started.elapsed()
            ));
        }
        Variant::Fixed => {
            let recovered = fixed_request(&pool, &probe).await == OK;
            report.checks.push(Check::new(
                format!("recovered once the pool is free = {recovered}"),
                recovered,
            ));
        }
    }
    let shutdown = lifecycle.shutdown(Duration::from_secs(1)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
    if variant == Variant::Fixed {
        report.checks.push(Check::new(
            format!(
                "shutdown clean (tracked after = {})",
                shutdown.tracked_after
            ),
            shutdown.is_clean(),
        ));
    }
    Ok(report)
}
