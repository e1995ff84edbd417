//! The OpenTelemetry tracer provider: sampler, resource, OTLP exporter and a bounded,
//! counted span queue.
//!
//! Spans leave request threads through the SDK's `BatchSpanProcessor`, which exports
//! from its own thread. In front of it, [`BoundedProcessor`] keeps a count of the spans
//! queued or being exported and drops (and counts, `otel_spans_dropped_total`) any span
//! beyond [`Config::span_queue_size`]: a dead collector costs a bounded amount of memory
//! and never blocks a request.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
        SpanExporter, SpanProcessor,
    },
};

use crate::config::{Config, OtlpConfig, OtlpProtocol, SamplerConfig};

/// Builds the provider for `config`, with the warnings to log once logging works (an
/// exporter that cannot be built leaves the service running without export).
pub(crate) fn build_provider(config: &Config) -> (SdkTracerProvider, Vec<String>) {
    let mut warnings = Vec::new();
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);

    let exporter = config
        .otlp
        .as_ref()
        .and_then(|otlp| match build_exporter(otlp) {
            Ok(exporter) => Some(exporter),
            Err(e) => {
                warnings.push(format!("OTLP exporter disabled: {e}"));
                None
            }
        });
    let provider = match exporter {
        Some(exporter) => {
            let queued = Arc::new(AtomicUsize::new(0));
            let capacity = config.span_queue_size;
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(capacity)
                .with_max_export_batch_size(capacity.min(512))
                .with_scheduled_delay(config.export_interval)
                .build();
            let processor = BatchSpanProcessor::builder(CountingExporter {
                inner: exporter,
                queued: queued.clone(),
            })
            .with_batch_config(batch)
            .build();
            builder
                .with_sampler(sampler(config.sampler))
                .with_span_processor(BoundedProcessor {
                    inner: processor,
                    queued,
                    capacity,
                })
                .build()
        }
        // No exporter: spans still get ids (for logs and `x-trace-id`), but roots are not
        // recorded. A sampled parent keeps its decision so that a hop without an exporter
        // still passes "sampled" on to the next hop, which may have one.
        None => builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build(),
    };
    (provider, warnings)
}

fn sampler(config: SamplerConfig) -> Sampler {
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

fn build_exporter(otlp: &OtlpConfig) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let exporter = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(otlp.endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()?,
        OtlpProtocol::Grpc => {
            // tonic's lazy channel spawns its connection task on the current runtime.
            anyhow::ensure!(
                tokio::runtime::Handle::try_current().is_ok(),
                "OTLP/gRPC needs a tokio runtime: call shop_telemetry::init inside the runtime"
            );
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(otlp.endpoint.clone())
                .with_timeout(Duration::from_secs(5))
                .build()?
        }
    };
    Ok(exporter)
}

/// Drops spans beyond `capacity` queued-or-exporting spans, counting them.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet through the exporter (see [`CountingExporter`]).
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("otel_spans_dropped_total").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts exported spans by outcome and releases their places in the queue.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        let export = self.inner.export(batch);
        let queued = self.queued.clone();
        async move {
            let result = export.await;
            queued.fetch_sub(n, Ordering::AcqRel);
            let outcome = if result.is_ok() { "success" } else { "failure" };
            metrics::counter!("otel_spans_exported_total", "outcome" => outcome)
                .increment(n as u64);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
