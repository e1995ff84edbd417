//! `POST /v1/orders`, `GET /v1/orders/{id}`, `GET /v1/orders`: the caller's orders.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use crate::{
    AppState,
    error::{ApiError, problem_response},
    extract::{AppJson, AppQuery, Caller, IdPath, IdempotencyKey},
    orders::{Order, OrderCursor, PlaceOrderRequest, place_order},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", get(list_orders).post(create_order))
        .route("/v1/orders/{id}", get(get_order))
}

/// Runs inside the request future: if the client goes away or the deadline passes, the
/// future is dropped and its transaction rolled back — never a detached task (pitfall 2).
async fn create_order(
    State(state): State<AppState>,
    Caller(claims): Caller,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(request): AppJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let placed = place_order(&state.db, &state.cache, claims.sub, &key, &request).await?;
    let mut response = if placed.status.is_success() {
        (placed.status, Json(placed.body)).into_response()
    } else {
        problem_response(placed.status, placed.body)
    };
    let headers = response.headers_mut();
    if let Some(id) = placed.order_id {
        let location =
            HeaderValue::from_str(&format!("/v1/orders/{id}")).map_err(anyhow::Error::from)?;
        headers.insert(header::LOCATION, location);
    }
    if placed.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_order(
    State(state): State<AppState>,
    Caller(claims): Caller,
    IdPath(id): IdPath,
) -> Result<Json<Order>, ApiError> {
    // Someone else's order is "not found", not "forbidden": existence is not disclosed.
    state
        .orders
        .get(claims.sub, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("no order with this id"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct OrderPage {
    items: Vec<Order>,
    next_cursor: Option<String>,
}

async fn list_orders(
    State(state): State<AppState>,
    Caller(claims): Caller,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let limit = super::page_limit(query.limit)?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| {
            OrderCursor::decode(c).ok_or_else(|| {
                ApiError::bad_request("invalid-cursor", "the cursor is not one this API issued")
            })
        })
        .transpose()?;
    let items = state.orders.list(claims.sub, limit, cursor).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| {
            items.last().map(|o| {
                OrderCursor {
                    created_at: o.created_at,
                    id: o.id,
                }
                .encode()
            })
        })
        .flatten();
    Ok(Json(OrderPage { items, next_cursor }))
}
