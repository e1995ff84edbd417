//! One trace across the three services: the client's trace runs through the gateway,
//! orders' placement and outbox publication, payments' processing, provider call and
//! publication, and orders' settlement, all exported to the test's OTLP receiver.

use std::{process::Command, process::Stdio, time::Duration};

use serde_json::json;
use shop_telemetry::testing::{Exported, OtlpReceiver};

use crate::harness::{
    Bench, ChildGuard, JSON_LOGS, LogFile, eventually, free_port, sibling_binary,
};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// OTel span kinds (opentelemetry-proto's `SpanKind`).
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

#[sqlx::test(migrations = "../../migrations")]
async fn one_trace_runs_from_the_gateway_through_orders_payments_and_back_to_the_settlement(
    pool: sqlx::PgPool,
) {
    let receiver = OtlpReceiver::http().await;
    let bench = Bench::new(&pool);
    shop_testkit::seed_orders(&bench.database_url, &["--products", "1", "--users", "1"]);
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    env.extend(JSON_LOGS.map(|(k, v)| (k, v.to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let orders_log = LogFile::new("orders");
    let orders = bench.orders(&env, orders_log.stdio()).await;
    let _payments = bench.payments(&env, Stdio::null()).await;
    let gateway_port = free_port();
    let _gateway = ChildGuard::new(
        Command::new(sibling_binary("gateway"))
            .env("GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}"))
            .env("ORDERS_URL", &orders.url)
            .env("DATABASE_URL", &bench.database_url)
            .env("REDIS_URL", &bench.redis_url)
            .env(
                "RATE_LIMIT_REDIS_PREFIX",
                format!("{}:rl:", bench.orders_stream),
            )
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("the gateway starts"),
    );
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    eventually(Duration::from_secs(30), "the gateway answers", async || {
        client
            .get(format!("{gateway}/healthz"))
            .send()
            .await
            .is_ok()
    })
    .await;
    let token: serde_json::Value = client
        .post(format!("{gateway}/v1/auth/token"))
        .json(&json!({ "email": "user1@shop.test", "password": "password1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product: uuid::Uuid = sqlx::query_scalar("select id from products limit 1")
        .fetch_one(&pool)
        .await
        .unwrap();

    let response = client
        .post(format!("{gateway}/v1/orders"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("idempotency-key", "trace-the-saga")
        .json(&json!({ "items": [{ "product_id": product, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let order: serde_json::Value = response.json().await.unwrap();
    let order_id: uuid::Uuid = order["id"].as_str().unwrap().parse().unwrap();
    bench.settled(&[order_id]).await;

    let (orders_stream, payments_stream) = (&bench.orders_stream, &bench.payments_stream);
    let expected: Vec<(&str, i32, String)> = vec![
        ("gateway", SERVER, "POST /v1/orders".into()),
        ("orders", SERVER, "POST /v1/orders".into()),
        ("orders", PRODUCER, format!("publish {orders_stream}")),
        ("payments", CONSUMER, format!("process {orders_stream}")),
        ("payments", CLIENT, "provider charge".into()),
        ("payments", PRODUCER, format!("publish {payments_stream}")),
        ("orders", CONSUMER, format!("process {payments_stream}")),
    ];
    let is = |s: &Exported, (service, kind, name): &(&str, i32, String)| {
        s.service == *service && s.span.kind == *kind && s.span.name == *name
    };
    let spans = receiver
        .store()
        .wait_for(
            |spans| {
                expected.iter().all(|want| {
                    spans
                        .iter()
                        .any(|s| s.trace_id() == CLIENT_TRACE && is(s, want))
                })
            },
            Duration::from_secs(30),
        )
        .await;
    for want in &expected {
        assert!(
            spans
                .iter()
                .any(|s| s.trace_id() == CLIENT_TRACE && is(s, want)),
            "no {want:?} span in trace {CLIENT_TRACE}; received: {:#?}",
            spans
                .iter()
                .map(|s| (
                    s.service.as_str(),
                    s.span.kind,
                    s.span.name.as_str(),
                    s.trace_id()
                ))
                .collect::<Vec<_>>()
        );
    }
    let process = spans
        .iter()
        .find(|s| s.trace_id() == CLIENT_TRACE && is(s, &expected[3]))
        .unwrap();
    assert_eq!(
        process.attr("messaging.consumer.group.name").as_deref(),
        Some("payments")
    );
    assert_eq!(process.attr("messaging.system").as_deref(), Some("redis"));
    let charge = spans
        .iter()
        .find(|s| s.trace_id() == CLIENT_TRACE && is(s, &expected[4]))
        .unwrap();
    assert_eq!(
        charge.parent_span_id(),
        process.span_id(),
        "the provider call is part of the processing"
    );
    assert_eq!(charge.attr("payment.outcome").as_deref(), Some("approved"));

    // The settlement's log line carries the trace id too.
    let settled = orders_log
        .lines()
        .into_iter()
        .find(|l| l["message"] == "order paid")
        .expect("orders logged the settlement");
    assert_eq!(settled["trace_id"], CLIENT_TRACE, "{settled}");
    bench.cleanup().await;
}
