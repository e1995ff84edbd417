//! `POST /v1/auth/token` and `GET /.well-known/jwks.json`.
//!
//! The password check (argon2id) runs on the blocking pool through the lifecycle,
//! behind a semaphore taken with `try_acquire`: when every permit is busy the login
//! gets 503 + `Retry-After` at once, so a login flood cannot starve the async workers
//! nor build a queue. An unknown email is checked against a dummy hash, so it fails
//! with the same error after about the same time as a wrong password.

use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::{ApiError, AppJson},
    state::AppState,
};

/// Routes under `/v1/auth` (rate limited).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/token", post(issue_token))
}

/// Routes that are not rate limited.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

const WRONG_CREDENTIALS: &str = "wrong email or password";

/// Checked when the email is unknown, so that both failures cost the same: an argon2id
/// hash of a password nobody has, with the default parameters (m=19456 KiB, t=2, p=1)
/// that real hashes use (`dummy_hash_costs_what_a_real_hash_costs` keeps them equal).
/// A constant rather than hashed at startup: hashing allocates 19 MiB, which a fresh
/// gateway would otherwise keep resident while idle.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$PXENQoSOKQTiq/MvI8QPpg$grv4Yq27LnYo7a0YnhGaLzSC3xAgHN6HgcFZuNPManY";

async fn issue_token(
    State(state): State<AppState>,
    AppJson(credentials): AppJson<Credentials>,
) -> Result<Json<TokenResponse>, ApiError> {
    if credentials.email.len() > 320 || credentials.password.len() > 1024 {
        return Err(ApiError::Unprocessable("email or password too long".into()));
    }
    // Take the permit before anything else: a flood is refused before it costs a
    // database query.
    let permit = std::sync::Arc::clone(&state.hash_permits)
        .try_acquire_owned()
        .map_err(|_| {
            metrics::counter!("gateway_login_shed_total").increment(1);
            ApiError::Overloaded {
                retry_after: Duration::from_secs(1),
            }
        })?;

    let email = credentials.email.trim().to_lowercase();
    // Postgres text cannot hold NUL: such an email names no user (asking would be a query
    // error, a 500), so it fails like any unknown email, after the same dummy check.
    let user: Option<(Uuid, String)> = if email.contains('\0') {
        None
    } else {
        sqlx::query_as("select id, password_hash from users where email = $1")
            .bind(&email)
            .fetch_optional(&state.db)
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("looking up a user")))?
    };

    let (user_id, hash) = match user {
        Some((id, hash)) => (Some(id), hash),
        None => (None, DUMMY_HASH.to_owned()),
    };
    let password = credentials.password;
    let verified = state
        .lifecycle
        .spawn_blocking(move || {
            // The permit is released when the hash is done, even if the client has gone.
            let _permit = permit;
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("password check task")))?;

    match user_id {
        Some(id) if verified => {
            metrics::counter!("gateway_logins_total", "outcome" => "success").increment(1);
            Ok(Json(TokenResponse {
                access_token: state.signer.issue(id),
                token_type: "Bearer",
                expires_in: state.signer.ttl().as_secs(),
            }))
        }
        _ => {
            metrics::counter!("gateway_logins_total", "outcome" => "failure").increment(1);
            Err(ApiError::Unauthorized(WRONG_CREDENTIALS))
        }
    }
}

async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.verifier.jwks())
}

#[cfg(test)]
mod tests {
    use argon2::{Algorithm, Params, PasswordHash};

    #[test]
    fn dummy_hash_costs_what_a_real_hash_costs() {
        let dummy = PasswordHash::new(super::DUMMY_HASH).expect("a PHC string");
        assert_eq!(dummy.algorithm, Algorithm::Argon2id.ident());
        let params = Params::try_from(&dummy).expect("argon2 parameters");
        let default = Params::default();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
    }
}
