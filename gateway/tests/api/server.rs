//! The server itself: slow clients, the healthcheck subcommand, the OpenAPI document.

use std::{process::Command, time::Duration};

use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{free_port, gateway_with_stub};

#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_never_finishes_its_headers_is_disconnected_at_the_header_timeout(
    pool: PgPool,
) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.server.header_read_timeout = std::time::Duration::from_millis(300);
    })
    .await;

    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    // Generous bound: proves the gateway hung up, not the test.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the gateway closed the slow connection");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_healthcheck_subcommand_exits_0_for_a_live_gateway_and_1_otherwise(pool: PgPool) {
    let (gateway, _stub, lifecycle) = gateway_with_stub(&pool, |_| {}).await;

    let healthcheck = |port: u16| {
        let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("healthcheck")
            .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .output()
            .unwrap();
        output.status.code()
    };
    let live = gateway.addr.port();
    let dead = free_port();
    let (live, dead) = lifecycle
        .spawn_blocking(move || (healthcheck(live), healthcheck(dead)))
        .await
        .unwrap();
    assert_eq!(live, Some(0));
    assert_eq!(dead, Some(1));

    let document: serde_json::Value = gateway.get_json("/openapi.json").await;
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/v1/auth/token"]["post"].is_object());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_body_slower_than_the_body_read_timeout_gets_a_408_problem(pool: PgPool) {
    let (gateway, stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.body_read_timeout = std::time::Duration::from_millis(300);
    })
    .await;

    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    // Announces 100 bytes, sends 2, then stalls.
    stream
        .write_all(
            b"POST /v1/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"",
        )
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            buffer.extend_from_slice(&chunk[..n]);
            if n == 0 || String::from_utf8_lossy(&buffer).contains("\"status\":408") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the gateway answered the stalled body");
    let response = String::from_utf8_lossy(&buffer);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("application/problem+json")
            && response.contains("/problems/request-timeout"),
        "{response}"
    );
    assert_eq!(stub.hits(), 0, "nothing reached orders");
}

#[sqlx::test(migrations = "../migrations")]
async fn cors_answers_preflights_for_allowed_origins_only(pool: PgPool) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.cors_allowed_origins = vec!["https://shop.example".to_owned()];
    })
    .await;

    let preflight = |origin: &'static str| {
        gateway
            .client
            .request(reqwest::Method::OPTIONS, gateway.url("/v1/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed_headers.contains("idempotency-key"),
        "{allowed_headers}"
    );

    let foreign = preflight("https://evil.example").await.unwrap();
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin"),
        "no CORS grant for an origin not in CORS_ALLOWED_ORIGINS"
    );

    // A simple request from the allowed origin may read the trace headers.
    let read = gateway
        .client
        .get(gateway.url("/v1/products/00000000-0000-0000-0000-000000000001"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    let exposed = read.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-trace-id"), "{exposed}");
}
