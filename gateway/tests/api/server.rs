//! The server itself: slow clients, the healthcheck subcommand, the OpenAPI document.

use std::{process::Command, time::Duration};

use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{free_port, spawn_gateway, spawn_stub, test_config};

#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_never_finishes_its_headers_is_disconnected_at_the_header_timeout(
    pool: PgPool,
) {
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, _stub) = spawn_stub(&lifecycle).await;
    let mut config = test_config(&pool, &orders);
    config.header_read_timeout_ms = 300;
    let gateway = spawn_gateway(config).await;

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
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, _stub) = spawn_stub(&lifecycle).await;
    let gateway = spawn_gateway(test_config(&pool, &orders)).await;

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

    let document: serde_json::Value = gateway
        .client
        .get(gateway.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/v1/auth/token"]["post"].is_object());
}
