//! Bad input always gets its documented 4xx problem and changes nothing.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::json;
use shop_auth::{AUDIENCE, Claims, ISSUER};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[sqlx::test(migrations = "../../migrations")]
async fn each_malformed_order_request_gets_its_documented_problem_and_changes_nothing(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 10).await;
    let user = Uuid::new_v4();
    let token = app.token(user);
    let post = || {
        app.client
            .post(app.url("/v1/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("k-{}", Uuid::new_v4()))
    };
    let too_many: Vec<_> = (0..101).map(|_| line(Uuid::new_v4(), 1)).collect();

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            post()
                .header("content-type", "application/json")
                .body("{\"items\": ["),
            StatusCode::BAD_REQUEST,
            "malformed-json",
        ),
        (
            "unknown field",
            post().json(&json!({"items": [line(product, 1)], "coupon": "FREE"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            "zero quantity",
            post().json(&order(&[line(product, 0)])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order",
        ),
        (
            "negative quantity",
            post().json(&order(&[line(product, -3)])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order",
        ),
        (
            "huge quantity",
            post().json(&order(&[line(product, 1_000_000_000_000)])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order",
        ),
        (
            "no lines",
            post().json(&order(&[])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order",
        ),
        (
            "too many lines",
            post().json(&order(&too_many)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order",
        ),
        (
            "bad product uuid",
            post().json(&json!({"items": [{"product_id": "not-a-uuid", "quantity": 1}]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            "wrong content type",
            post().header("content-type", "text/plain").body("hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        (
            "oversized body",
            post()
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"items\": [], \"pad\": \"{}\"}}",
                    "x".repeat(200 * 1024)
                )),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
        ),
        (
            "missing Idempotency-Key",
            app.client
                .post(app.url("/v1/orders"))
                .bearer_auth(&token)
                .json(&order(&[line(product, 1)])),
            StatusCode::BAD_REQUEST,
            "missing-idempotency-key",
        ),
        (
            "oversized Idempotency-Key",
            app.client
                .post(app.url("/v1/orders"))
                .bearer_auth(&token)
                .header("idempotency-key", "k".repeat(256))
                .json(&order(&[line(product, 1)])),
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
        ),
        (
            "Idempotency-Key with a space",
            app.client
                .post(app.url("/v1/orders"))
                .bearer_auth(&token)
                .header("idempotency-key", "two words")
                .json(&order(&[line(product, 1)])),
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
        ),
    ];
    for (name, request, status, slug) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        assert_problem(response, status, slug).await;
    }
    assert_eq!(stock(&db, product).await, 10);
    assert_eq!(count(&db, "orders").await, 0);
    assert_eq!(count(&db, "idempotency_keys").await, 0);
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn bad_ids_cursors_and_limits_get_a_clear_problem(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let cases = [
        (
            "/v1/products/not-a-uuid",
            StatusCode::BAD_REQUEST,
            "invalid-id",
        ),
        (
            "/v1/products?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-limit",
        ),
        (
            "/v1/products?limit=101",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-limit",
        ),
        (
            "/v1/products?limit=ten",
            StatusCode::BAD_REQUEST,
            "invalid-query",
        ),
        (
            "/v1/products?cursor=%%%",
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
        ),
        (
            "/v1/products?cursor=bm90IGEgY3Vyc29y",
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
        ),
        ("/v1/nothing-here", StatusCode::NOT_FOUND, "not-found"),
    ];
    for (path, status, slug) in cases {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_problem(response, status, slug).await;
    }
    app.shutdown().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn missing_expired_forged_and_alg_none_tokens_get_401_and_change_nothing(db: PgPool) {
    let app = TestApp::spawn(&db).await;
    let product = create_product(&db, 10).await;
    let user = Uuid::new_v4();
    let valid = app.token(user);
    let parts: Vec<&str> = valid.split('.').collect();

    let expired = app.signer.sign(&Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user,
        iat: now() - 7200,
        nbf: now() - 7200,
        exp: now() - 3600,
        jti: Uuid::new_v4(),
    });
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let forged_claims = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": Uuid::new_v4(), "exp": now() + 600, "nbf": now(), "iat": now(), "jti": Uuid::new_v4()}))
            .unwrap(),
    );
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);

    for (name, auth) in [
        ("missing", None),
        ("not bearer", Some(format!("Basic {valid}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("forged payload", Some(format!("Bearer {forged}"))),
        ("garbage", Some("Bearer abc.def.ghi".to_owned())),
    ] {
        let mut request = app
            .client
            .post(app.url("/v1/orders"))
            .header("idempotency-key", "k")
            .json(&order(&[line(product, 1)]));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{name}"
        );
        assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(stock(&db, product).await, 10);
    assert_eq!(count(&db, "orders").await, 0);
    app.shutdown().await;
}
