//! `orders healthcheck`: a container health probe that needs no curl in the image.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs `/healthz` on `addr` (an unspecified address means this host) and succeeds on 200.
pub async fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        if &head[..] != b"HTTP/1.1 200" {
            bail!("unhealthy: {}", String::from_utf8_lossy(&head));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(3), check)
        .await
        .context("health check timed out")?
}
