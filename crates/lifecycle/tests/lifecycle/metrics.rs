//! What `record_metrics` exports: the numbers a leak alert is written against.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parking_lot::Mutex;
use shop_lifecycle::{Lifecycle, PeriodicConfig};

/// Gauge values by `name{label=value,...}`.
type Values = Arc<Mutex<BTreeMap<String, f64>>>;

/// A recorder that keeps the last value of every gauge and ignores everything else.
#[derive(Debug, Default)]
struct GaugeCapture {
    values: Values,
}

#[derive(Debug)]
struct CapturedGauge {
    key: String,
    values: Values,
}

impl GaugeFn for CapturedGauge {
    fn increment(&self, value: f64) {
        *self.values.lock().entry(self.key.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.values.lock().entry(self.key.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.values.lock().insert(self.key.clone(), value);
    }
}

impl Recorder for GaugeCapture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        Gauge::from_arc(Arc::new(CapturedGauge {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            values: Arc::clone(&self.values),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn record_metrics_exports_job_state_and_task_counts() {
    let lifecycle = Lifecycle::new();
    lifecycle.spawn_periodic(
        "cache_warmer",
        PeriodicConfig::new(Duration::from_secs(10)),
        |_token| async { Ok(()) },
    );
    lifecycle.spawn_job("failed_once", |_token| async { anyhow::bail!("no") });
    tokio::time::sleep(Duration::from_secs(25)).await;

    let capture = GaugeCapture::default();
    metrics::with_local_recorder(&capture, || lifecycle.record_metrics());
    let values = capture.values.lock().clone();
    let value = |key: &str| {
        *values
            .get(key)
            .unwrap_or_else(|| panic!("{key} not exported; got {values:?}"))
    };

    assert_eq!(value("shop_job_running{job=cache_warmer}"), 1.0);
    assert_eq!(value("shop_job_runs{job=cache_warmer}"), 3.0);
    assert_eq!(value("shop_job_failures{job=cache_warmer}"), 0.0);
    assert!(value("shop_job_last_success_timestamp_seconds{job=cache_warmer}") > 0.0);
    assert_eq!(value("shop_job_running{job=failed_once}"), 0.0);
    assert!(
        !values.contains_key("shop_job_last_success_timestamp_seconds{job=failed_once}"),
        "only periodic jobs have a last success"
    );
    assert_eq!(value("shop_tracked_tasks{}"), 1.0);
    assert_eq!(value("shop_tokio_alive_tasks{}"), 1.0);
    assert_eq!(value("shop_tokio_workers{}"), 1.0);
    assert_eq!(value("shop_tokio_global_queue_depth{}"), 0.0);

    assert!(lifecycle.shutdown(Duration::from_secs(1)).await.is_clean());
}
