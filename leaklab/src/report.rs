//! What one variant of one pitfall showed, and the table `leaklab run` prints.

use std::fmt::Write as _;

use shop_lifecycle::leak::{LeakDetector, LeakVerdict};

use crate::pitfalls::{Pitfall, Variant};

/// The measurements and verdict of one variant of one pitfall.
#[derive(Clone, Debug)]
pub struct VariantReport {
    pub pitfall: Pitfall,
    pub variant: Variant,
    /// Alive tasks in the fresh runtime before the workload.
    pub alive_before: usize,
    /// Alive tasks right after the workload.
    pub alive_after_workload: usize,
    /// Alive tasks at the end of the observation window.
    pub alive_after_settle: usize,
    /// Waiters (pool acquires, row locks, queued items) at the end of the window.
    pub waiters: usize,
    /// Resident memory of the process at the end of the window.
    pub rss_bytes: u64,
    /// The shared detector's verdict over the window.
    pub verdict: LeakVerdict,
    /// The alive-task samples of the window, oldest first.
    pub window: Vec<usize>,
    /// Checks beside the verdict (e.g. "no half-written row"); all must hold for a
    /// fixed variant, and they describe the damage for a leaky one.
    pub checks: Vec<Check>,
    /// What else the scenario saw, in a few words.
    pub notes: Vec<String>,
}

/// A named fact a scenario checked, e.g. `half-written rows = 0`.
#[derive(Clone, Debug)]
pub struct Check {
    pub what: String,
    /// Whether the fact is the healthy one.
    pub healthy: bool,
}

impl Check {
    pub fn new(what: impl Into<String>, healthy: bool) -> Self {
        Self {
            what: what.into(),
            healthy,
        }
    }
}

impl VariantReport {
    /// Starts a report from the window's detector; checks and notes are added after.
    pub fn new(
        pitfall: Pitfall,
        variant: Variant,
        alive_before: usize,
        alive_after_workload: usize,
        detector: &LeakDetector,
    ) -> Self {
        let last = detector.samples().last().copied().unwrap_or_default();
        Self {
            pitfall,
            variant,
            alive_before,
            alive_after_workload,
            alive_after_settle: last.alive_tasks,
            waiters: last.waiters,
            rss_bytes: crate::probe::rss_bytes(),
            verdict: detector.verdict(),
            window: detector.samples().map(|s| s.alive_tasks).collect(),
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Whether the variant behaved as the lab expects: a leaky variant is detected
    /// `Leaking`; a fixed one is judged `Healthy` (not merely "not leaking") and passes
    /// every check.
    pub fn as_expected(&self) -> bool {
        match self.variant {
            Variant::Leaky => self.verdict.is_leaking(),
            Variant::Fixed => {
                self.verdict == LeakVerdict::Healthy && self.checks.iter().all(|c| c.healthy)
            }
        }
    }
}

fn verdict_text(verdict: &LeakVerdict) -> String {
    match verdict {
        LeakVerdict::Insufficient => "INSUFFICIENT".to_owned(),
        LeakVerdict::Healthy => "healthy".to_owned(),
        LeakVerdict::Leaking { signal, from, to } => format!("LEAKING {signal} {from}->{to}"),
    }
}

/// The table of `leaklab run`: one row per variant, then its checks and notes.
pub fn table(reports: &[VariantReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<6} {:>6} {:>8} {:>8} {:>7} {:>7}  {:<28} ok",
        "pitfall", "var", "before", "workload", "settled", "waiters", "rss MiB", "verdict"
    );
    for report in reports {
        let _ = writeln!(
            out,
            "{:<26} {:<6} {:>6} {:>8} {:>8} {:>7} {:>7.1}  {:<28} {}",
            report.pitfall.title(),
            report.variant.as_str(),
            report.alive_before,
            report.alive_after_workload,
            report.alive_after_settle,
            report.waiters,
            report.rss_bytes as f64 / (1024.0 * 1024.0),
            verdict_text(&report.verdict),
            if report.as_expected() { "yes" } else { "NO" },
        );
        let window: Vec<String> = report.window.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{:>35} alive tasks over the window: {}",
            "",
            window.join(" ")
        );
        for check in &report.checks {
            let mark = if check.healthy { "ok " } else { "BAD" };
            let _ = writeln!(out, "{:>35} {mark} {}", "", check.what);
        }
        for note in &report.notes {
            let _ = writeln!(out, "{:>35} {note}", "");
        }
    }
    out
}
