//! Running goose: the catalog the users order from, and one load of a given shape with
//! a progress line while it runs.
//!
//! Goose runs every virtual user on its own task; this module starts none itself (the
//! progress line is polled beside goose's future, in the same task).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use goose::{client::GooseClientBuilder, config::GooseConfiguration, prelude::*};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    cli::LoadArgs,
    record::{CounterValues, Recorder},
    scenario::{Shared, scenario},
};

/// The shape of one goose run.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Virtual users.
    pub users: usize,
    /// Time over which they start.
    pub ramp_up: Duration,
    /// How long the load runs, ramp-up included; `None`: until LOADTEST_REQUESTS.
    pub duration: Option<Duration>,
    /// Mean pause of a user between two requests.
    pub think_time: Duration,
    /// HTML report to write.
    pub report: Option<String>,
}

/// Checks that the target answers, then reads the first `count` products of the
/// catalog (by id, as the catalog pages them): the products the users order from.
pub async fn catalog(args: &LoadArgs) -> anyhow::Result<Vec<Uuid>> {
    let client = reqwest::Client::builder()
        .timeout(args.request_timeout)
        .build()
        .context("building the HTTP client")?;
    let base = args.target.trim_end_matches('/');
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .with_context(|| format!("the target {base} does not answer (LOADTEST_TARGET)"))?;
    anyhow::ensure!(
        health.status().is_success(),
        "{base}/healthz answered {}",
        health.status()
    );

    #[derive(Deserialize)]
    struct Item {
        id: Uuid,
    }
    #[derive(Deserialize)]
    struct Page {
        items: Vec<Item>,
        next_cursor: Option<String>,
    }
    let mut products = Vec::with_capacity(args.products);
    let mut cursor: Option<String> = None;
    while products.len() < args.products {
        let limit = (args.products - products.len()).min(100);
        let mut url = format!("{base}/v1/products?limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str("&cursor=");
            url.push_str(cursor);
        }
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {url} answered {}",
            response.status()
        );
        let page: Page = response
            .json()
            .await
            .with_context(|| format!("reading GET {url}"))?;
        products.extend(page.items.into_iter().map(|item| item.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    anyhow::ensure!(
        !products.is_empty(),
        "the catalog at {base} is empty: seed it first (`orders seed --products 100 --users 10`)"
    );
    if products.len() < args.products {
        tracing::warn!(
            wanted = args.products,
            found = products.len(),
            "the catalog has fewer products than LOADTEST_PRODUCTS; using them all"
        );
    }
    Ok(products)
}

/// Runs goose once with `shape`, printing a progress line every `progress` while it
/// runs; returns goose's metrics and the wall time of the run.
pub async fn execute(
    shared: &Arc<Shared>,
    args: &LoadArgs,
    shape: &Shape,
    progress: Duration,
) -> anyhow::Result<(GooseMetrics, Duration)> {
    shared.start_run();
    let ramp_secs = shape.ramp_up.as_secs_f64();
    // Users started per second; "all at once" is a rate no run notices.
    let rate = if ramp_secs > 0.0 {
        (shape.users as f64 / ramp_secs).max(0.01)
    } else {
        1000.0
    };
    let client = GooseClientBuilder::new()
        .without_cookies()
        .timeout(args.request_timeout)
        .gzip(false)
        .user_agent(concat!("shop-loadtest/", env!("CARGO_PKG_VERSION")));
    let mut attack = GooseAttack::initialize_with_config(GooseConfiguration::default())
        .context("initialising goose")?
        .register_scenario(scenario(shared, args.weights, shape.think_time)?)
        .set_client_builder_without_cookies(client)?
        .set_default(GooseDefault::Host, args.target.trim_end_matches('/'))?
        .set_default(GooseDefault::Users, shape.users)?
        .set_default(GooseDefault::IncreaseRate, format!("{rate:.3}").as_str())?
        // The tables and progress are this tool's own; goose keeps quiet.
        .set_default(GooseDefault::NoPrintMetrics, true)?
        .set_default(GooseDefault::NoTelnet, true)?
        // Count the ramp-up too, so that the totals match what the check sees.
        .set_default(GooseDefault::NoResetMetrics, true)?;
    if let Some(duration) = shape.duration {
        // Goose's run time starts once every user has started.
        let run = duration.saturating_sub(shape.ramp_up).as_secs().max(1);
        attack = attack.set_default(GooseDefault::RunTime, run as usize)?;
    }
    if let Some(report) = &shape.report {
        attack = attack.set_default(GooseDefault::ReportFile, report.as_str())?;
    }

    let started = Instant::now();
    // Goose's future is large (≈ 22 KiB): on the heap, not in every caller's.
    let mut run = Box::pin(attack.execute());
    let metrics = tokio::select! {
        metrics = &mut run => metrics.context("running the load")?,
        () = show_progress(&shared.recorder, progress, started) => unreachable!("progress never ends"),
    };
    Ok((metrics, started.elapsed()))
}

/// Prints one progress line every `interval`, forever (dropped when the run ends).
async fn show_progress(recorder: &Recorder, interval: Duration, started: Instant) {
    let mut last = recorder.values();
    let mut last_at = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let now = recorder.values();
        let secs = last_at.elapsed().as_secs_f64();
        last_at = Instant::now();
        eprintln!("{}", progress_line(started.elapsed(), &last, &now, secs));
        last = now;
    }
}

/// `[  10s] 1234 req/s | 456 orders/s | 409 stock 3 | 429 0 | errors 0 | logged in 16`.
fn progress_line(
    elapsed: Duration,
    last: &CounterValues,
    now: &CounterValues,
    secs: f64,
) -> String {
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs.max(1e-9);
    format!(
        "[{:>5.0}s] {:>7.0} req/s | {:>6.0} orders/s | 409 stock {:>6} | 429 {:>6} | errors {:>6} | replays {:>5} | logged in {}",
        elapsed.as_secs_f64(),
        rate(last.requests, now.requests),
        rate(last.placed, now.placed),
        now.out_of_stock,
        now.rate_limited,
        now.errors,
        now.replays,
        now.logins,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_rates_over_the_interval() {
        let last = CounterValues {
            requests: 100,
            placed: 10,
            ..Default::default()
        };
        let now = CounterValues {
            requests: 300,
            placed: 50,
            errors: 2,
            ..Default::default()
        };
        let line = progress_line(Duration::from_secs(10), &last, &now, 2.0);
        assert!(line.contains("100 req/s"), "{line}");
        assert!(line.contains("20 orders/s"), "{line}");
        assert!(line.contains("errors      2"), "{line}");
    }
}
