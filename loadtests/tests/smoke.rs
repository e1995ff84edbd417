//! The CI smoke run: the real `orders` and `gateway` binaries as processes on a fresh
//! database (one per test, from `#[sqlx::test]`) and a private events stream, then the
//! real `loadtest` binary for a few seconds of small load. It must exit 0 with the
//! correctness check passed; and pointed at the wrong stream, the check must fail.
//!
//! `loadtest` is this package's binary (cargo builds it for this test); `orders` and
//! `gateway` are the ones cargo built next to it (`target/<profile>/`):
//! `cargo nextest run --workspace` builds them; with `-p shop-loadtest`, run
//! `cargo build --bins` first.

use std::process::{Command, Output, Stdio};

use shop_testkit::{
    ChildGuard, database_url, free_port, redis_url, seed_orders, sibling_binary, wait_for_port,
};
use sqlx::PgPool;
use uuid::Uuid;

/// A running stack: orders, payments and the gateway, on this test's database and
/// streams.
struct Stack {
    gateway: String,
    database: String,
    stream: String,
    payment_stream: String,
    _orders: ChildGuard,
    _payments: ChildGuard,
    _gateway: ChildGuard,
}

/// Orders whose total is above this are declined: the run has paid and cancelled
/// orders (seeded prices are 1.25 to 6 EUR; orders have 1–3 lines of 1–2 units).
const DECLINE_ABOVE_CENTS: &str = "1500";

