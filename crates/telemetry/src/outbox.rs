//! Trace context carried by outbox rows, so an event's publication shows up in the
//! trace of the request that placed the order.
//!
//! When the order is placed, store [`trace_context_json`] in the outbox row (a `jsonb`
//! column): `{"traceparent": "...", "tracestate": "..."}`. When the relay publishes the
//! row, it wraps the publish in [`publish_span`].
//!
//! **Choice: child and link.** The publish span is a *child* of the stored context, so
//! Jaeger shows it inside the request's trace (the "see the whole request"), and
//! it also carries a *link* to that context, which is what OTel messaging conventions
//! expect of a publish span and what survives if a backend shows links only. A relay
//! that publishes many rows in one operation should instead create one span and call
//! [`link_from_json`] for each row (one trace cannot be the parent of a batch).

use std::collections::HashMap;

use opentelemetry::{Context, trace::Link, trace::TraceContextExt};
use serde_json::Value;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's propagation context as a JSON object of W3C headers
/// (`traceparent`, `tracestate`, `baggage` when present); `{}` outside any trace.
pub fn trace_context_json() -> Value {
    let cx = Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    Value::Object(
        carrier
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// The context stored by [`trace_context_json`]; empty if `value` holds none.
pub fn context_from_json(value: &Value) -> Context {
    let carrier: HashMap<String, String> = value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// A link to the span stored by [`trace_context_json`], if `value` holds a valid one.
pub fn link_from_json(value: &Value) -> Option<Link> {
    let cx = context_from_json(value);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| Link::with_context(sc))
}

/// The relay's span for publishing one outbox event: `otel.kind=producer`, a child of
/// the stored context and linked to it (see the module docs).
pub fn publish_span(destination: &str, stored_context: &Value) -> Span {
    let span = tracing::info_span!(
        "outbox publish",
        otel.name = %format!("publish {destination}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.operation.type = "send",
        messaging.destination.name = destination,
    );
    let cx = context_from_json(stored_context);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        let _ = span.set_parent(cx);
        span.add_link(sc);
    }
    span
}

/// The W3C headers an event entry carries (`traceparent`, `tracestate`), so that its
/// consumer continues the trace: those of `publish_span` when it is recorded (the
/// consumer's span then hangs under the publish), else those stored with the event.
pub fn entry_trace_headers(publish_span: &Span, stored_context: &Value) -> Vec<(String, String)> {
    let cx = publish_span.context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    } else if let Some(stored) = stored_context.as_object() {
        carrier.extend(
            stored
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))),
        );
    }
    let mut headers: Vec<(String, String)> = carrier
        .into_iter()
        .filter(|(k, _)| k == "traceparent" || k == "tracestate")
        .collect();
    headers.sort();
    headers
}

/// The consumer's span for processing one stream entry: `otel.kind=consumer`, OTel
/// messaging conventions, and a child of the trace the entry carries in its
/// `traceparent`/`tracestate` fields (`headers` looks a field up by name), so that one
/// trace shows the request, the publish and every consumer down the line.
pub fn process_span<'a>(
    destination: &str,
    group: &str,
    message_id: &str,
    attempt: u32,
    headers: impl Fn(&str) -> Option<&'a str>,
) -> Span {
    let span = tracing::info_span!(
        "stream process",
        otel.name = %format!("process {destination}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "redis",
        messaging.operation.type = "process",
        messaging.operation.name = "XREADGROUP",
        messaging.destination.name = destination,
        messaging.consumer.group.name = group,
        messaging.message.id = message_id,
        messaging.delivery.attempt = attempt,
    );
    let mut carrier: HashMap<String, String> = HashMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(value) = headers(key) {
            carrier.insert(key.to_owned(), value.to_owned());
        }
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        let _ = span.set_parent(cx);
    }
    span
}
