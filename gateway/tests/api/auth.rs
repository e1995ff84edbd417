//! Login, token checks and the JWKS.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use shop_auth::{AUDIENCE, Claims, ISSUER, TokenSigner, TokenVerifier};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{create_user, gateway_with_stub, spawn_gateway, spawn_stub, test_config};

const PUBLIC: &str = include_str!("../../../deploy/dev-keys/public.pem");
const PRIVATE: &str = include_str!("../../../deploy/dev-keys/private.pem");
const PRIVATE_NEXT: &str = include_str!("../../../deploy/dev-keys/private-next.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_with_good_credentials_gets_a_token_that_verifies_with_the_published_keys(
    pool: PgPool,
) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;
    let user = create_user(&pool, "alice@shop.test", "s3cret-pass").await;

    let response = gateway
        .client
        .post(gateway.url("/v1/auth/token"))
        .json(&json!({ "email": "Alice@Shop.test", "password": "s3cret-pass" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let token = body["access_token"].as_str().unwrap();

    // Anyone holding the JWKS (orders does the same with its PEM) can verify it.
    let verifier =
        TokenVerifier::new(vec![shop_auth::PublicKey::from_pem(PUBLIC, "dev").unwrap()]).unwrap();
    assert_eq!(verifier.verify(token).unwrap().sub, user);
    let jwks: Value = gateway.get_json("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&verifier.keys()[0].kid()), "{jwks}");
    assert_eq!(kids.len(), 2, "current and next key are both published");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_wrong_password_an_unknown_email_and_an_impossible_one_get_the_same_401(pool: PgPool) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;
    create_user(&pool, "bob@shop.test", "right-password").await;

    let mut bodies = Vec::new();
    for (email, password) in [
        ("bob@shop.test", "wrong-password"),
        ("nobody@shop.test", "whatever"),
        // NUL cannot be stored in Postgres text (found by the API fuzzer: it was a 500).
        ("bob\u{0}@shop.test", "whatever"),
    ] {
        let response = gateway
            .client
            .post(gateway.url("/v1/auth/token"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let mut body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/unauthorized");
        assert!(body["trace_id"].is_string(), "{body}");
        body["trace_id"] = Value::Null;
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1], "no hint which part was wrong");
    assert_eq!(bodies[0], bodies[2], "no hint which part was wrong");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_malformed_login_body_gets_400_and_a_wrong_content_type_gets_415(pool: PgPool) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;

    let response = gateway
        .client
        .post(gateway.url("/v1/auth/token"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("x-request-id"));
    assert!(response.headers().contains_key("x-trace-id"));

    let response = gateway
        .client
        .post(gateway.url("/v1/auth/token"))
        .body(r#"{"email":"a@b.c","password":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    let response = gateway
        .client
        .post(gateway.url("/v1/auth/token"))
        .json(&json!({ "email": "a@b.c" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

fn claims(user: Uuid) -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user,
        exp: now() + 600,
        iat: now(),
        nbf: now(),
        jti: Uuid::new_v4(),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn forged_expired_and_foreign_tokens_are_all_rejected_with_401_before_reaching_orders(
    pool: PgPool,
) {
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let (orders, stub) = spawn_stub(&lifecycle).await;
    let mut config = test_config(&pool, &orders);
    // Only the current key is accepted, so a token of the "next" key has an unknown kid.
    let dir = std::env::temp_dir().join(format!("gw-keys-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("public.pem"), PUBLIC).unwrap();
    std::fs::write(dir.join("private.pem"), PRIVATE).unwrap();
    config.auth_public_key_file = Some(dir.join("public.pem").display().to_string());
    config.auth_private_key_file = Some(dir.join("private.pem"));
    let gateway = spawn_gateway(config).await;

    let signer =
        TokenSigner::from_pem(PRIVATE, "dev", std::time::Duration::from_secs(600)).unwrap();
    let user = Uuid::new_v4();
    let good = signer.issue(user);
    let parts: Vec<&str> = good.split('.').collect();

    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(user),
        &jsonwebtoken::EncodingKey::from_secret(PUBLIC.as_bytes()),
    )
    .unwrap();
    let wrong_iss = signer.sign(&Claims {
        iss: "evil".into(),
        ..claims(user)
    });
    let wrong_aud = signer.sign(&Claims {
        aud: "other".into(),
        ..claims(user)
    });
    let expired = signer.sign(&Claims {
        exp: now() - 3600,
        iat: now() - 7200,
        nbf: now() - 7200,
        ..claims(user)
    });
    let not_yet = signer.sign(&Claims {
        nbf: now() + 3600,
        ..claims(user)
    });
    let mut tampered_claims = claims(user);
    tampered_claims.sub = Uuid::new_v4();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered_claims).unwrap()),
        parts[2]
    );
    let unknown_kid =
        TokenSigner::from_pem(PRIVATE_NEXT, "next", std::time::Duration::from_secs(600))
            .unwrap()
            .issue(user);

    for (name, token) in [
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("wrong iss", wrong_iss),
        ("wrong aud", wrong_aud),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("tampered payload", tampered),
        ("unknown kid", unknown_kid),
        ("garbage", "garbage".to_owned()),
    ] {
        let response = gateway
            .client
            .get(gateway.url("/v1/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
    }
    let response = gateway.get("/v1/orders").await;
    assert_eq!(response.status(), 401, "no token");
    assert_eq!(stub.hits(), 0, "no rejected request reached orders");

    // The genuine token passes, and is passed on to orders.
    let response = gateway
        .client
        .get(gateway.url("/v1/orders"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["authorization"], format!("Bearer {good}"));
    let _ = std::fs::remove_dir_all(dir);
}

#[sqlx::test(migrations = "../migrations")]
async fn during_a_key_rotation_tokens_of_the_old_and_the_new_key_are_both_accepted(pool: PgPool) {
    // Default config: signing with the current dev key, accepting current + next.
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |_| {}).await;
    let user = Uuid::new_v4();
    for pem in [PRIVATE, PRIVATE_NEXT] {
        let token = TokenSigner::from_pem(pem, "k", std::time::Duration::from_secs(600))
            .unwrap()
            .issue(user);
        let response = gateway
            .client
            .get(gateway.url("/v1/orders"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_flood_beyond_the_hashing_permits_gets_503_at_once_and_other_routes_still_answer(
    pool: PgPool,
) {
    let (gateway, _stub, _upstream) = gateway_with_stub(&pool, |config| {
        config.auth_max_concurrent_hashes = 1;
    })
    .await;
    create_user(&pool, "flood@shop.test", "s3cret-pass").await;

    let logins = (0..8).map(|_| {
        gateway
            .client
            .post(gateway.url("/v1/auth/token"))
            .json(&json!({ "email": "flood@shop.test", "password": "s3cret-pass" }))
            .send()
    });
    // While the flood is being hashed, a catalog read is served.
    let read = gateway
        .client
        .get(gateway.url("/v1/products/00000000-0000-0000-0000-000000000001"))
        .send();
    let (responses, read) = tokio::join!(futures::future::join_all(logins), read);
    assert_eq!(read.unwrap().status(), 200);

    let mut statuses = Vec::new();
    for response in responses {
        let response = response.unwrap();
        let status = response.status().as_u16();
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["type"], "/problems/overloaded");
        }
        statuses.push(status);
    }
    assert!(
        statuses.contains(&200),
        "one login was hashed: {statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "the rest were refused, not queued: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
}
