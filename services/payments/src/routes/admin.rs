//! `GET` and `PUT /admin/provider`: the simulated provider's settings, changed at run
//! time so that a person can make payments slow or failing and watch the lag, retries
//! and cancellations (`payments provider get|set` is the same from a shell).
//!
//! Internal only: the gateway never routes here. A `PUT` replaces every setting:
//! `{"latency":"20ms","failure_rate":0.0,"decline_above_cents":null}` (`latency` at most
//! 60s, `failure_rate` 0.0–1.0, `decline_above_cents` absent or `null` for none). Bad
//! input is a problem: 400 malformed JSON, 415 not JSON, 422 invalid values.

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    routing::get,
};
use shop_service::{Problem, problem::json_rejection};

use crate::{
    AppState,
    provider::{ProviderSettings, SettingsDocument},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/provider", get(show).put(replace))
}

async fn show(State(state): State<AppState>) -> Json<SettingsDocument> {
    Json(SettingsDocument::from(&state.provider.settings()))
}

async fn replace(
    State(state): State<AppState>,
    body: Result<Json<SettingsDocument>, JsonRejection>,
) -> Result<Json<SettingsDocument>, Problem> {
    let Json(document) = body.map_err(|rejection| json_rejection(&rejection))?;
    let settings = ProviderSettings::try_from(&document).map_err(|detail| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-provider-settings",
            detail,
        )
    })?;
    let previous = state.provider.settings();
    state.provider.set(settings.clone());
    tracing::info!(%previous, current = %settings, "provider settings changed");
    Ok(Json(SettingsDocument::from(&settings)))
}
