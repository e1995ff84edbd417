//! End-to-end tests of shop-telemetry against a real OTLP receiver.
//!
//! `init_with` installs process globals (subscriber, propagator, tracer provider), so each
//! test that calls it must run in its own process: run these with `cargo nextest run`
//! (one process per test), not `cargo test`.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prom_text_format_parser::{Scrape, Type, ValueType};
use shop_telemetry::OtlpProtocol;
use support::*;
use tower::ServiceExt;

const ORDER_ROUTE_SPAN: &str = "GET /orders/{id}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_traceparent_continues_through_exported_spans_headers_and_log_lines() {
    let mut harness = Harness::default();
    let (endpoint, store) = harness.http_receiver().await;
    let logs = Capture::default();
    let guard = shop_telemetry::init_with(
        config(Some((endpoint, OtlpProtocol::HttpProtobuf))),
        logs.clone(),
    )
    .expect("init");
    let addr = harness.serve(app()).await;

    let response = get_with(
        addr,
        "/orders/7",
        &[
            ("traceparent", &traceparent(true)),
            ("x-request-id", "req-123"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-trace-id"), CLIENT_TRACE_ID);
    assert_eq!(header(&response, "x-request-id"), "req-123");
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(
        body["trace_id"], CLIENT_TRACE_ID,
        "current_trace_id() inside the handler"
    );

    guard.shutdown(); // Flushes the spans and the log lines.

    let server = store.named(ORDER_ROUTE_SPAN);
    assert_eq!(server.service, "orders-test");
    assert_eq!(server.trace_id(), CLIENT_TRACE_ID);
    assert_eq!(
        server.parent_span_id(),
        CLIENT_SPAN_ID,
        "the client's span is the parent"
    );
    assert_eq!(server.span.kind, SpanKind::Server as i32);
    assert_eq!(server.attr("http.route").as_deref(), Some("/orders/{id}"));
    assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(server.attr("url.path").as_deref(), Some("/orders/7"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );

    let query = store.named("SELECT orders");
    assert_eq!(query.trace_id(), CLIENT_TRACE_ID);
    assert_eq!(query.parent_span_id(), server.span_id());
    assert_eq!(query.span.kind, SpanKind::Client as i32);
    assert_eq!(query.attr("db.system.name").as_deref(), Some("postgresql"));
    assert_eq!(query.attr("db.operation.name").as_deref(), Some("SELECT"));
    assert_eq!(
        query.attr("db.query.summary").as_deref(),
        Some("SELECT orders")
    );

    let outgoing = format!("00-{CLIENT_TRACE_ID}-{}-01", server.span_id());
    assert_eq!(
        body["traceparent"], outgoing,
        "inject_context continues the trace"
    );

    let cache = store.named("cache lookup moka");
    assert_eq!(cache.parent_span_id(), server.span_id());
    assert_eq!(cache.attr("cache.layer").as_deref(), Some("moka"));
    assert_eq!(cache.attr("cache.hit").as_deref(), Some("false"));
    let redis = store.named("GET");
    assert_eq!(redis.parent_span_id(), cache.span_id());
    assert_eq!(redis.attr("db.system.name").as_deref(), Some("redis"));
    assert_eq!(redis.span.kind, SpanKind::Client as i32);

    let line = logs.line("loading order");
    assert_eq!(line["trace_id"], CLIENT_TRACE_ID);
    assert_eq!(line["span_id"], server.span_id());
    assert_eq!(line["order_id"], 7);
    assert_eq!(line["level"], "INFO");
    let line = logs.line("querying orders");
    assert_eq!(line["trace_id"], CLIENT_TRACE_ID);
    assert_eq!(line["span_id"], query.span_id());
    // Call spans (db, cache, HTTP client) are not tracked by the log layer: the line's
    // `span` is the enclosing request span, its `span_id` still the query's.
    assert_eq!(line["span"]["name"], "HTTP request");
    assert!(line["span"]["request_id"].is_string(), "{line}");
    let startup = logs.line("telemetry initialised");
    assert!(
        startup.get("trace_id").is_none(),
        "a line outside any span has no trace id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_receiver_and_server_errors_are_marked() {
    let mut harness = Harness::default();
    let (endpoint, store) = harness.grpc_receiver().await;
    let guard = shop_telemetry::init_with(
        config(Some((endpoint, OtlpProtocol::Grpc))),
        Capture::default(),
    )
    .expect("init");
    let addr = harness.serve(app()).await;

    let ok = get_with(addr, "/orders/1", &[("traceparent", &traceparent(true))]).await;
    assert_eq!(ok.status(), 200);
    let failed = get_with(addr, "/boom", &[]).await;
    assert_eq!(failed.status(), 500);
    let failed_trace = header(&failed, "x-trace-id");
    assert_eq!(failed_trace.len(), 32);
    assert!(failed_trace.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        header(&failed, "x-request-id").len(),
        32,
        "a generated request id"
    );

    guard.shutdown();

    let server = store.named(ORDER_ROUTE_SPAN);
    assert_eq!(server.trace_id(), CLIENT_TRACE_ID);
    assert_eq!(server.parent_span_id(), CLIENT_SPAN_ID);
    let boom = store.named("GET /boom");
    assert_eq!(
        boom.trace_id(),
        failed_trace,
        "x-trace-id names the exported trace"
    );
    assert!(
        boom.span.parent_span_id.is_empty(),
        "no traceparent: a root span"
    );
    let status = boom.span.status.clone().expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(
        boom.attr("http.response.status_code").as_deref(),
        Some("500")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ratio_zero_only_requests_with_a_sampled_parent_are_exported() {
    let mut harness = Harness::default();
    let (endpoint, store) = harness.http_receiver().await;
    let logs = Capture::default();
    let mut config = config(Some((endpoint, OtlpProtocol::HttpProtobuf)));
    config.sampler = shop_telemetry::SamplerConfig::ParentBasedTraceIdRatio(0.0);
    let guard = shop_telemetry::init_with(config, logs.clone()).expect("init");
    let addr = harness.serve(app()).await;

    let unsampled = get_with(addr, "/orders/1", &[]).await;
    let unsampled_trace = header(&unsampled, "x-trace-id");
    assert_ne!(unsampled_trace, CLIENT_TRACE_ID);
    unsampled.bytes().await.expect("body");
    let sampled = get_with(addr, "/orders/2", &[("traceparent", &traceparent(true))]).await;
    assert_eq!(header(&sampled, "x-trace-id"), CLIENT_TRACE_ID);
    sampled.bytes().await.expect("body");

    guard.shutdown();

    let spans = store.spans();
    assert!(
        !spans.is_empty(),
        "the sampled parent's request is exported"
    );
    assert!(
        spans.iter().all(|s| s.trace_id() == CLIENT_TRACE_ID),
        "the unsampled root request is not exported: {:?}",
        spans
            .iter()
            .map(|s| (s.span.name.as_str(), s.trace_id()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store.named(ORDER_ROUTE_SPAN).attr("url.path").as_deref(),
        Some("/orders/2")
    );

    // The dropped request still logs its (unexported) trace id: ids come from the context.
    let lines: Vec<_> = logs
        .json_lines()
        .into_iter()
        .filter(|l| l["message"] == "loading order")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["trace_id"], unsampled_trace.as_str());
    assert_eq!(lines[1]["trace_id"], CLIENT_TRACE_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_rust_log_still_traces_requests_and_puts_ids_on_warn_lines() {
    let mut harness = Harness::default();
    let (endpoint, store) = harness.http_receiver().await;
    let logs = Capture::default();
    let mut config = config(Some((endpoint, OtlpProtocol::HttpProtobuf)));
    config.log_filter = "warn".to_owned();
    let guard = shop_telemetry::init_with(config, logs.clone()).expect("init");
    let addr = harness.serve(app()).await;

    let response = get_with(addr, "/slow", &[("traceparent", &traceparent(true))]).await;
    assert_eq!(header(&response, "x-trace-id"), CLIENT_TRACE_ID);
    response.bytes().await.expect("body");

    guard.shutdown();

    let server = store.named("GET /slow");
    assert_eq!(server.parent_span_id(), CLIENT_SPAN_ID);
    let line = logs.line("slow request");
    assert_eq!(line["trace_id"], CLIENT_TRACE_ID);
    assert_eq!(line["span_id"], server.span_id());
    let lines = logs.json_lines();
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "INFO" || l["target"] == "shop_telemetry"),
        "RUST_LOG=warn still filters the service's own info lines: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_logs_are_text_that_names_the_request_trace_id() {
    let mut harness = Harness::default();
    let logs = Capture::default();
    let mut config = config(None);
    config.log_format = shop_telemetry::LogFormat::Pretty;
    let guard = shop_telemetry::init_with(config, logs.clone()).expect("init");
    let addr = harness.serve(app()).await;

    let response = get_with(addr, "/slow", &[("traceparent", &traceparent(true))]).await;
    response.bytes().await.expect("body");
    guard.shutdown();

    let text = logs.text();
    assert!(serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap_or("")).is_err());
    let at = text.find("slow request").expect("the warn line");
    assert!(
        text[at..].contains(&format!("trace_id: {CLIENT_TRACE_ID}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_but_headers_and_logs_carry_trace_ids() {
    let mut harness = Harness::default();
    let logs = Capture::default();
    let guard = shop_telemetry::init_with(config(None), logs.clone()).expect("init");
    let addr = harness.serve(app()).await;

    let continued = get_with(addr, "/orders/3", &[("traceparent", &traceparent(true))]).await;
    assert_eq!(header(&continued, "x-trace-id"), CLIENT_TRACE_ID);
    continued.bytes().await.expect("body");
    let root = get_with(addr, "/orders/4", &[]).await;
    let root_trace = header(&root, "x-trace-id");
    assert_eq!(root_trace.len(), 32);
    root.bytes().await.expect("body");

    guard.shutdown();

    let lines: Vec<_> = logs
        .json_lines()
        .into_iter()
        .filter(|l| l["message"] == "loading order")
        .collect();
    assert_eq!(lines[0]["trace_id"], CLIENT_TRACE_ID);
    assert_eq!(lines[1]["trace_id"], root_trace.as_str());
    assert!(
        lines
            .iter()
            .all(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_exporter_endpoint_leaves_requests_unaffected_and_drops_spans_beyond_the_queue() {
    let mut harness = Harness::default();
    let prometheus = shop_telemetry::metrics::install();
    // Port 1 on loopback refuses connections: every export fails.
    let mut config = config(Some((
        "http://127.0.0.1:1/v1/traces".to_owned(),
        OtlpProtocol::HttpProtobuf,
    )));
    config.span_queue_size = 4;
    config.export_interval = Duration::from_secs(60);
    let guard = shop_telemetry::init_with(config, Capture::default()).expect("init");
    let addr = harness.serve(app()).await;

    for i in 0..20 {
        let response = get_with(
            addr,
            &format!("/orders/{i}"),
            &[("traceparent", &traceparent(true))],
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-trace-id"), CLIENT_TRACE_ID);
    }
    // 20 requests × 2 spans against a queue of 4: at least 36 spans were dropped, counted.
    prometheus.run_upkeep();
    let scrape = parse_metrics(&prometheus.render());
    let dropped = value(&scrape, "otel_spans_dropped_total", &[]);
    assert!(dropped >= 36.0, "dropped {dropped}");

    guard.shutdown(); // Returns although the exporter cannot reach anything.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_publish_span_is_a_child_of_the_placing_request_and_links_to_it() {
    let mut harness = Harness::default();
    let (endpoint, store) = harness.http_receiver().await;
    let guard = shop_telemetry::init_with(
        config(Some((endpoint, OtlpProtocol::HttpProtobuf))),
        Capture::default(),
    )
    .expect("init");
    let addr = harness.serve(app()).await;

    let response = get_with(addr, "/orders/9", &[("traceparent", &traceparent(true))]).await;
    let body: serde_json::Value = response.json().await.expect("json body");
    let stored = body["outbox_context"].clone();
    assert!(
        stored["traceparent"]
            .as_str()
            .is_some_and(|t| t.contains(CLIENT_TRACE_ID))
    );
    let link = shop_telemetry::outbox::link_from_json(&stored).expect("a link");
    assert_eq!(link.span_context.trace_id().to_string(), CLIENT_TRACE_ID);
    assert!(shop_telemetry::outbox::link_from_json(&serde_json::json!({})).is_none());

    // Later, in the relay, outside any request.
    let publish = shop_telemetry::outbox::publish_span("orders.placed", &stored);
    publish.in_scope(|| tracing::info!("published"));
    drop(publish);

    guard.shutdown();

    let server = store.named(ORDER_ROUTE_SPAN);
    let publish = store.named("publish orders.placed");
    assert_eq!(publish.trace_id(), CLIENT_TRACE_ID);
    assert_eq!(publish.parent_span_id(), server.span_id());
    assert_eq!(publish.span.kind, SpanKind::Producer as i32);
    assert_eq!(publish.span.links.len(), 1);
    assert_eq!(hex(&publish.span.links[0].span_id), server.span_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_requests_by_route_method_and_status() {
    let mut harness = Harness::default();
    let _prometheus = shop_telemetry::metrics::install();
    let app = app();
    let addr = harness.serve(app.clone()).await;

    for path in ["/orders/1", "/orders/2", "/boom", "/no/such/route"] {
        get_with(addr, path, &[]).await.bytes().await.expect("body");
    }
    // A request whose future is dropped (client gone, timeout) leaves the in-flight gauge.
    let hang = axum::http::Request::get("/hang")
        .body(axum::body::Body::empty())
        .expect("req");
    let timed_out = tokio::time::timeout(Duration::from_millis(50), app.oneshot(hang)).await;
    assert!(timed_out.is_err());
    shop_telemetry::runtime::sample();

    let text = get_with(addr, "/metrics", &[])
        .await
        .text()
        .await
        .expect("metrics body");
    let scrape = parse_metrics(&text);
    let ok = [
        ("route", "/orders/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(value(&scrape, "http_requests_total", &ok), 2.0);
    let boom = [("route", "/boom"), ("method", "GET"), ("status", "500")];
    assert_eq!(value(&scrape, "http_requests_total", &boom), 1.0);
    let unmatched = [("route", "unmatched"), ("method", "GET"), ("status", "404")];
    assert_eq!(value(&scrape, "http_requests_total", &unmatched), 1.0);
    assert_eq!(
        value(&scrape, "http_requests_in_flight", &[("route", "/hang")]),
        0.0
    );
    let duration = scrape
        .metrics
        .iter()
        .find(|m| m.name == "http_request_duration_seconds")
        .expect("duration metric");
    assert_eq!(duration.kind, Type::Histogram);
    let count = sample(
        &scrape,
        "http_request_duration_seconds",
        ValueType::Count,
        &[("route", "/orders/{id}")],
    );
    assert_eq!(count, 2.0, "both /orders requests are observed");
    let inf = [("route", "/orders/{id}"), ("le", "+Inf")];
    assert_eq!(
        sample(
            &scrape,
            "http_request_duration_seconds",
            ValueType::Sample,
            &inf
        ),
        2.0
    );
    for gauge in [
        "process_open_fds",
        "process_resident_memory_bytes",
        "tokio_alive_tasks",
    ] {
        assert!(value(&scrape, gauge, &[]) > 0.0, "{gauge}");
    }
    assert!(value(&scrape, "tokio_workers", &[]) == 2.0);
    value(&scrape, "tokio_global_queue_depth", &[]);
}

#[test]
fn the_alert_rules_parse_and_cover_every_required_condition() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/alerts.yml"
    );
    let text = std::fs::read_to_string(path).expect("alerts.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let rules: Vec<&serde_yaml::Value> = doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(rule["expr"].as_str().is_some(), "{name}: expr");
        assert!(rule["for"].as_str().is_some(), "{name}: for");
        assert!(
            rule["labels"]["severity"].as_str().is_some(),
            "{name}: severity"
        );
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{name}: summary"
        );
    }
    let expr_of = |alert: &str| -> String {
        rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(alert))
            .and_then(|r| r["expr"].as_str())
            .unwrap_or_else(|| panic!("no alert {alert}"))
            .to_owned()
    };
    assert!(expr_of("TokioTasksGrowingWithoutTraffic").contains("tokio_alive_tasks"));
    assert!(expr_of("TokioTasksGrowingWithoutTraffic").contains("http_requests_total"));
    assert!(expr_of("PostgresPoolSaturated").contains("db_pool_max_connections"));
    assert!(expr_of("OutboxBacklogOld").contains("outbox_oldest_unpublished_age_seconds"));
    assert!(expr_of("GatewayCircuitBreakerOpen").contains("gateway_circuit_breaker_state"));
    assert!(expr_of("CacheDegraded").contains("cache_degraded"));

    // Where promtool is installed (`apt-get install prometheus`), it checks the PromQL and
    // runs the rule unit tests next to this file.
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alerts_test.yml");
    if let Ok(output) = std::process::Command::new("promtool")
        .args(["check", "rules", path])
        .output()
    {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        let output = std::process::Command::new("promtool")
            .args(["test", "rules", tests])
            .output()
            .expect("promtool");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn parse_metrics(text: &str) -> Scrape {
    Scrape::parse(text).unwrap_or_else(|e| panic!("not Prometheus text ({e:?}):\n{text}"))
}

/// The value of the counter or gauge `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(scrape, name, ValueType::Sample, labels)
}

/// The value of the sample of `name` of `value_type` whose labels include `labels`.
fn sample(scrape: &Scrape, name: &str, value_type: ValueType, labels: &[(&str, &str)]) -> f64 {
    scrape
        .metrics
        .iter()
        .filter(|m| m.name == name)
        .flat_map(|m| m.samples.iter())
        .find(|s| {
            s.value.value_type == value_type
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|l| l.key == *k && l.value == *v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {value_type:?} {labels:?}"))
        .value
        .value
        .as_f64()
}
