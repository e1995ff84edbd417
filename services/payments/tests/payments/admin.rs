//! `/admin/provider` (in process: the real Application on port 0): the provider's
//! settings change at run time; bad input is a problem and changes nothing. And the
//! `payments provider` subcommand is a client of it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_lifecycle::{CancellationToken, Lifecycle};
use shop_payments::{Application, Config};

use crate::harness::redis_url;

#[sqlx::test(migrations = "../../migrations")]
async fn the_provider_settings_change_at_run_time_and_invalid_ones_are_refused_with_a_problem(
    pool: sqlx::PgPool,
) {
    let mut config = Config::defaults();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.redis.url = redis_url();
    let id = uuid::Uuid::new_v4();
    config.order_events_stream = format!("test:{id}:orders");
    config.outbox.stream = format!("test:{id}:payments");
    let db = shop_service::pools::pg_pool(
        "payments",
        &config.database,
        (*pool.connect_options()).clone(),
    );
    let app = Application::build_with_pool(config, db)
        .await
        .expect("payments builds");
    let base = format!("http://{}", app.local_addr());
    let provider = app.state().provider.clone();
    let stop = CancellationToken::new();
    let harness = Lifecycle::new();
    let server = harness.spawn_task(
        "payments under test",
        app.run_until_stopped(stop.clone().cancelled_owned()),
    );
    let client = reqwest::Client::new();
    let url = format!("{base}/admin/provider");

    let shown: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        shown,
        json!({ "latency": "20ms", "failure_rate": 0.0, "decline_above_cents": null })
    );

    let wanted = json!({ "latency": "250ms", "failure_rate": 0.5, "decline_above_cents": 1000 });
    let response = client.put(&url).json(&wanted).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), wanted);
    assert_eq!(provider.settings().latency, Duration::from_millis(250));
    assert_eq!(provider.settings().decline_above_cents, Some(1000));

    let invalid = [
        (
            json!({ "latency": "20ms", "failure_rate": 1.5 }),
            "invalid-provider-settings",
        ),
        (
            json!({ "latency": "20ms", "failure_rate": -0.1 }),
            "invalid-provider-settings",
        ),
        (
            json!({ "latency": "2m", "failure_rate": 0.0 }),
            "invalid-provider-settings",
        ),
        (
            json!({ "latency": "soon", "failure_rate": 0.0 }),
            "invalid-provider-settings",
        ),
        (
            json!({ "latency": "20ms", "failure_rate": 0.0, "decline_above_cents": -1 }),
            "invalid-provider-settings",
        ),
        (json!({ "latency": "20ms" }), "invalid-body"),
        (
            json!({ "latency": "20ms", "failure_rate": 0.0, "colour": "red" }),
            "invalid-body",
        ),
    ];
    for (body, slug) in invalid {
        let response = client.put(&url).json(&body).send().await.unwrap();
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, slug).await;
    }
    let response = client
        .put(&url)
        .header("content-type", "application/json")
        .body("{\"latency\":")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed-json").await;
    let response = client.put(&url).body("latency=1s").send().await.unwrap();
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let shown: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown, wanted, "refused settings changed nothing");

    // The subcommand changes what it is given and keeps the rest.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_payments"))
        .args(["provider", "set", "--failure-rate", "0", "--decline-none"])
        .env("PAYMENTS_ADDR", base.trim_start_matches("http://"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed,
        json!({ "latency": "250ms", "failure_rate": 0.0, "decline_above_cents": null })
    );

    let jobs: Value = client
        .get(format!("{base}/debug/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    for job in ["payments_consumer", "outbox_relay", "metrics_sampler"] {
        assert!(names.contains(&job), "{job} in {names:?}");
    }
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    stop.cancel();
    let report = server.await.unwrap().expect("payments stops");
    assert!(report.is_clean(), "{report:?}");
    harness.shutdown(Duration::from_secs(5)).await;
}

async fn assert_problem(response: reqwest::Response, status: StatusCode, slug: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status.as_u16());
}
