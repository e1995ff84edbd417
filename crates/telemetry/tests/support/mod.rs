//! Test harness: OTLP receivers (`shop_telemetry::testing`), a captured log writer, and a tiny axum app behind the telemetry layer.
//!
//! Every server runs in a `JoinSet` owned by the harness, so nothing outlives the test.

#![allow(dead_code)] // Each test uses part of the harness.

use std::{io::Write, net::SocketAddr, sync::Arc};

use axum::{Json, Router, extract::Path, http::StatusCode, routing::get};
use parking_lot::Mutex;
use serde_json::{Value, json};
#[allow(unused_imports)] // Re-exported for the tests that need them.
pub use shop_telemetry::testing::{Exported, OtlpReceiver, Store, hex, names};
use tokio::{net::TcpListener, task::JoinSet};
use tracing::Instrument;

/// The client's span in every test: `00-{TRACE}-{PARENT}-01`.
pub const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

pub fn traceparent(sampled: bool) -> String {
    format!(
        "00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-{}",
        if sampled { "01" } else { "00" }
    )
}

/// Keeps the servers of one test alive.
#[derive(Debug, Default)]
pub struct Harness {
    pub tasks: JoinSet<()>,
    receivers: Vec<OtlpReceiver>,
}

impl Harness {
    /// An OTLP/HTTP receiver; returns its traces URL (`.../v1/traces`) and its store.
    pub async fn http_receiver(&mut self) -> (String, Store) {
        self.keep(OtlpReceiver::http().await, OtlpReceiver::traces_url)
    }

    /// An OTLP/gRPC receiver (tonic `TraceService`); returns its endpoint and store.
    pub async fn grpc_receiver(&mut self) -> (String, Store) {
        self.keep(OtlpReceiver::grpc().await, OtlpReceiver::base_url)
    }

    fn keep(
        &mut self,
        receiver: OtlpReceiver,
        url: fn(&OtlpReceiver) -> String,
    ) -> (String, Store) {
        let found = (url(&receiver), receiver.store().clone());
        self.receivers.push(receiver);
        found
    }

    /// Serves `app` on 127.0.0.1:0.
    pub async fn serve(&mut self, app: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        #[expect(
            clippy::disallowed_methods,
            reason = "test harness: the Harness owns the JoinSet, so the server ends with the test"
        )]
        self.tasks.spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        addr
    }
}

/// The app under test, behind `shop_telemetry::http::layer()`.
pub fn app() -> Router {
    Router::new()
        .route("/orders/{id}", get(get_order))
        .route("/slow", get(slow))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/hang", get(std::future::pending::<&'static str>))
        .route("/metrics", get(shop_telemetry::metrics::handler))
        .layer(shop_telemetry::http::layer())
}

async fn get_order(Path(id): Path<u64>) -> Json<Value> {
    tracing::info!(order_id = id, "loading order");
    let cache = shop_telemetry::db::cache_span("moka");
    async {
        async {}
            .instrument(shop_telemetry::db::redis_span("GET"))
            .await;
        shop_telemetry::db::record_cache_hit(&tracing::Span::current(), false);
    }
    .instrument(cache)
    .await;
    async { tracing::info!("querying orders") }
        .instrument(shop_telemetry::db::pg_span("SELECT", "SELECT orders"))
        .await;
    let mut outgoing = axum::http::HeaderMap::new();
    shop_telemetry::http::inject_context(&mut outgoing);
    Json(json!({
        "traceparent": outgoing.get("traceparent").and_then(|v| v.to_str().ok()),
        "id": id,
        "trace_id": shop_telemetry::current_trace_id(),
        "outbox_context": shop_telemetry::outbox::trace_context_json(),
    }))
}

async fn slow() -> &'static str {
    tracing::info!("filtered out by RUST_LOG=warn");
    tracing::warn!("slow request");
    "ok"
}

/// A log writer the test can read back.
#[derive(Clone, Debug, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).expect("utf-8 logs")
    }

    /// Every line, parsed as JSON (panics on a line that is not).
    pub fn json_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The first line whose message is `message`.
    pub fn line(&self, message: &str) -> Value {
        let lines = self.json_lines();
        lines
            .iter()
            .find(|l| l["message"] == message)
            .cloned()
            .unwrap_or_else(|| panic!("no log line {message:?} in {lines:#?}"))
    }
}

/// A configuration for tests: JSON logs at info, exporting to `endpoint` (if any) often.
pub fn config(endpoint: Option<(String, shop_telemetry::OtlpProtocol)>) -> shop_telemetry::Config {
    let mut config = shop_telemetry::Config::from_lookup("orders-test", |_| None);
    config.log_filter = "info".to_owned();
    config.export_interval = std::time::Duration::from_millis(100);
    config.otlp =
        endpoint.map(|(endpoint, protocol)| shop_telemetry::OtlpConfig { endpoint, protocol });
    config
}

/// GET `path` with optional extra headers.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ascii header")
        .to_owned()
}
