//! An OTLP receiver for tests (feature `testing`): a real HTTP/protobuf or gRPC
//! endpoint that decodes the real OTLP protobufs (`opentelemetry-proto`) and keeps every
//! span it was sent, with its resource's `service.name`.
//!
//! Point a service at it in-process (`Config::otlp`) or as a child process
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, plus `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` for gRPC):
//!
//! ```no_run
//! # async fn run() {
//! let receiver = shop_telemetry::testing::OtlpReceiver::http().await;
//! // OTEL_EXPORTER_OTLP_ENDPOINT = receiver.base_url() for a child process
//! let spans = receiver.store().wait_for(|s| !s.is_empty(), std::time::Duration::from_secs(5)).await;
//! # let _ = spans; }
//! ```
//!
//! The server task lives in the receiver's own `JoinSet`: dropping the receiver stops it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::{net::TcpListener, task::JoinSet};

/// One exported span with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The `service.name` resource attribute of the batch the span came in.
    pub service: String,
    /// The span as decoded from the protobuf.
    pub span: Span,
}

impl Exported {
    /// The trace id, 32 lowercase hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    /// The span id, 16 lowercase hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    /// The parent span id (empty for a root).
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

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of `spans`, for assertion messages.
pub fn names(spans: &[Exported]) -> Vec<&str> {
    spans.iter().map(|s| s.span.name.as_str()).collect()
}

/// Every span received so far.
#[derive(Clone, Default, Debug)]
pub struct Store(Arc<Mutex<Vec<Exported>>>);

impl Store {
    fn push(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
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
                    received.push(Exported {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        self.0.lock().extend(received);
    }

    /// A copy of every span received so far.
    pub fn spans(&self) -> Vec<Exported> {
        self.0.lock().clone()
    }

    /// The first span named `name`; panics listing what was received if there is none.
    pub fn named(&self, name: &str) -> Exported {
        let spans = self.spans();
        spans
            .iter()
            .find(|s| s.span.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no span named {name:?} among {:?}", names(&spans)))
    }

    /// Polls until `done(spans)` holds or `timeout` passes; returns the spans either way.
    pub async fn wait_for(
        &self,
        done: impl Fn(&[Exported]) -> bool,
        timeout: Duration,
    ) -> Vec<Exported> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running receiver; dropping it stops the server.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    traces_path: &'static str,
    store: Store,
    _server: JoinSet<()>,
}

impl OtlpReceiver {
    /// An OTLP/HTTP (protobuf) receiver on 127.0.0.1, answering `POST /v1/traces`.
    pub async fn http() -> Self {
        async fn traces(State(store): State<Store>, body: Bytes) -> impl IntoResponse {
            match ExportTraceServiceRequest::decode(body) {
                Ok(request) => {
                    store.push(request);
                    let body = ExportTraceServiceResponse::default().encode_to_vec();
                    (
                        StatusCode::OK,
                        [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                        body,
                    )
                }
                Err(_) => (
                    StatusCode::BAD_REQUEST,
                    [(http::header::CONTENT_TYPE, "text/plain")],
                    b"not an ExportTraceServiceRequest".to_vec(),
                ),
            }
        }
        let store = Store::default();
        let app = Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(store.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut server = JoinSet::new();
        #[expect(
            clippy::disallowed_methods,
            reason = "test support: the receiver owns its JoinSet, so dropping it aborts the server"
        )]
        server.spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("OTLP/HTTP receiver");
        });
        Self {
            addr,
            traces_path: "/v1/traces",
            store,
            _server: server,
        }
    }

    /// An OTLP/gRPC receiver (tonic `TraceService`) on 127.0.0.1.
    pub async fn grpc() -> Self {
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
        let mut server = JoinSet::new();
        #[expect(
            clippy::disallowed_methods,
            reason = "test support: the receiver owns its JoinSet, so dropping it aborts the server"
        )]
        server.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("OTLP/gRPC receiver");
        });
        Self {
            addr,
            traces_path: "",
            store,
            _server: server,
        }
    }

    /// `http://127.0.0.1:<port>`: the value for `OTEL_EXPORTER_OTLP_ENDPOINT` (the SDK
    /// appends `/v1/traces` for HTTP).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full traces URL (`.../v1/traces` for HTTP), for an endpoint set in code.
    pub fn traces_url(&self) -> String {
        format!("http://{}{}", self.addr, self.traces_path)
    }

    /// The spans received.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The metric families of a `/metrics` body, parsed by a real Prometheus text-format
/// parser; panics (showing the text) if it is not valid exposition format.
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let scrape = prom_text_format_parser::Scrape::parse(text)
        .unwrap_or_else(|e| panic!("not Prometheus text ({e:?}):\n{text}"));
    scrape.metrics.into_iter().map(|m| m.name).collect()
}
