//! The live leak demo (docs/leaks.md, "Watching a leak in the running stack"): refused
//! without `LEAK_DEMO=1`; with it, a bounded window in which `GET /v1/products/{id}`
//! leaks one detached task per request (pitfall 2), caught by the leak alarm, and a
//! service that comes back to its baseline once the window and the tasks' lifetime are
//! over.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_lifecycle::leak::LeakVerdict;
use shop_orders::{Config, jobs::metrics_sampler, leak_alarm};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

const ADMIN: &str = "/admin/leak-demo";

/// The test config with the demo allowed. The sampler job samples once at start and
/// then not for an hour: the tests feed the leak alarm themselves, through the same
/// `metrics_sampler::run`, at moments when no request is in flight.
fn demo_config(task_lifetime: Duration) -> Config {
    let mut config = test_config();
    config.leak_demo = true;
    config.leak_demo_task_lifetime = task_lifetime;
    config.leak_demo_max_duration = Duration::from_secs(60);
    config.server.metrics_sample_interval = Duration::from_secs(3600);
    config
}

async fn get_product(app: &TestApp, id: Uuid) {
    let response = app
        .client
        .get(app.url(&format!("/v1/products/{id}")))
        .send()
        .await
        .expect("the request is sent");
    assert_eq!(response.status(), StatusCode::OK);
    // Read to the end: the request is over, for the client and for the server.
    response.bytes().await.unwrap();
}

async fn admin(app: &TestApp, method: reqwest::Method, body: Option<Value>) -> reqwest::Response {
    let request = app.client.request(method, app.url(ADMIN));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.expect("the request is sent")
}

async fn start(app: &TestApp, duration_secs: u64) -> reqwest::Response {
    admin(
        app,
        reqwest::Method::POST,
        Some(json!({ "pitfall": "spawn-per-request", "duration_secs": duration_secs })),
    )
    .await
}

