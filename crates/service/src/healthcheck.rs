//! The commands that talk to a service's own port, for container images without curl:
//! `healthcheck` (`GET /healthz`; it initialises no telemetry and logs nothing, since a
//! probe runs every few seconds) and admin clients such as `orders leak-demo`. One real
//! HTTP client ([`call`]), never HTTP written by hand over TCP.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// How long a probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `method path` on the service at `addr` (an unspecified address means this host),
/// with an optional JSON body, within `timeout`; returns the status and the body.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    json_body: Option<String>,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, String)> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{target}{path}");
    let mut request = Request::builder().method(method.clone()).uri(&url);
    if json_body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(json_body.unwrap_or_default())))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {url}: no answer within {timeout:?}"))?
        .with_context(|| format!("{method} {url}"))
}

/// `GET /healthz`; `Ok` on 2xx.
pub async fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let (status, _) = call(addr, Method::GET, "/healthz", None, TIMEOUT).await?;
    anyhow::ensure!(status.is_success(), "unhealthy: /healthz answered {status}");
    Ok(())
}
