//! `orders leak-demo start|status|stop`: a client of `/admin/leak-demo` on ORDERS_ADDR,
//! for the container image, which has no curl (`docker compose exec orders orders
//! leak-demo start --duration 10m`). Prints the answer's body; fails on a non-2xx status.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::LeakDemoAction;

/// Sends the request for `action` to the service at `addr` (an unspecified address
/// means this host) and returns the response body.
pub async fn run(addr: SocketAddr, action: &LeakDemoAction) -> anyhow::Result<String> {
    let (method, body) = match action {
        LeakDemoAction::Start { pitfall, duration } => (
            "POST",
            Some(json!({ "pitfall": pitfall, "duration_secs": duration.as_secs() }).to_string()),
        ),
        LeakDemoAction::Status => ("GET", None),
        LeakDemoAction::Stop => ("DELETE", None),
    };
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} /admin/leak-demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("the service did not answer in time")??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with('2') {
        bail!("{method} /admin/leak-demo: {status}\n{body}");
    }
    Ok(body.to_owned())
}
