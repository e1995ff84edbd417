//! A task spawned inside a request must not keep the request's span open.
//!
//! tracing closes a span after its last child: if a long-lived task (a pooled upstream
//! connection, a background flush) were the child of the request that happened to spawn
//! it, that request's span would stay open, and unexported, for the task's whole life.

use std::sync::Arc;

use parking_lot::Mutex;
use shop_lifecycle::Lifecycle;
use tracing::{Subscriber, span};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// Records the names of closed spans.
#[derive(Clone, Default)]
struct Closed(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Closed {
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            self.0.lock().push(span.name().to_owned());
        }
    }
}

#[tokio::test]
async fn a_long_task_spawned_in_a_request_span_lets_the_request_span_close() {
    let closed = Closed::default();
    let _default = tracing_subscriber::registry()
        .with(closed.clone())
        .set_default();
    let lifecycle = Lifecycle::new();
    let token = lifecycle.child_token();

    let request = tracing::info_span!("request");
    let task = request.in_scope(|| {
        lifecycle.spawn_task("pooled_connection", async move {
            token.cancelled().await;
        })
    });
    drop(request);
    tokio::task::yield_now().await;
    assert_eq!(
        *closed.0.lock(),
        ["request"],
        "the request span closed while its task still runs"
    );

    lifecycle.token().cancel();
    task.await.unwrap();
    assert!(closed.0.lock().contains(&"task".to_owned()));
}

#[tokio::test]
async fn a_connection_task_is_tracked_like_any_task_but_its_span_is_debug() {
    let closed = Closed::default();
    let _default = tracing_subscriber::registry()
        .with(
            closed
                .clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .set_default();
    let lifecycle = Lifecycle::new();
    let token = lifecycle.child_token();
    let before = lifecycle.tracked_tasks();

    let request = tracing::info_span!("request");
    let task = request.in_scope(|| {
        lifecycle.spawn_connection_task("http_connection", async move {
            token.cancelled().await;
        })
    });
    assert_eq!(
        lifecycle.tracked_tasks(),
        before + 1,
        "counted like any task"
    );
    drop(request);

    let report = lifecycle.shutdown(std::time::Duration::from_secs(5)).await;
    assert!(report.is_clean(), "awaited at shutdown: {report:?}");
    assert!(task.is_finished());
    assert_eq!(
        *closed.0.lock(),
        ["request"],
        "at INFO, the connection task has no span of its own"
    );
}
