//! The five pitfalls of `docs/leaks.md`, each a leaky and a fixed variant of one
//! workload. Every leaky variant lives in its file's `mod leaky`, the only code in the
//! workspace outside `shop-lifecycle` allowed to spawn, and only with an `#[allow]` on
//! the very function that is the bug.

mod p1_detached_loop;
mod p2_spawn_per_request;
mod p3_dropped_deadline;
mod p4_timer_per_tick;
mod p5_unbounded_waiting;

use std::fmt;
use std::time::Duration;

use crate::{LabConfig, VariantReport};

/// One of the five pitfalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pitfall {
    /// 1: a long-lived task that nothing can stop.
    DetachedLoop = 1,
    /// 2: fire-and-forget work spawned from a request handler.
    SpawnPerRequest = 2,
    /// 3: a deadline that does not reach the dependency call.
    DroppedDeadline = 3,
    /// 4: a task per tick, with overlapping slow work.
    TimerPerTick = 4,
    /// 5: waiting forever on a shared resource.
    UnboundedWaiting = 5,
}

impl Pitfall {
    /// All five, in order.
    pub const ALL: [Self; 5] = [
        Self::DetachedLoop,
        Self::SpawnPerRequest,
        Self::DroppedDeadline,
        Self::TimerPerTick,
        Self::UnboundedWaiting,
    ];

    /// The pitfall numbered `n` (1 to 5).
    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u8 == n)
    }

    /// A short title for the table.
    pub const fn title(self) -> &'static str {
        match self {
            Self::DetachedLoop => "1 detached loop",
            Self::SpawnPerRequest => "2 spawn per request",
            Self::DroppedDeadline => "3 dropped deadline",
            Self::TimerPerTick => "4 task per tick",
            Self::UnboundedWaiting => "5 unbounded waiting",
        }
    }
}

impl fmt::Display for Pitfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// Which side of a pitfall runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The bug, on purpose.
    Leaky,
    /// The cure, built from the project's own building blocks.
    Fixed,
}

impl Variant {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Leaky => "leaky",
            Self::Fixed => "fixed",
        }
    }
}

/// Runs the leaky then the fixed variant of `pitfall`, each in its own fresh runtime.
pub fn run_pitfall(pitfall: Pitfall, config: &LabConfig) -> anyhow::Result<Vec<VariantReport>> {
    [Variant::Leaky, Variant::Fixed]
        .into_iter()
        .map(|variant| run_variant(pitfall, variant, config))
        .collect()
}

/// Runs one variant in a fresh multi-thread runtime with two workers, then drops the
/// runtime: whatever the leaky variant left running dies with it, so the lab itself
/// leaves nothing behind.
fn run_variant(
    pitfall: Pitfall,
    variant: Variant,
    config: &LabConfig,
) -> anyhow::Result<VariantReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(format!("leaklab-p{}-{}", pitfall as u8, variant.as_str()))
        .build()?;
    let report = runtime.block_on(async {
        match pitfall {
            Pitfall::DetachedLoop => p1_detached_loop::run(variant, config).await,
            Pitfall::SpawnPerRequest => p2_spawn_per_request::run(variant, config).await,
            Pitfall::DroppedDeadline => p3_dropped_deadline::run(variant, config).await,
            Pitfall::TimerPerTick => p4_timer_per_tick::run(variant, config).await,
            Pitfall::UnboundedWaiting => p5_unbounded_waiting::run(variant, config).await,
        }
    });
    // Leaked tasks are dropped here, not awaited: that is all a leaky service can do.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report
}
