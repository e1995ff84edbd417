//! Pitfall 2: fire-and-forget work spawned from a request handler.
//!
//! Workload: a real axum server on `127.0.0.1:0`, and real HTTP clients placing
//! orders that give up after 100 ms, in the middle of the request. The handler
//! records the order, has a receipt sent (the mail provider is stalled: 30 s), then
//! waits for the payment authorisation (500 ms), during which the client disconnects
//! and hyper drops the handler future. `iterations` requests at once, then two per
//! sample during the window.
//!
//! * leaky: the receipt is a `tokio::spawn` in the handler ("`go sendReceipt()`"):
//!   every request, finished or abandoned, leaves a task behind.
//! * fixed: request-scoped work stays in the handler future (dropped on disconnect),
//!   and the receipt, which must outlive the request, goes to the bounded tracked
//!   `WorkQueue`; when it is full the handler sheds load with 503 at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use shop_lifecycle::queue::WorkQueue;
use shop_lifecycle::{CancellationToken, Lifecycle};

use crate::probe::{Gauge, Probe, observe};
use crate::report::{Check, VariantReport};
use crate::{LabConfig, Pitfall, Variant};

/// The stalled mail provider.
const RECEIPT_TAKES: Duration = Duration::from_secs(30);
/// The payment authorisation, during which clients give up.
const AUTHORISATION_TAKES: Duration = Duration::from_millis(500);
/// How long a client waits before it disconnects.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(100);
const QUEUE_CAPACITY: usize = 8;
const QUEUE_CONCURRENCY: usize = 2;

#[derive(Clone)]
struct App {
    in_flight: Gauge,
    /// Receipts being sent or waiting to be (tasks in leaky, queue depth + in progress
    /// in fixed).
    receipts: Gauge,
    /// The fixed variant's queue of receipts; `None` in the leaky variant.
    queue: Option<WorkQueue<u64>>,
    next_order: Arc<AtomicUsize>,
}

/// Sends one receipt through the stalled mail provider.
async fn send_receipt(shutdown: CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(RECEIPT_TAKES) => {}
        () = shutdown.cancelled() => {}
    }
}

mod leaky {
    use super::*;

    /// `POST /orders`, fire-and-forget style.
    // This is the bug, on purpose: the receipt is spawned and forgotten, so it outlives
    // the request, abandoned or not, and one more piles up per request.
    pub(super) async fn place_order(State(app): State<App>) -> StatusCode {
        let _in_flight = app.in_flight.enter();
        app.next_order.fetch_add(1, Ordering::Relaxed);
        // The leaked task never hears about shutdown either: a fresh token nobody cancels.
        let receipts = app.receipts.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "the leaky variant: fire-and-forget from a handler, on purpose"
        )]
        drop(tokio::spawn(async move {
            let _pending = receipts.enter();
            send_receipt(CancellationToken::new()).await;
        }));
        tokio::time::sleep(AUTHORISATION_TAKES).await;
        StatusCode::CREATED
    }
}

/// `POST /orders`, the cure.
async fn place_order(State(app): State<App>) -> StatusCode {
    let _in_flight = app.in_flight.enter();
    let order = app.next_order.fetch_add(1, Ordering::Relaxed) as u64;
    if let Some(queue) = &app.queue {
        // Pending from submission until the queue's handler is done with it.
        app.receipts.add();
        if queue.try_submit(order).is_err() {
            app.receipts.sub();
            // Full (or shutting down): shed load now rather than pile up.
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    // Request-scoped: if the client goes, hyper drops this future, and the wait with it.
    tokio::time::sleep(AUTHORISATION_TAKES).await;
    StatusCode::CREATED
}

/// One client that gives up after [`CLIENT_TIMEOUT`]; returns the status, if any.
async fn client_request(client: &reqwest::Client, addr: SocketAddr) -> Option<u16> {
    client
        .post(format!("http://{addr}/orders"))
        .send()
        .await
        .ok()
        .map(|response| response.status().as_u16())
}

pub(super) async fn run(variant: Variant, config: &LabConfig) -> anyhow::Result<VariantReport> {
    let probe = Probe::default();
    let lifecycle = Lifecycle::new();
    let receipts = probe.waiters.clone();
    let shutdown = lifecycle.token();
    let queue = match variant {
        Variant::Leaky => None,
        Variant::Fixed => {
            let (receipts, shutdown) = (receipts.clone(), shutdown.clone());
            Some(WorkQueue::start(
                &lifecycle,
                "receipts",
                QUEUE_CAPACITY,
                QUEUE_CONCURRENCY,
                move |_order: u64| {
                    let (receipts, shutdown) = (receipts.clone(), shutdown.clone());
                    async move {
                        send_receipt(shutdown).await;
                        receipts.sub();
                    }
                },
            ))
        }
    };
    let app = App {
        in_flight: probe.in_flight.clone(),
        receipts: receipts.clone(),
        queue: queue.clone(),
        next_order: Arc::new(AtomicUsize::new(0)),
    };
    let route = match variant {
        Variant::Leaky => post(leaky::place_order),
        Variant::Fixed => post(place_order),
    };
    let router = axum::Router::new().route("/orders", route).with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = lifecycle.token();
    lifecycle.spawn_task("http_server", async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        // No idle connections kept: every request is its own connection, closed when
        // the client gives up, as a browser tab that is closed.
        .pool_max_idle_per_host(0)
        .build()?;
    // Let the server task start before the baseline is read.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let statuses = Arc::new(parking_lot::Mutex::new(Vec::<Option<u16>>::new()));
    let alive_before = shop_lifecycle::alive_tasks();
    let burst =
        futures::future::join_all((0..config.iterations).map(|_| client_request(&client, addr)))
            .await;
    statuses.lock().extend(burst);
    probe.wait_idle(Duration::from_secs(1)).await;
    let alive_after_workload = shop_lifecycle::alive_tasks();
    let detector = observe(&probe, &config.sampling, || {
        let (client, statuses) = (client.clone(), Arc::clone(&statuses));
        async move {
            let status = client_request(&client, addr).await;
            statuses.lock().push(status);
        }
    })
    .await;

    let mut report = VariantReport::new(
        Pitfall::SpawnPerRequest,
        variant,
        alive_before,
        alive_after_workload,
        &detector,
    );
    let statuses = std::mem::take(&mut *statuses.lock());
    let gave_up = statuses.iter().filter(|s| s.is_none()).count();
    let shed = statuses.iter().filter(|s| **s == Some(503)).count();
    report.notes.push(format!(
        "{} requests: {gave_up} clients disconnected mid-request, {shed} shed with 503",
        statuses.len()
    ));
    match variant {
        Variant::Leaky => report.notes.push(format!(
            "{} receipts still being sent by tasks nobody owns",
            receipts.get()
        )),
        Variant::Fixed => {
            let depth = queue.as_ref().map_or(0, WorkQueue::depth);
            report.checks.push(Check::new(
                format!(
                    "receipts pending = {} <= queue capacity + concurrency = {} (depth {depth})",
                    receipts.get(),
                    QUEUE_CAPACITY + QUEUE_CONCURRENCY
                ),
                receipts.get() <= QUEUE_CAPACITY + QUEUE_CONCURRENCY,
            ));
        }
    }
    let report_shutdown = lifecycle.shutdown(Duration::from_secs(1)).await;
    if variant == Variant::Fixed {
        report.checks.push(Check::new(
            format!(
                "shutdown clean (tracked after = {})",
                report_shutdown.tracked_after
            ),
            report_shutdown.is_clean(),
        ));
    }
    Ok(report)
}
