//! `payments provider get|set`: a client of `/admin/provider` on PAYMENTS_ADDR, for the
//! container image, which has no curl (`docker compose exec payments payments provider
//! set --latency 2s --failure-rate 0.2`). `set` reads the settings, changes the ones
//! given, and puts them back. Prints the answer's body; fails on a non-2xx status.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use axum::http::Method;

use crate::{config::ProviderAction, provider::SettingsDocument};

const PATH: &str = "/admin/provider";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the request(s) for `action` to the service at `addr` (an unspecified address
/// means this host) and returns the last response body.
pub async fn run(addr: SocketAddr, action: &ProviderAction) -> anyhow::Result<String> {
    let current = call(addr, Method::GET, None).await?;
    let ProviderAction::Set {
        latency,
        failure_rate,
        decline_above_cents,
        decline_none,
    } = action
    else {
        return Ok(current);
    };
    let mut settings: SettingsDocument =
        serde_json::from_str(&current).context("the service's provider settings")?;
    if let Some(latency) = latency {
        settings.latency = humantime::format_duration(*latency).to_string();
    }
    if let Some(rate) = failure_rate {
        settings.failure_rate = *rate;
    }
    if *decline_none {
        settings.decline_above_cents = None;
    } else if decline_above_cents.is_some() {
        settings.decline_above_cents = *decline_above_cents;
    }
    call(addr, Method::PUT, Some(serde_json::to_string(&settings)?)).await
}

async fn call(addr: SocketAddr, method: Method, body: Option<String>) -> anyhow::Result<String> {
    let (status, body) =
        shop_service::healthcheck::call(addr, method.clone(), PATH, body, TIMEOUT).await?;
    if !status.is_success() {
        bail!("{method} {PATH}: {status}\n{body}");
    }
    Ok(body)
}
