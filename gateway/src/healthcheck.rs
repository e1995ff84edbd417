//! `gateway healthcheck`: a container health probe that needs no curl in the image.

use std::time::Duration;

use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::config::Config;

/// GETs our own `/healthz` (on 127.0.0.1, at `GATEWAY_ADDR`'s port); true if it answers
/// 200 within 3 s.
pub async fn healthcheck(config: &Config) -> bool {
    let url = format!("http://127.0.0.1:{}/healthz", config.addr.port());
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let Ok(uri) = url.parse() else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), client.get(uri)).await,
        Ok(Ok(response)) if response.status().is_success()
    )
}
