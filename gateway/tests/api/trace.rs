//! One trace across every hop, with real processes: the `gateway` and `orders` binaries
//! export to an OTLP/HTTP receiver started inside the test (`shop_telemetry::testing`,
//! decoding the real protobufs), and their JSON logs go to files the test reads back.

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use shop_telemetry::testing::{Exported, OtlpReceiver, names};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    first_product, login, spawn_gateway_process, spawn_orders_logging, terminate,
};

/// The client's own span: `traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01`.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
/// OTel span kinds (opentelemetry-proto's `SpanKind`).
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;

fn traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// A log file for one process, removed when dropped.
struct LogFile(PathBuf);

impl LogFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("shop-{name}-{}.log", Uuid::new_v4())))
    }
    fn stdio(&self) -> Stdio {
        std::fs::File::create(&self.0).expect("log file").into()
    }
    /// The JSON lines written so far whose `trace_id` is `trace`.
    fn lines_of_trace(&self, trace: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["trace_id"] == trace)
            .collect()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The environment both services get: export to `receiver`, JSON logs with the
/// telemetry layer's per-request line, a private events stream.
fn telemetry_env(
    receiver: &OtlpReceiver,
    stream: &str,
    schedule_delay_ms: &str,
) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info,shop_telemetry=debug".to_owned()),
        ("EVENTS_STREAM", stream.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Follows parent links from `span` and tells whether `ancestor` is on the way.
fn descends_from(span: &Exported, ancestor: &Exported, by_id: &HashMap<String, Exported>) -> bool {
    let mut current = span.parent_span_id();
    for _ in 0..64 {
        if current == ancestor.span_id() {
            return true;
        }
        match by_id.get(&current) {
            Some(parent) => current = parent.parent_span_id(),
            None => return false,
        }
    }
    false
}

#[sqlx::test(migrations = "../migrations")]
async fn one_trace_runs_from_the_client_through_gateway_orders_postgres_and_the_outbox_publication(
    pool: PgPool,
) {
    let receiver = OtlpReceiver::http().await;
    let stream = format!("test:{}:events", Uuid::new_v4());
    let env = telemetry_env(&receiver, &stream, "100");
    let (orders_log, gateway_log) = (LogFile::new("orders"), LogFile::new("gateway"));
    let (orders, _orders) = spawn_orders_logging(&pool, &as_refs(&env), orders_log.stdio());
    let (port, _gateway) =
        spawn_gateway_process(&pool, &orders, &as_refs(&env), gateway_log.stdio());
    let gateway = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let token = login(&client, &gateway, "user1@shop.test", "password1").await;

    let response = client
        .post(format!("{gateway}/v1/orders"))
        .bearer_auth(&token)
        .header("traceparent", traceparent())
        .header("idempotency-key", "trace-me")
        .json(&json!({ "items": [{ "product_id": first_product(&pool).await, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["x-trace-id"],
        CLIENT_TRACE,
        "the client's trace continues and is the one to paste into Jaeger"
    );

    let spans = receiver
        .store()
        .wait_for(
            |spans| {
                let of_trace = || spans.iter().filter(|s| s.trace_id() == CLIENT_TRACE);
                of_trace().any(|s| s.service == "gateway" && s.span.kind == SERVER)
                    && of_trace().any(|s| s.service == "orders" && s.span.kind == SERVER)
                    && of_trace().any(|s| s.span.kind == PRODUCER)
            },
            Duration::from_secs(15),
        )
        .await;
    let trace: Vec<Exported> = spans
        .iter()
        .filter(|s| s.trace_id() == CLIENT_TRACE)
        .cloned()
        .collect();
    let by_id: HashMap<String, Exported> = trace.iter().map(|s| (s.span_id(), s.clone())).collect();
    let find = |what: &str, pick: &dyn Fn(&Exported) -> bool| {
        trace.iter().find(|s| pick(s)).cloned().unwrap_or_else(|| {
            let all: Vec<_> = spans
                .iter()
                .map(|s| (s.service.as_str(), s.span.name.as_str(), s.trace_id()))
                .collect();
            panic!("no {what} span in the trace; received: {all:#?}")
        })
    };

    let gateway_server = find("gateway server", &|s| {
        s.service == "gateway" && s.span.kind == SERVER
    });
    assert_eq!(gateway_server.span.name, "POST /v1/orders");
    assert_eq!(
        gateway_server.parent_span_id(),
        CLIENT_SPAN,
        "the client's span is the root's parent"
    );
    let gateway_client = find("gateway client", &|s| {
        s.service == "gateway" && s.span.kind == CLIENT
    });
    assert_eq!(gateway_client.parent_span_id(), gateway_server.span_id());
    assert_eq!(
        gateway_client.attr("http.response.status_code").as_deref(),
        Some("201")
    );
    let orders_server = find("orders server", &|s| {
        s.service == "orders" && s.span.kind == SERVER
    });
    assert_eq!(orders_server.span.name, "POST /v1/orders");
    assert_eq!(
        orders_server.parent_span_id(),
        gateway_client.span_id(),
        "orders continues the gateway's client span"
    );
    let query = find("Postgres", &|s| {
        s.attr("db.system.name").as_deref() == Some("postgresql")
    });
    assert_eq!(query.service, "orders");
    assert!(descends_from(&query, &orders_server, &by_id));
    let publish = find("outbox publish", &|s| s.span.kind == PRODUCER);
    assert_eq!(publish.service, "orders");
    assert!(
        descends_from(&publish, &orders_server, &by_id),
        "the relay's publication is part of the order's trace"
    );
    assert_eq!(
        publish.span.links.len(),
        1,
        "and links to the placing request"
    );

    // The gateway's access log (on by default): one line for the order, from which a
    // person goes to the trace.
    let access: Vec<Value> = gateway_log
        .lines_of_trace(CLIENT_TRACE)
        .into_iter()
        .filter(|l| l["target"] == "access")
        .collect();
    assert_eq!(access.len(), 1, "one access line per request: {access:#?}");
    let line = &access[0];
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/v1/orders");
    assert_eq!(line["status"], 201);
    assert!(
        line["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    assert!(line["bytes"].as_u64().is_some_and(|b| b > 0), "{line}");
    assert_eq!(
        line["request_id"].as_str().map(str::len),
        Some(32),
        "{line}"
    );
    assert!(
        line["user_id"]
            .as_str()
            .is_some_and(|id| id.parse::<Uuid>().is_ok()),
        "{line}"
    );

    // Logs: both processes wrote lines carrying this trace id.
    for (service, log) in [("gateway", &gateway_log), ("orders", &orders_log)] {
        let lines = log.lines_of_trace(CLIENT_TRACE);
        assert!(
            !lines.is_empty(),
            "{service} logged nothing with trace_id {CLIENT_TRACE}"
        );
        assert!(
            lines.iter().all(|l| l["span_id"]
                .as_str()
                .is_some_and(|id| by_id.contains_key(id))),
            "{service}'s lines point at spans of the exported trace: {lines:#?}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn with_ratio_zero_sampling_only_a_sampled_parent_is_exported_and_sigterm_flushes_it(
    pool: PgPool,
) {
    let receiver = OtlpReceiver::http().await;
    let stream = format!("test:{}:events", Uuid::new_v4());
    // An export interval far beyond the test: only the shutdown flush can deliver.
    let mut env = telemetry_env(&receiver, &stream, "600000");
    env.push((
        "OTEL_TRACES_SAMPLER".into(),
        "parentbased_traceidratio".into(),
    ));
    env.push(("OTEL_TRACES_SAMPLER_ARG".into(), "0".into()));
    let (orders, mut orders_process) = spawn_orders_logging(&pool, &as_refs(&env), Stdio::null());
    let (port, mut gateway_process) =
        spawn_gateway_process(&pool, &orders, &as_refs(&env), Stdio::null());
    let client = reqwest::Client::new();
    let url = format!(
        "http://127.0.0.1:{port}/v1/products/{}",
        first_product(&pool).await
    );

    let unsampled = client.get(&url).send().await.unwrap();
    assert_eq!(unsampled.status(), 200);
    let unsampled_trace = unsampled.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let sampled = client
        .get(&url)
        .header("traceparent", traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(sampled.status(), 200);

    // Right after the request: SIGTERM both; the spans must still arrive.
    assert!(terminate(&mut gateway_process).await, "the gateway exits 0");
    assert!(terminate(&mut orders_process).await, "orders exits 0");
    let spans = receiver.store().spans();
    for service in ["gateway", "orders"] {
        assert!(
            spans.iter().any(|s| s.service == service
                && s.span.kind == SERVER
                && s.trace_id() == CLIENT_TRACE),
            "{service}'s span of the sampled request was flushed at exit: {:?}",
            names(&spans)
        );
    }
    assert!(
        spans.iter().all(|s| s.trace_id() != unsampled_trace),
        "nothing of the request without a parent is exported at ratio 0"
    );
    assert!(
        spans.iter().all(|s| s.trace_id() == CLIENT_TRACE),
        "only the sampled trace is exported: {:?}",
        names(&spans)
    );
}