/// Seeds the database, then starts `orders serve`, `payments serve` and `gateway` on
/// free ports.
fn start_stack(pool: &PgPool) -> Stack {
    let database = database_url(pool);
    let unique = Uuid::new_v4().simple().to_string();
    let stream = format!("test:loadtest:{unique}:events");
    let payment_stream = format!("test:loadtest:{unique}:payments");
    let orders = sibling_binary("orders");
    seed_orders(
        &database,
        &["--products", "20", "--users", "4", "--stock", "1000"],
    );

    let orders_port = free_port();
    let orders_process = Command::new(&orders)
        .arg("serve")
        .env("DATABASE_URL", &database)
        .env("REDIS_URL", redis_url())
        .env("ORDERS_ADDR", format!("127.0.0.1:{orders_port}"))
        .env("ORDERS_MIGRATE_ON_START", "false")
        .env("EVENTS_STREAM", &stream)
        .env("PAYMENT_EVENTS_STREAM", &payment_stream)
        .env(
            "CACHE_REDIS_PREFIX",
            format!("test:loadtest:{unique}:cache"),
        )
        .env(
            "CACHE_INVALIDATION_CHANNEL",
            format!("test:loadtest:{unique}:invalidations"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("orders starts");
    let orders_guard = ChildGuard::new(orders_process);
    wait_for_port(orders_port);

    let payments_port = free_port();
    let payments_process = Command::new(sibling_binary("payments"))
        .arg("serve")
        .env("DATABASE_URL", &database)
        .env("REDIS_URL", redis_url())
        .env("PAYMENTS_ADDR", format!("127.0.0.1:{payments_port}"))
        .env("ORDER_EVENTS_STREAM", &stream)
        .env("EVENTS_STREAM", &payment_stream)
        .env("PAYMENTS_LATENCY", "0ms")
        .env("PAYMENTS_DECLINE_ABOVE_CENTS", DECLINE_ABOVE_CENTS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("payments starts");
    let payments_guard = ChildGuard::new(payments_process);
    wait_for_port(payments_port);

    let gateway_port = free_port();
    let gateway_process = Command::new(sibling_binary("gateway"))
        .arg("serve")
        .env("GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}"))
        .env("ORDERS_URL", format!("http://127.0.0.1:{orders_port}"))
        .env("DATABASE_URL", &database)
        .env("REDIS_URL", redis_url())
        .env("RATE_LIMIT_LOGIN", "100000/s")
        .env("RATE_LIMIT_ORDERS", "100000/s")
        .env("RATE_LIMIT_DEFAULT", "100000/s")
        .env(
            "RATE_LIMIT_REDIS_PREFIX",
            format!("test:loadtest:{unique}:rl:"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let gateway_guard = ChildGuard::new(gateway_process);
    wait_for_port(gateway_port);

    Stack {
        gateway: format!("http://127.0.0.1:{gateway_port}"),
        database,
        stream,
        payment_stream,
        _orders: orders_guard,
        _payments: payments_guard,
        _gateway: gateway_guard,
    }
}

/// Runs `loadtest` against `stack` for `duration`, checking against `stream`.
fn loadtest(stack: &Stack, duration: &str, stream: &str, report: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .env("LOADTEST_TARGET", &stack.gateway)
        .env("LOADTEST_USERS", "4")
        .env("LOADTEST_RAMP_UP", "1s")
        .env("LOADTEST_DURATION", duration)
        .env("LOADTEST_ACCOUNTS", "4")
        .env("LOADTEST_PRODUCTS", "20")
        .env("LOADTEST_REPLAY_PROBABILITY", "0.3")
        .env("LOADTEST_PROGRESS_INTERVAL", "2s")
        .env("LOADTEST_DRAIN_TIMEOUT", "20s")
        .env("LOADTEST_REPORT", report)
        .env("DATABASE_URL", &stack.database)
        .env("REDIS_URL", redis_url())
        .env("EVENTS_STREAM", stream)
        .env("PAYMENT_EVENTS_STREAM", &stack.payment_stream)
        .env("LOADTEST_SETTLE_TIMEOUT", "30s")
        .env("RUST_LOG", "warn")
        .output()
        .expect("loadtest runs")
}

/// A number printed after `label` in `text` (`orders placed: 123 ...`).
fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("`{label}` not in:\n{text}"));
    text[at + label.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in:\n{text}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_short_load_through_the_real_stack_places_orders_and_passes_the_correctness_check(
    pool: PgPool,
) {
    let stack = start_stack(&pool);
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html");

    let run = loadtest(&stack, "8s", &stack.stream, &report);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "loadtest failed ({:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        run.status
    );
    assert!(stdout.contains("correctness check: PASSED"), "{stdout}");
    // Settlement: every order paid or cancelled, declines among them.
    assert!(stdout.contains("every order settled after"), "{stdout}");
    assert!(
        stdout.contains("settlement latency p50 / p90 / p99 / max"),
        "{stdout}"
    );
    let settled: Vec<u64> = stdout
        .lines()
        .find(|l| l.contains("orders paid / cancelled"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        settled.len() == 2 && settled[0] > 0 && settled[1] > 0,
        "both paid and declined (cancelled) orders, stock conserved: {stdout}"
    );
    assert!(number_after(&stdout, "orders placed:") > 0, "{stdout}");
    assert!(
        number_after(&stdout, "replays verified (same order, header set)") > 0,
        "{stdout}"
    );
    assert!(stderr.contains("req/s"), "no progress line:\n{stderr}");
    let html = std::fs::read_to_string(&report).expect("the HTML report is written");
    assert!(html.contains("<html"), "not an HTML report");

    // The same stack, checked against a stream nobody publishes to: the events of the
    // orders placed are missing there, so the check must fail, naming them.
    let wrong = format!("{}:nobody-publishes-here", stack.stream);
    let run = loadtest(&stack, "3s", &wrong, &dir.join("second.html"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("correctness check: FAILED"), "{stdout}");
    assert!(
        stdout.contains("has no entry in the events stream"),
        "{stdout}"
    );

    let _ = std::fs::remove_dir_all(&dir);
    // The stream has no TTL: remove it (the cache and rate-limit keys expire).
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stack.stream)
        .arg(&stack.payment_stream)
        .query_async(&mut redis)
        .await
        .unwrap();
}
