//! Idempotency-Key: one order per key, replays of the first answer, refusals of reuse.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

#[sqlx::test(migrations = "../../migrations")]
async fn twenty_concurrent_requests_with_one_key_create_one_order(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 100).await;
    let user = Uuid::new_v4();
    let body = order(&[line(product, 2)]);

    let responses = join_all((0..20).map(|_| {
        let (app, body) = (&app, &body);
        async move {
            let r = app.place(user, "the-one-key", body).await;
            let status = r.status();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            let json: Value = r.json().await.unwrap();
            (status, replayed, json)
        }
    }))
    .await;

    let created: Vec<&Value> = responses
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .map(|(_, _, b)| b)
        .collect();
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|b| *b == created[0]),
        "every 201 carries the same order"
    );
    for (status, _, body) in &responses {
        assert!(
            *status == StatusCode::CREATED
                || (*status == StatusCode::CONFLICT
                    && body["type"] == "/problems/request-in-progress"),
            "{status} {body}"
        );
    }
    assert_eq!(
        responses
            .iter()
            .filter(|(s, replayed, _)| *s == StatusCode::CREATED && !replayed)
            .count(),
        1,
        "exactly one answer is the original, the other 201s are replays"
    );
    assert_eq!(count(&db, "orders").await, 1);
    assert_eq!(stock(&db, product).await, 98);

    // Afterwards, a repeat is a replay with the same body.
    let again = app.place(user, "the-one-key", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(again.headers().get("location").is_some());
    assert_eq!(&again.json::<Value>().await.unwrap(), created[0]);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_same_key_with_a_different_body_is_refused_and_creates_nothing(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 100).await;
    let user = Uuid::new_v4();

    let first = app.place(user, "k", &order(&[line(product, 1)])).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let reused = app.place(user, "k", &order(&[line(product, 5)])).await;
    assert_problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(count(&db, "orders").await, 1);
    assert_eq!(stock(&db, product).await, 99);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn keys_are_scoped_to_the_user(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 100).await;
    let body = order(&[line(product, 1)]);

    let a = app.place(Uuid::new_v4(), "shared-key", &body).await;
    let b = app.place(Uuid::new_v4(), "shared-key", &body).await;
    assert_eq!(a.status(), StatusCode::CREATED);
    assert_eq!(b.status(), StatusCode::CREATED);
    assert!(b.headers().get("idempotent-replayed").is_none());
    assert_eq!(count(&db, "orders").await, 2);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refusal_is_replayed_for_its_key_even_after_restock(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 1).await;
    let user = Uuid::new_v4();
    let body = order(&[line(product, 5)]);

    let first = app.place(user, "k", &body).await;
    let first = assert_problem(first, StatusCode::CONFLICT, "insufficient-stock").await;
    sqlx::query("update products set stock = 100 where id = $1")
        .bind(product)
        .execute(&db)
        .await
        .unwrap();
    let again = app.place(user, "k", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = assert_problem(again, StatusCode::CONFLICT, "insufficient-stock").await;
    assert_eq!(again, first);
    assert_eq!(count(&db, "orders").await, 0);
    app.shutdown().await;
}
