//! `loadtest`: the load generator of shop (see loadtests/README.md).
//!
//! [`run`] reads the catalog, snapshots the stack's state, drives the load with goose
//! ([`scenario`]: the virtual user; [`load`]: one run; [`capacity`]: the stepped runs),
//! prints the tables ([`report`]) and then checks against Postgres and the events
//! stream that nothing went wrong ([`check`]).

pub mod capacity;
pub mod check;
pub mod cli;
pub mod load;
pub mod record;
pub mod report;
pub mod scenario;
pub mod zipf;

use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{
    check::Checker,
    cli::{Action, Cli, Command, LogFormat},
    load::Shape,
    scenario::Shared,
};

/// Logs go to stderr (the tables go to stdout). Goose logs through the `log` crate,
/// whose records this subscriber picks up too; `RUST_LOG` filters both.
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,goose=warn,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
    // A second init (tests) leaves the first subscriber in place.
    let _ = match format {
        LogFormat::Pretty => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}

/// Runs the command of `cli`; `Ok(false)` when the correctness check found violations.
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    cli.load.validate().map_err(anyhow::Error::msg)?;
    let products = load::catalog(&cli.load).await?;
    tracing::info!(
        target = %cli.load.target,
        products = products.len(),
        users = cli.load.users,
        "catalog read"
    );
    let shared = Arc::new(Shared::new(&cli.load, products));

    let mut checker = None;
    let mut before = None;
    if cli.check.check {
        let mut connected = Checker::connect(&cli.check).await?;
        before = Some(
            connected
                .before()
                .await
                .context("snapshot before the load")?,
        );
        checker = Some(connected);
    }

    let progress = cli.output.progress_interval;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shape = Shape {
                users: cli.load.users,
                ramp_up: cli.load.ramp_up,
                duration: cli.load.requests.is_none().then_some(cli.load.duration),
                think_time: cli.load.think_time,
                report: Some(cli.output.report.clone()).filter(|r| !r.is_empty()),
            };
            let (metrics, elapsed) = load::execute(&shared, &cli.load, &shape, progress).await?;
            report::print_table(&metrics, elapsed, shape.users, &shared.recorder.values());
            if let Some(path) = &shape.report {
                tracing::info!(report = %path, "HTML report written");
            }
        }
        Command::Capacity(args) => {
            let capacity = capacity::run(&shared, &cli.load, &args, progress).await?;
            capacity.print(&args);
        }
    }

    let (Some(mut checker), Some(before)) = (checker, before) else {
        print_result(None);
        return Ok(true);
    };
    let mut verdict = checker
        .verify(&before, &shared.recorder)
        .await
        .context("correctness check")?;
    if cli.load.weights.of(Action::Order) > 0 && shared.recorder.values().placed == 0 {
        verdict
            .violations
            .push("no order was answered 201: the run proves nothing".into());
    }
    verdict.print();
    print_result(Some(verdict.passed()));
    Ok(verdict.passed())
}

#[allow(clippy::print_stdout)] // the result is the program's output
fn print_result(passed: Option<bool>) {
    match passed {
        None => println!("\ncorrectness check: skipped (LOADTEST_CHECK=false)"),
        Some(true) => println!("\ncorrectness check: PASSED"),
        Some(false) => println!("\ncorrectness check: FAILED"),
    }
}
