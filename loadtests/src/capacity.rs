//! Capacity mode: step the number of users up (start, ×factor, ... up to the maximum)
//! until order placement's p99 or the error rate crosses its threshold, and report the
//! highest sustainable rate: the most orders per second of a step within both
//! thresholds. Then one more step at about half that request rate measures the latency
//! a comfortably loaded stack gives: the same users, each pausing between requests as
//! long as a request took them in the best step, so that each sends half as often.
//! (Pacing the users, not goose's throttle: the throttle lets requests through in
//! bursts every 10 ms, and its queue is not in the latency.)

use std::{sync::Arc, time::Duration};

use crate::{
    cli::{CapacityArgs, LoadArgs},
    load::{self, Shape},
    report::{Summary, summarize},
    scenario::Shared,
};

/// One step and whether it was sustainable.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    /// Users of the step.
    pub users: usize,
    /// What the step measured.
    pub summary: Summary,
    /// Within both thresholds.
    pub sustainable: bool,
}

/// What capacity mode found.
#[derive(Clone, Debug)]
pub struct Capacity {
    /// Every step, in order.
    pub steps: Vec<StepResult>,
    /// The sustainable step with the most orders per second.
    pub best: Option<StepResult>,
    /// The step at half the best step's request rate.
    pub half: Option<StepResult>,
}

/// Runs the steps (see the module docs).
pub async fn run(
    shared: &Arc<Shared>,
    load: &LoadArgs,
    args: &CapacityArgs,
    progress: Duration,
) -> anyhow::Result<Capacity> {
    anyhow::ensure!(
        args.start_users >= 1,
        "LOADTEST_CAPACITY_START_USERS must be at least 1"
    );
    anyhow::ensure!(
        args.factor > 1.0,
        "LOADTEST_CAPACITY_FACTOR must be above 1"
    );
    let mut steps = Vec::new();
    let mut users = args.start_users.min(args.max_users.max(1));
    loop {
        let step = step(shared, load, args, users, load.think_time, progress).await?;
        print_step("step", &step, args);
        steps.push(step);
        if !step.sustainable || users >= args.max_users {
            break;
        }
        users = ((users as f64 * args.factor).round() as usize)
            .max(users + 1)
            .min(args.max_users);
    }
    let best = steps
        .iter()
        .filter(|s| s.sustainable)
        .max_by(|a, b| {
            a.summary
                .orders_per_sec
                .total_cmp(&b.summary.orders_per_sec)
        })
        .copied();
    let half = match best {
        Some(best) => {
            // A user's cycle in the best step was users / rate; pausing that long more
            // doubles it.
            let cycle = best.users as f64 / best.summary.requests_per_sec.max(1e-9);
            let think = load.think_time + Duration::from_secs_f64(cycle);
            let half = step(shared, load, args, best.users, think, progress).await?;
            print_step("half rate", &half, args);
            Some(half)
        }
        None => None,
    };
    Ok(Capacity { steps, best, half })
}

/// One step of `users` (all started at once), each pausing `think_time` on average.
async fn step(
    shared: &Arc<Shared>,
    load: &LoadArgs,
    args: &CapacityArgs,
    users: usize,
    think_time: Duration,
    progress: Duration,
) -> anyhow::Result<StepResult> {
    let shape = Shape {
        users,
        ramp_up: Duration::ZERO,
        duration: Some(args.step_duration),
        think_time,
        report: None,
    };
    let (metrics, elapsed) = load::execute(shared, load, &shape, progress).await?;
    let summary = summarize(&metrics, elapsed);
    let sustainable = summary.order_p99_us as u128 <= args.max_p99.as_micros()
        && summary.error_rate <= args.max_error_rate;
    Ok(StepResult {
        users,
        summary,
        sustainable,
    })
}

/// Logs one step as it ends.
fn print_step(what: &str, step: &StepResult, args: &CapacityArgs) {
    let s = &step.summary;
    let verdict = if step.sustainable {
        "sustainable".to_owned()
    } else {
        format!(
            "over a threshold (p99 <= {:?}, errors <= {:.2} %)",
            args.max_p99,
            args.max_error_rate * 100.0
        )
    };
    let line = format!(
        "{what}: {} users: {:.0} req/s, {:.0} orders/s, order p50 {:.1} ms p99 {:.1} ms, errors {:.2} % -> {verdict}",
        step.users,
        s.requests_per_sec,
        s.orders_per_sec,
        s.order_p50_us as f64 / 1000.0,
        s.order_p99_us as f64 / 1000.0,
        s.error_rate * 100.0,
    );
    tracing::info!("{line}");
}

impl Capacity {
    /// Prints every step and the result.
    #[allow(clippy::print_stdout)] // the result is the program's output
    pub fn print(&self, args: &CapacityArgs) {
        println!();
        println!(
            "== capacity: order p99 ≤ {:?}, errors ≤ {:.2} %, {:?} per step",
            args.max_p99,
            args.max_error_rate * 100.0,
            args.step_duration
        );
        println!(
            "{:>6} {:>9} {:>9} {:>8} {:>8} {:>8}  verdict",
            "users", "req/s", "orders/s", "p50 ms", "p99 ms", "errors"
        );
        let line = |label: String, step: &StepResult| {
            let s = &step.summary;
            println!(
                "{:>6} {:>9.0} {:>9.0} {:>8.1} {:>8.1} {:>7.2}%  {}",
                label,
                s.requests_per_sec,
                s.orders_per_sec,
                s.order_p50_us as f64 / 1000.0,
                s.order_p99_us as f64 / 1000.0,
                s.error_rate * 100.0,
                if step.sustainable { "ok" } else { "over" }
            );
        };
        for step in &self.steps {
            line(step.users.to_string(), step);
        }
        match (&self.best, &self.half) {
            (Some(best), half) => {
                println!(
                    "highest sustainable rate: {:.0} orders/s ({:.0} req/s) with {} users, order p99 {:.1} ms",
                    best.summary.orders_per_sec,
                    best.summary.requests_per_sec,
                    best.users,
                    best.summary.order_p99_us as f64 / 1000.0
                );
                if let Some(half) = half {
                    line(format!("½×{}", half.users), half);
                    println!(
                        "at half that rate ({:.0} req/s): order p99 {:.1} ms (issue target ≤ 10 ms)",
                        half.summary.requests_per_sec,
                        half.summary.order_p99_us as f64 / 1000.0
                    );
                }
            }
            (None, _) => println!("no step was sustainable: lower LOADTEST_CAPACITY_START_USERS"),
        }
    }
}
