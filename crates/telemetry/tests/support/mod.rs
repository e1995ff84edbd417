//! Test harness: an OTLP receiver (HTTP/protobuf or gRPC) decoding the real protobufs,
//! a captured log writer, and a tiny axum app behind the telemetry layer.
//!
//! Every server runs in a `JoinSet` owned by the harness, so nothing outlives the test.

#![allow(dead_code)] // Each test uses part of the harness.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use prost::Message;
use serde_json::{Value, json};
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

/// One exported span with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct Exported {
    pub service: String,
    pub span: Span,
}

impl Exported {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// A string, int or bool attribute, rendered as a string.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                any_value::Value::IntValue(i) => Some(i.to_string()),
                any_value::Value::BoolValue(b) => Some(b.to_string()),
                other => Some(format!("{other:?}")),
            })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default, Debug)]
pub struct Store(Arc<Mutex<Vec<Exported>>>);

impl Store {
    fn push(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().expect("store lock");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(Exported {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    pub fn spans(&self) -> Vec<Exported> {
        self.0.lock().expect("store lock").clone()
    }

    pub fn named(&self, name: &str) -> Exported {
        let spans = self.spans();
        spans
            .iter()
            .find(|s| s.span.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no span named {name:?} among {:?}", names(&spans)))
    }
}

pub fn names(spans: &[Exported]) -> Vec<&str> {
    spans.iter().map(|s| s.span.name.as_str()).collect()
}

/// Keeps the servers of one test alive.
#[derive(Debug, Default)]
pub struct Harness {
    pub tasks: JoinSet<()>,
}

impl Harness {
    /// An OTLP/HTTP receiver; returns its traces URL (`.../v1/traces`) and its store.
    pub async fn http_receiver(&mut self) -> (String, Store) {
        async fn traces(State(store): State<Store>, body: Bytes) -> impl IntoResponse {
            match ExportTraceServiceRequest::decode(body) {
                Ok(request) => {
                    store.push(request);
                    let body = ExportTraceServiceResponse::default().encode_to_vec();
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        body,
                    )
                }
                Err(_) => (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "text/plain")],
                    b"not an ExportTraceServiceRequest".to_vec(),
                ),
            }
        }
        let store = Store::default();
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(store.clone());
        let addr = self.serve(app).await;
        (format!("http://{addr}/v1/traces"), store)
    }

    /// An OTLP/gRPC receiver (tonic `TraceService`); returns its endpoint and store.
    pub async fn grpc_receiver(&mut self) -> (String, Store) {
        #[derive(Debug)]
        struct Receiver(Store);

        #[tonic::async_trait]
        impl TraceService for Receiver {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                self.0.push(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }

        let store = Store::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(Receiver(store.clone()));
        self.tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("grpc receiver");
        });
        (format!("http://{addr}"), store)
    }

    /// Serves `app` on 127.0.0.1:0.
    pub async fn serve(&mut self, app: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
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
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("capture lock").clone()).expect("utf-8 logs")
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
