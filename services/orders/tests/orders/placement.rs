//! Order placement never oversells, never deadlocks, and writes order, lines and
//! outbox event together.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

#[sqlx::test(migrations = "../../migrations")]
async fn two_hundred_concurrent_single_unit_orders_for_fifty_units_sell_exactly_fifty(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 50).await;
    let body = order(&[line(product, 1)]);

    let responses = join_all((0..200).map(|i| {
        let (app, body) = (&app, &body);
        async move {
            app.place(Uuid::new_v4(), &format!("key-{i}"), body)
                .await
                .status()
        }
    }))
    .await;

    let created = responses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = responses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(created, 50, "{responses:?}");
    assert_eq!(conflicts, 150, "{responses:?}");
    assert_eq!(stock(&db, product).await, 0);
    assert_eq!(count(&db, "orders").await, 50);
    assert_eq!(count(&db, "order_items").await, 50);
    assert_eq!(count(&db, "outbox").await, 50);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn multi_line_orders_placed_concurrently_in_opposite_line_orders_never_deadlock(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let (a, b, c) = (
        create_product(&db, 1000).await,
        create_product(&db, 1000).await,
        create_product(&db, 1000).await,
    );
    let forward = order(&[line(a, 1), line(b, 1), line(c, 1)]);
    let backward = order(&[line(c, 1), line(b, 1), line(a, 1)]);

    let responses = join_all((0..120).map(|i| {
        let app = &app;
        let body = if i % 2 == 0 { &forward } else { &backward };
        async move {
            app.place(Uuid::new_v4(), &format!("k{i}"), body)
                .await
                .status()
        }
    }))
    .await;

    assert!(
        responses.iter().all(|s| *s == StatusCode::CREATED),
        "{responses:?}"
    );
    for product in [a, b, c] {
        assert_eq!(stock(&db, product).await, 1000 - 120);
    }
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_placed_order_is_returned_with_its_location_and_readable_by_its_owner_only(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let (a, b) = (create_product(&db, 10).await, create_product(&db, 10).await);
    let owner = Uuid::new_v4();

    let response = app
        .place(owner, "first", &order(&[line(b, 2), line(a, 3)]))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let placed: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/orders/{}", placed["id"].as_str().unwrap())
    );
    assert_eq!(placed["total_cents"], 5 * 250);
    assert_eq!(
        placed["items"][0]["product_id"],
        b.to_string(),
        "lines keep their order"
    );

    let fetched: Value = app
        .client
        .get(app.url(&location))
        .bearer_auth(app.token(owner))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, placed);

    let stranger = app
        .client
        .get(app.url(&location))
        .bearer_auth(app.token(Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_problem(stranger, StatusCode::NOT_FOUND, "not-found").await;

    let listed: Value = app
        .client
        .get(app.url("/v1/orders?limit=10"))
        .bearer_auth(app.token(owner))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0], placed);
    assert_eq!(stock(&db, a).await, 7);
    assert_eq!(stock(&db, b).await, 8);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_order_over_stock_is_rejected_naming_the_product_and_nothing_changes(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let (plenty, scarce) = (create_product(&db, 100).await, create_product(&db, 2).await);

    let response = app
        .place(
            Uuid::new_v4(),
            "k",
            &order(&[line(plenty, 5), line(scarce, 3)]),
        )
        .await;
    let body = assert_problem(response, StatusCode::CONFLICT, "insufficient-stock").await;
    assert_eq!(body["product_ids"], serde_json::json!([scarce]));
    assert_eq!(stock(&db, plenty).await, 100);
    assert_eq!(stock(&db, scarce).await, 2);
    assert_eq!(count(&db, "orders").await, 0);
    assert_eq!(count(&db, "outbox").await, 0);

    let unknown = Uuid::new_v4();
    let response = app
        .place(
            Uuid::new_v4(),
            "k2",
            &order(&[line(plenty, 1), line(unknown, 1)]),
        )
        .await;
    let body = assert_problem(response, StatusCode::NOT_FOUND, "unknown-product").await;
    assert_eq!(body["product_ids"], serde_json::json!([unknown]));
    assert_eq!(stock(&db, plenty).await, 100);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_catalog_lists_products_page_by_page_and_serves_one_by_id(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create_product(&db, 7).await);
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut url = app.url("/v1/products?limit=2");
    loop {
        let page: Value = app
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => url = app.url(&format!("/v1/products?limit=2&cursor={cursor}")),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let one: Value = app
        .client
        .get(app.url(&format!("/v1/products/{}", ids[0])))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["stock"], 7);
    assert_eq!(one["currency"], "EUR");
    let missing = app
        .client
        .get(app.url(&format!("/v1/products/{}", Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND, "not-found").await;
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn unknown_products_are_refused_before_short_stock_named_in_request_order(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let scarce = create_product(&db, 1).await;
    let (gone1, gone2) = (Uuid::new_v4(), Uuid::new_v4());
    let user = Uuid::new_v4();
    let body = order(&[line(gone2, 1), line(scarce, 5), line(gone1, 1)]);

    let first = app.place(user, "mixed-refusal", &body).await;
    let first = assert_problem(first, StatusCode::NOT_FOUND, "unknown-product").await;
    assert_eq!(first["product_ids"], serde_json::json!([gone2, gone1]));
    assert_eq!(stock(&db, scarce).await, 1);
    assert_eq!(count(&db, "orders").await, 0);

    // The refusal was stored whole (its trace_id too) and is the key's answer.
    let again = app.place(user, "mixed-refusal", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = assert_problem(again, StatusCode::NOT_FOUND, "unknown-product").await;
    assert_eq!(again, first);
    assert_eq!(count(&db, "idempotency_keys").await, 1);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_order_in_two_currencies_is_a_client_error_that_stores_and_changes_nothing(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let euros = create_product(&db, 10).await;
    let dollars = create_product(&db, 10).await;
    sqlx::query("update products set currency = 'USD' where id = $1")
        .bind(dollars)
        .execute(&db)
        .await
        .unwrap();

    let response = app
        .place(
            Uuid::new_v4(),
            "two-currencies",
            &order(&[line(euros, 1), line(dollars, 1)]),
        )
        .await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "mixed-currencies",
    )
    .await;
    assert_eq!(count(&db, "orders").await, 0);
    assert_eq!(count(&db, "idempotency_keys").await, 0);
    assert_eq!(stock(&db, euros).await, 10);
    assert_eq!(stock(&db, dollars).await, 10);
    app.shutdown().await;
}
