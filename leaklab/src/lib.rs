//! The leak lab: every pitfall of `docs/leaks.md`, leaky and fixed, side by side.
//!
//! Each of the five pitfalls has a *leaky* variant (the bug, written on purpose, in a
//! clearly marked `mod leaky`) and a *fixed* variant built from the project's real
//! building blocks (the [`shop_lifecycle::Lifecycle`] supervisor, its periodic jobs and
//! its bounded [`WorkQueue`](shop_lifecycle::queue::WorkQueue), and the bounded sqlx pool
//! of `shop-orders`). Both run the same workload, each in a fresh tokio runtime, and
//! both are judged by the same [`LeakDetector`](shop_lifecycle::leak::LeakDetector)
//! that the services' leak alarm uses: not a copy of its rule.
//!
//! How a verdict is reached (see [`probe::observe`]): after the workload, the lab takes
//! a window of samples of the alive-task count and of the waiters, one per sampling
//! period. Before each sample it makes the *background events* the pitfall is about
//! (a config reload, a trickle of requests whose clients give up), waits until no
//! request is in flight any more, and feeds the detector a sample whose `in_flight` is
//! the *measured* number of requests being served (0 unless something is stuck). That
//! is what the production alert sees on a nearly idle service: a leaky service climbs
//! with every event, a fixed one stays flat.

pub mod db;
pub mod pitfalls;
pub mod probe;
pub mod report;

pub use pitfalls::{Pitfall, Variant, run_pitfall};
pub use report::VariantReport;

use std::time::Duration;

/// Everything a run of the lab needs.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Size of the workload (requests, reloads or ticks) before the observation window.
    pub iterations: usize,
    /// The scratch database the pool pitfalls use (created and migrated if missing).
    pub database_url: String,
    /// How the detector's window is sampled.
    pub sampling: Sampling,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            iterations: 20,
            database_url: db::DEFAULT_DATABASE_URL.to_owned(),
            sampling: Sampling::default(),
        }
    }
}

/// How the observation window is sampled and judged.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Samples in the detector's window.
    pub window: usize,
    /// Growth over the window that the detector calls a leak.
    pub min_growth: usize,
    /// Time between two samples.
    pub every: Duration,
    /// Background events (requests, reloads) made before each sample.
    pub events_per_sample: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            window: 12,
            min_growth: 10,
            every: Duration::from_millis(80),
            events_per_sample: 2,
        }
    }
}
