//! The end-of-run table: requests per second, p50/p90/p99/max per request type, and
//! the status codes, with 409 (insufficient stock) and 429 (rate limited) in columns of
//! their own, apart from the errors. Goose's HTML report has the charts.

use std::{collections::BTreeMap, time::Duration};

use goose::{metrics::GooseRequestMetricAggregate, prelude::GooseMetrics};

use crate::record::CounterValues;

/// The order of the rows: the user's journey.
const ROWS: [&str; 6] = ["login", "browse", "product", "order", "replay", "my_orders"];

/// The figures of one run that capacity mode compares.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Requests answered or failed.
    pub requests: usize,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Orders answered 201 per second.
    pub orders_per_sec: f64,
    /// Failed requests (not 2xx, not 409 insufficient-stock, not 429) / requests.
    pub error_rate: f64,
    /// p99 of `POST order`, in microseconds (0 without orders).
    pub order_p99_us: u64,
    /// p50 of `POST order`, in microseconds.
    pub order_p50_us: u64,
}

/// The figures of `metrics`, a run of `elapsed`.
pub fn summarize(metrics: &GooseMetrics, elapsed: Duration) -> Summary {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let requests: usize = metrics.requests.values().map(|r| r.raw_data.counter).sum();
    let failures: usize = metrics.requests.values().map(|r| r.fail_count).sum();
    let order = find(metrics, "order");
    let placed = order
        .and_then(|o| o.status_code_counts.get(&201).copied())
        .unwrap_or(0);
    Summary {
        elapsed,
        requests,
        requests_per_sec: requests as f64 / secs,
        orders_per_sec: placed as f64 / secs,
        error_rate: if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64
        },
        order_p99_us: order.map_or(0, |o| o.raw_data.percentile_us(0.99)),
        order_p50_us: order.map_or(0, |o| o.raw_data.percentile_us(0.50)),
    }
}

/// The aggregate of the request named `name`, whatever its method.
fn find<'m>(metrics: &'m GooseMetrics, name: &str) -> Option<&'m GooseRequestMetricAggregate> {
    metrics
        .requests
        .iter()
        .find(|(key, _)| key.rsplit(' ').next() == Some(name))
        .map(|(_, aggregate)| aggregate)
}

/// Milliseconds with one decimal, from microseconds.
fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// Prints the table of `metrics` (a run of `elapsed` with `users` users).
#[allow(clippy::print_stdout)] // the table is the program's output
pub fn print_table(
    metrics: &GooseMetrics,
    elapsed: Duration,
    users: usize,
    counters: &CounterValues,
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!();
    println!(
        "== load: {users} users, {:.1} s ({} requests)",
        secs,
        metrics
            .requests
            .values()
            .map(|r| r.raw_data.counter)
            .sum::<usize>()
    );
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
        "request",
        "count",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "2xx",
        "409",
        "429",
        "errors"
    );
    let mut rows: Vec<(&String, &GooseRequestMetricAggregate)> = metrics.requests.iter().collect();
    rows.sort_by_key(|(key, _)| {
        let name = key.rsplit(' ').next().unwrap_or(key);
        (
            ROWS.iter().position(|r| *r == name).unwrap_or(ROWS.len()),
            key.to_string(),
        )
    });
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut total = (0usize, 0usize, 0usize, 0usize, 0usize);
    for (key, r) in rows {
        let count = r.raw_data.counter;
        let of = |range: std::ops::RangeInclusive<u16>| -> usize {
            r.status_code_counts
                .iter()
                .filter(|(code, _)| range.contains(code))
                .map(|(_, n)| n)
                .sum()
        };
        let (ok, conflict, limited) = (of(200..=299), of(409..=409), of(429..=429));
        for (code, n) in &r.status_code_counts {
            *statuses.entry(*code).or_default() += n;
        }
        total = (
            total.0 + count,
            total.1 + ok,
            total.2 + conflict,
            total.3 + limited,
            total.4 + r.fail_count,
        );
        let name = key.rsplit(' ').next().unwrap_or(key);
        println!(
            "{:<12} {:>8} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
            name,
            count,
            count as f64 / secs,
            ms(r.raw_data.percentile_us(0.50)),
            ms(r.raw_data.percentile_us(0.90)),
            ms(r.raw_data.percentile_us(0.99)),
            ms(r.raw_data.maximum_time_us),
            ok,
            conflict,
            limited,
            r.fail_count,
        );
    }
    println!(
        "{:<12} {:>8} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
        "total",
        total.0,
        total.0 as f64 / secs,
        "",
        "",
        "",
        "",
        total.1,
        total.2,
        total.3,
        total.4
    );
    let codes: Vec<String> = statuses
        .iter()
        .map(|(code, n)| match code {
            0 => format!("no answer: {n}"),
            _ => format!("{code}: {n}"),
        })
        .collect();
    println!("status codes: {}", codes.join(", "));
    println!(
        "orders placed: {} ({:.1}/s) | 409 insufficient stock: {} | 429 rate limited: {} | errors: {} | replays: {}",
        counters.placed,
        counters.placed as f64 / secs,
        counters.out_of_stock,
        counters.rate_limited,
        counters.errors,
        counters.replays,
    );
}
