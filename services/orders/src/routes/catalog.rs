//! `GET /v1/products`, `GET /v1/products/{id}`: public catalog reads.
//!
//! A single product is read through [`ProductCache`](crate::cache::ProductCache), so its
//! `stock` may be stale within the bound in docs/cache.md. Pages of the list go to
//! Postgres directly: a keyset page is one index scan, and caching pages keyed by
//! cursor × limit would need an invalidation scheme of its own.

use axum::{Json, Router, extract::State, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    AppState,
    catalog::Product,
    error::ApiError,
    extract::{AppQuery, IdPath},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(list_products))
        .route("/v1/products/{id}", get(get_product))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct ProductPage {
    items: Vec<Product>,
    next_cursor: Option<String>,
}

async fn list_products(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let limit = super::page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| Uuid::from_slice(&b).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid-cursor", "the cursor is not one this API issued")
                })
        })
        .transpose()?;
    let items = state.products.list(limit, after).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| {
            items
                .last()
                .map(|p| URL_SAFE_NO_PAD.encode(p.id.as_bytes()))
        })
        .flatten();
    Ok(Json(ProductPage { items, next_cursor }))
}

/// Through the product cache (docs/cache.md): `stock` may be stale within its bound.
///
/// The leak demo's live path: while a window is open (only possible with
/// `LEAK_DEMO=1`), each call leaves a detached task behind (`crate::leak_demo`);
/// otherwise `on_product_view` is one atomic load.
async fn get_product(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<Product>, ApiError> {
    state.leak_demo.on_product_view(id);
    state
        .cache
        .get(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("no product with this id"))
}