async fn status(app: &TestApp) -> Value {
    let response = admin(app, reqwest::Method::GET, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// One sample of the metrics sampler job, now.
async fn sample(app: &TestApp) {
    metrics_sampler::run(app.state.clone())
        .await
        .expect("the sampler runs");
}

/// The value of an unlabelled series in the Prometheus text of `GET /metrics`.
async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[sqlx::test(migrations = "../../migrations")]
async fn without_leak_demo_the_admin_route_is_refused_and_product_reads_spawn_nothing(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    assert!(!app.state.config.leak_demo, "off by default");
    for (method, body) in [
        (reqwest::Method::GET, None),
        (
            reqwest::Method::POST,
            Some(json!({ "pitfall": "spawn-per-request", "duration_secs": 10 })),
        ),
        (
            reqwest::Method::POST,
            Some(json!({ "pitfall": "nonsense" })),
        ),
        (reqwest::Method::DELETE, None),
    ] {
        let response = admin(&app, method.clone(), body).await;
        let problem = assert_problem(response, StatusCode::FORBIDDEN, "leak-demo-disabled").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("LEAK_DEMO=1"),
            "{method}: {problem}"
        );
    }

    let product = create_product(&db, 10).await;
    // Warm up: the first reads open the Redis and Postgres connections for good.
    for _ in 0..5 {
        get_product(&app, product).await;
    }
    let baseline = shop_lifecycle::alive_tasks();
    const N: usize = 50;
    for _ in 0..N {
        get_product(&app, product).await;
    }
    assert!(!app.state.leak_demo.is_active());
    assert_eq!(app.state.leak_demo.tasks_alive(), 0);
    let after = shop_lifecycle::alive_tasks();
    assert!(
        after < baseline + 10,
        "{N} reads left tasks behind: {baseline} -> {after}"
    );
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_leak_demo_leaks_a_task_per_product_read_raises_the_leak_alarm_and_the_service_recovers(
    db: PgPool,
) {
    // Each leaked task lives 4 s: long enough for the sampling below (well under a
    // second) to see every one of them alive, short enough for a quick recovery.
    let app = TestApp::spawn_with(&db, demo_config(Duration::from_secs(4))).await;
    let product = create_product(&db, 10).await;
    for _ in 0..5 {
        get_product(&app, product).await;
    }
    // Fill the alarm's window with quiet samples of the idle service.
    for _ in 0..leak_alarm::WINDOW {
        sample(&app).await;
    }
    assert_eq!(app.state.leak_alarm.verdict(), LeakVerdict::Healthy);
    assert!(!app.state.leak_alarm.is_raised());
    let baseline = shop_lifecycle::alive_tasks();

    let response = start(&app, 30).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["active"], true, "{started}");
    assert_eq!(started["window"]["pitfall"], "spawn-per-request");
    // The window's own job (supervised) is one task; the leaked ones come next.
    let baseline = baseline + 1;

    // A trickle of reads between quiet samples: the shape of the production alert
    // (tasks growing while almost nothing comes in).
    const PER_ROUND: usize = 3;
    let rounds = leak_alarm::WINDOW;
    for _ in 0..rounds {
        for _ in 0..PER_ROUND {
            get_product(&app, product).await;
        }
        sample(&app).await;
    }
    let n = rounds * PER_ROUND;
    let peak = shop_lifecycle::alive_tasks();
    // About: the runtime's other tasks (pool connections, the client's keep-alive
    // connections) come and go by a few meanwhile; the exact count is the next line's.
    assert!(
        peak + 8 >= baseline + n && peak <= baseline + n + 8,
        "{n} reads should leave about {n} tasks: baseline {baseline}, peak {peak}"
    );
    assert_eq!(app.state.leak_demo.tasks_alive(), n);
    match app.state.leak_alarm.verdict() {
        LeakVerdict::Leaking { signal, from, to } => {
            assert_eq!(signal, "alive_tasks");
            assert!(to - from >= (rounds - 1) * PER_ROUND - 2, "{from} -> {to}");
        }
        other => panic!("the leak alarm did not see the leak: {other:?}"),
    }
    assert!(app.state.leak_alarm.is_raised());
    assert_eq!(metric(&app, "shop_leak_suspected").await, Some(1.0));
    assert_eq!(metric(&app, "shop_leak_demo_active").await, Some(1.0));
    assert_eq!(
        metric(&app, "shop_leak_demo_tasks_leaked_total").await,
        Some(n as f64)
    );
    assert_eq!(
        metric(&app, "shop_leak_demo_tasks_alive").await,
        Some(n as f64)
    );
    assert!(
        metric(&app, "tokio_alive_tasks").await >= Some((baseline + n - 8) as f64),
        "the runtime gauge shows the leak"
    );
    let during = status(&app).await;
    assert_eq!(during["window"]["tasks_leaked"], n, "{during}");
    assert_eq!(during["leak_suspected"], true, "{during}");

    // End the window early: reads stop leaking at once.
    let response = admin(&app, reqwest::Method::DELETE, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ended: Value = response.json().await.unwrap();
    assert_eq!(ended["active"], false, "{ended}");
    assert_eq!(ended["window"]["ended_by"], "request", "{ended}");
    assert_eq!(ended["window"]["tasks_leaked"], n, "{ended}");
    for _ in 0..10 {
        get_product(&app, product).await;
    }
    assert_eq!(status(&app).await["tasks_leaked_total"], n);
    assert_eq!(metric(&app, "shop_leak_demo_active").await, Some(0.0));

    // The leaked tasks end when their lifetime is over; the service is back to its
    // baseline (less the window's job, which ended with the window).
    eventually(
        Duration::from_secs(30),
        "every leaked task has ended",
        || async { app.state.leak_demo.tasks_alive() == 0 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "alive tasks are back to their baseline",
        || async { shop_lifecycle::alive_tasks() < baseline + 2 },
    )
    .await;
    // A full quiet window without growth clears the alarm.
    for _ in 0..leak_alarm::WINDOW {
        sample(&app).await;
    }
    assert_eq!(app.state.leak_alarm.verdict(), LeakVerdict::Healthy);
    assert!(!app.state.leak_alarm.is_raised());
    assert_eq!(metric(&app, "shop_leak_suspected").await, Some(0.0));
    assert_eq!(metric(&app, "shop_leak_demo_tasks_alive").await, Some(0.0));

    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn leak_demo_requests_are_validated_and_a_second_window_is_refused_until_the_first_has_elapsed(
    db: PgPool,
) {
    let app = TestApp::spawn_with(&db, demo_config(Duration::from_millis(200))).await;
    let post = |body: Value| admin(&app, reqwest::Method::POST, Some(body));

    for (body, slug) in [
        (
            json!({ "pitfall": "spawn-per-tick", "duration_secs": 10 }),
            "invalid-leak-demo",
        ),
        (
            json!({ "pitfall": "spawn-per-request", "duration_secs": 0 }),
            "invalid-leak-demo",
        ),
        (
            json!({ "pitfall": "spawn-per-request", "duration_secs": 61 }),
            "invalid-leak-demo",
        ),
        (
            json!({ "pitfall": "spawn-per-request", "duration_secs": -5 }),
            "invalid-body",
        ),
        (json!({ "pitfall": "spawn-per-request" }), "invalid-body"),
        (
            json!({ "pitfall": "spawn-per-request", "duration_secs": 5, "extra": 1 }),
            "invalid-body",
        ),
    ] {
        let problem = assert_problem(
            post(body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            slug,
        )
        .await;
        assert!(problem["detail"].is_string(), "{body}: {problem}");
    }
    let malformed = app
        .client
        .post(app.url(ADMIN))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, StatusCode::BAD_REQUEST, "malformed-json").await;
    assert!(!app.state.leak_demo.is_active(), "nothing invalid started");

    assert_eq!(start(&app, 1).await.status(), StatusCode::ACCEPTED);
    let problem = assert_problem(
        start(&app, 5).await,
        StatusCode::CONFLICT,
        "leak-demo-active",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("DELETE"),
        "{problem}"
    );
    assert_eq!(status(&app).await["active"], true);

    // The window closes by itself; then a new one may start, and DELETE ends it.
    eventually(
        Duration::from_secs(15),
        "the 1 s window closes by itself",
        || async { status(&app).await["active"] == false },
    )
    .await;
    let ended = status(&app).await;
    assert_eq!(ended["window"]["ended_by"], "elapsed", "{ended}");
    assert_eq!(metric(&app, "shop_leak_demo_active").await, Some(0.0));

    assert_eq!(start(&app, 30).await.status(), StatusCode::ACCEPTED);
    for _ in 0..2 {
        // Idempotent: ending no window is not an error.
        let response = admin(&app, reqwest::Method::DELETE, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["active"], false, "{body}");
        assert_eq!(body["window"]["ended_by"], "request", "{body}");
    }
    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn shutdown_during_a_leak_demo_completes_and_reports_the_leaked_tasks_it_does_not_own(
    db: PgPool,
) {
    // Tasks that would live an hour: shutdown must not wait for them.
    let app = TestApp::spawn_with(&db, demo_config(Duration::from_secs(3600))).await;
    let product = create_product(&db, 10).await;
    assert_eq!(start(&app, 60).await.status(), StatusCode::ACCEPTED);
    for _ in 0..20 {
        get_product(&app, product).await;
    }
    let demo = app.state.leak_demo.clone();
    let lifecycle = app.state.lifecycle.clone();
    assert_eq!(demo.tasks_alive(), 20);

    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(lifecycle.tracked_tasks(), 0);
    assert!(
        report.alive_tasks_after >= 20,
        "the leaked tasks are alive but not the lifecycle's: {report:?}"
    );
    let state = demo.status_checked().unwrap();
    assert_eq!(state["active"], false, "{state}");
    assert_eq!(state["window"]["ended_by"], "shutdown", "{state}");
    // They end only with the runtime, when this test returns.
    assert_eq!(demo.tasks_alive(), 20);
}

/// What keeps `/admin` internal: the gateway proxies only the public `/v1` routes
/// (gateway/src/routes/proxy.rs); everything else is the gateway's own 404.
#[test]
fn the_gateway_proxies_only_v1_products_and_orders_so_admin_is_unreachable_through_it() {
    let proxy = include_str!("../../../../gateway/src/routes/proxy.rs");
    let routes: Vec<&str> = proxy
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!routes.is_empty());
    for route in routes {
        assert!(
            route.starts_with("/v1/products") || route.starts_with("/v1/orders"),
            "the gateway proxies {route}"
        );
    }
}
