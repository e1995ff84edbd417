//! The `healthcheck` subcommand of every service: `GET /healthz` on the service's own
//! port with a real HTTP client, for container images without curl. It initialises no
//! telemetry and logs nothing: a probe runs every few seconds.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// How long a probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `GET http://<addr>/healthz` (an unspecified address means this host); `Ok` on 2xx.
pub async fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let uri: hyper::Uri = format!("http://{target}/healthz").parse()?;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(TIMEOUT, client.get(uri))
        .await
        .context("the health check timed out")?
        .with_context(|| format!("GET http://{target}/healthz"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "unhealthy: /healthz answered {}",
        response.status()
    );
    Ok(())
}

/// The process exit code of `healthcheck`: 0 healthy, 1 not (the reason on stderr).
pub async fn exit_code(addr: SocketAddr) -> std::process::ExitCode {
    match probe(addr).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The probe's only output, read by people (`docker inspect`).
            eprintln!("{error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
