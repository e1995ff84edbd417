//! `orders leak-demo start|status|stop`: a client of `/admin/leak-demo` on ORDERS_ADDR,
//! for the container image, which has no curl (`docker compose exec orders orders
//! leak-demo start --duration 10m`). Prints the answer's body; fails on a non-2xx status.

use std::{net::SocketAddr, time::Duration};

use anyhow::bail;
use axum::http::Method;
use serde_json::json;

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
    let method: Method = method.parse()?;
    let (status, body) = shop_service::healthcheck::call(
        addr,
        method.clone(),
        "/admin/leak-demo",
        body,
        Duration::from_secs(5),
    )
    .await?;
    if !status.is_success() {
        bail!("{method} /admin/leak-demo: {status}\n{body}");
    }
    Ok(body)
}
