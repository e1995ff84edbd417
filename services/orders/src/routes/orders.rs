//! `POST /v1/orders`, `GET /v1/orders/{id}`, `GET /v1/orders`: the caller's orders.
//!
//! Placement itself is a domain operation ([`OrderRepository::place`]); this module
//! alone maps its [`Placement`] and [`PlaceError`] to HTTP: statuses, problem types,
//! `Location` and `Idempotent-Replayed`. It also words a [`Refusal`] as the problem
//! document that is stored for the key and replayed (`orders::place` module docs).
//!
//! [`OrderRepository::place`]: crate::orders::OrderRepository::place

use axum::{
    Json, Router,
    extract::{Extension, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::Deadline;
use crate::{
    AppState,
    error::ApiError,
    extract::{AppJson, AppQuery, Caller, IdPath, IdempotencyKey},
    orders::{Order, OrderCursor, PlaceError, PlaceOrderRequest, Placement, Refusal, StoredAnswer},
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
    deadline: Option<Extension<Deadline>>,
    AppJson(request): AppJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let deadline = deadline.map(|Extension(Deadline(at))| at);
    let placement = state
        .orders
        .place(
            &state.cache,
            claims.sub,
            &key,
            &request,
            deadline,
            &refusal_answer,
        )
        .await
        .map_err(place_error)?;
    match placement {
        Placement::Created { answer, .. } | Placement::Refused { answer, .. } => {
            answer_response(answer, false)
        }
        Placement::Replayed(answer) => answer_response(answer, true),
    }
}

/// A placement's answer, fresh or `replayed`: the stored status and body, `Location` of
/// the order it created (if any) and, on a replay, `Idempotent-Replayed: true`.
fn answer_response(answer: StoredAnswer, replayed: bool) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(answer.status).map_err(anyhow::Error::from)?;
    let mut response = if status.is_success() {
        (status, Json(answer.body)).into_response()
    } else {
        shop_service::problem::response(status, answer.body)
    };
    let headers = response.headers_mut();
    if let Some(id) = answer.order_id {
        let location =
            HeaderValue::from_str(&format!("/v1/orders/{id}")).map_err(anyhow::Error::from)?;
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A refusal as the client first sees it, and as it is stored for the key: the status
/// and problem document of the matching [`ApiError`] (404 `unknown-product`, 409
/// `insufficient-stock`, each with `product_ids`).
fn refusal_answer(refusal: &Refusal) -> StoredAnswer {
    let error = match refusal {
        Refusal::UnknownProducts(ids) => ApiError::UnknownProduct(ids.clone()),
        Refusal::InsufficientStock(ids) => ApiError::InsufficientStock(ids.clone()),
    };
    StoredAnswer {
        status: error.status_code().as_u16(),
        body: error.problem(),
        order_id: None,
    }
}

/// The HTTP answer to a placement that ended in an error.
fn place_error(error: PlaceError) -> ApiError {
    match error {
        PlaceError::Invalid(detail) => ApiError::unprocessable("invalid-order", detail),
        PlaceError::KeyInProgress => ApiError::RequestInProgress,
        PlaceError::KeyReused => {
            ApiError::unprocessable("idempotency-key-reused", error.to_string())
        }
        PlaceError::MixedCurrencies => {
            ApiError::unprocessable("mixed-currencies", error.to_string())
        }
        PlaceError::Database(e) => ApiError::from(e),
        PlaceError::Json(_) | PlaceError::RefusalUnsettled => {
            ApiError::Internal(anyhow::Error::new(error))
        }
    }
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
