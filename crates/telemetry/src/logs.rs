//! The log layer: JSON lines (or pretty text) written through a bounded, lossy,
//! non-blocking writer, each line inside a span carrying the OpenTelemetry ids.
//!
//! JSON lines are built by `json-subscriber` (maintained by a tracing-opentelemetry
//! maintainer). Its own `with_opentelemetry_ids` nests the ids under `openTelemetry`;
//! we want `trace_id` and `span_id` at the top level of the line, so one dynamic field
//! asks tracing-opentelemetry for the span's context. That needs the dispatcher the
//! layers live in, which [`DispatchSlot`] captures when the subscriber is installed.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::{Dispatch, Subscriber, dispatcher::WeakDispatch, span};
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::{Layer, registry::LookupSpan};

/// Remembers (weakly) the dispatcher the subscriber was installed as.
#[derive(Clone, Debug, Default)]
pub(crate) struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl DispatchSlot {
    fn get(&self) -> Option<Dispatch> {
        self.0.get()?.upgrade()
    }
}

impl<S: Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// The OpenTelemetry trace and span ids of the tracing span `id`, as lowercase hex.
///
/// Valid also for spans the sampler dropped: the ids come from the span's context.
pub(crate) fn otel_ids(id: &span::Id, dispatch: &Dispatch) -> Option<(String, String)> {
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The JSON log layer. `slot` must be installed in the same subscriber, and not inside an
/// `Option` layer: `Option<L>` does not forward `on_register_dispatch`.
pub(crate) fn json_layer<S>(
    writer: NonBlocking,
    service_name: &str,
    slot: &DispatchSlot,
) -> json_subscriber::JsonLayer<S, NonBlocking>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let ids_slot = slot.clone();
    let mut layer = json_subscriber::JsonLayer::new(writer);
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_current_span("span");
    layer.add_static_field("service", serde_json::Value::from(service_name));
    layer.add_multiple_dynamic_fields(move |event, _ctx, fields| {
        let Some(dispatch) = ids_slot.get() else {
            return;
        };
        // The innermost span, also one this layer does not track (a call span, see
        // `CALL_SPAN_TARGET`): the layer's own context would skip to its parent.
        let id = if event.is_root() {
            return;
        } else if let Some(parent) = event.parent() {
            parent.clone()
        } else {
            match dispatch.current_span().id() {
                Some(id) => id.clone(),
                None => return,
            }
        };
        if let Some((trace_id, span_id)) = otel_ids(&id, &dispatch) {
            // A write error only drops the field; the line itself is still emitted.
            let _ = fields.write_field("trace_id", trace_id);
            let _ = fields.write_field("span_id", span_id);
        }
    });
    layer
}
