//! Tokens for shop: Ed25519-signed JWTs (`alg: EdDSA`).
//!
//! The gateway holds the private key and issues tokens ([`TokenSigner`]); every service
//! holds only public keys and verifies every token itself ([`TokenVerifier`]): nothing is
//! trusted just because it came through the gateway.
//!
//! Key rotation: a verifier accepts several public keys at once, each identified by its
//! `kid`, the RFC 7638 JWK thumbprint of the key. A signer stamps its `kid` in the token
//! header, so during a rotation the old and the new key are both valid until the old
//! one's tokens have expired. See `docs/operations.md`.
//!
//! [`keys`] loads the signer and the verifier from the key settings, falling back to the
//! development keys of `deploy/dev-keys`.

use std::{
    fmt,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub mod keys;

/// `iss` of every token.
pub const ISSUER: &str = "shop-gateway";
/// `aud` of every token.
pub const AUDIENCE: &str = "shop";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The claims of a shop access token (API.md, "Identity").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: Uuid,
}

/// Why a key or a token was refused. The messages are safe to show to a client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not an Ed25519 key in PEM format")]
    BadKey(String),
    #[error("no public key configured")]
    NoKeys,
    #[error(
        "the signing key's public half is not among AUTH_PUBLIC_KEY_FILE: issued tokens would not verify"
    )]
    SignerNotVerifiable,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    #[error("the token is invalid")]
    Invalid,
}

/// One Ed25519 public key and its `kid`.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    raw: [u8; 32],
    decoding: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish()
    }
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SPKI) holding an Ed25519 key.
    pub fn from_pem(pem: &str, name: &str) -> Result<Self, AuthError> {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|_| AuthError::BadKey(name.to_owned()))?;
        Self::from_verifying_key(&key, name)
    }

    fn from_verifying_key(
        key: &ed25519_dalek::VerifyingKey,
        name: &str,
    ) -> Result<Self, AuthError> {
        let pem = key
            .to_public_key_pem(Default::default())
            .map_err(|_| AuthError::BadKey(name.to_owned()))?;
        let decoding = DecodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|_| AuthError::BadKey(name.to_owned()))?;
        let raw = key.to_bytes();
        Ok(Self {
            kid: thumbprint(&raw),
            raw,
            decoding,
        })
    }

    /// The key id: the RFC 7638 JWK thumbprint of this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// This key as a JWK, for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.raw),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

/// RFC 7638 thumbprint of an Ed25519 JWK: the members in lexicographic order, no spaces.
fn thumbprint(raw: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(raw)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|source| AuthError::KeyFile {
        path: path.display().to_string(),
        source,
    })
}

/// Verifies tokens against a set of public keys (several during a key rotation).
///
/// Cheap to clone (reference counts): middleware clones it for every request.
///
/// Verified tokens are remembered for a short while ([`VERIFIED_CACHE_TTL`], at most
/// [`VERIFIED_CACHE_CAPACITY`] of them): a client sends the same token with every
/// request, and an Ed25519 signature check costs tens of microseconds, about a quarter
/// of the gateway's CPU on order placement. Only tokens that passed every check are
/// remembered, keyed by the whole token (so a tampered token is a miss), and a hit still
/// checks `exp`: a remembered token expires exactly when it would have.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: std::sync::Arc<[PublicKey]>,
    validation: std::sync::Arc<Validation>,
    verified: moka::sync::Cache<String, Claims>,
}

/// How long a verified token is remembered (its `exp` is checked on every hit).
pub const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(60);
/// How many verified tokens are remembered at most (a few MiB).
pub const VERIFIED_CACHE_CAPACITY: u64 = 10_000;

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys)
            .field("remembered", &self.verified.entry_count())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier that accepts tokens signed by any of `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Result<Self, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        // The algorithm is pinned: `alg: none`, HS256 and every other algorithm are refused
        // before any signature is looked at.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        Ok(Self {
            keys: keys.into(),
            validation: std::sync::Arc::new(validation),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .time_to_live(VERIFIED_CACHE_TTL)
                .build(),
        })
    }

    /// Reads a comma-separated list of PEM files (the `AUTH_PUBLIC_KEY_FILE` format).
    pub fn from_pem_files(list: &str) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        for path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            keys.push(PublicKey::from_pem(&read(Path::new(path))?, path)?);
        }
        Self::new(keys)
    }

    /// The accepted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The JWK set of the accepted keys.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.keys.iter().map(PublicKey::jwk).collect::<Vec<_>>() })
    }

    /// Checks signature, algorithm, `iss`, `aud`, `exp`, `nbf`; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Some(claims) = self.verified.get(token) {
            let now = jsonwebtoken::get_current_timestamp();
            if now > claims.exp.saturating_add(LEEWAY.as_secs()) {
                self.verified.invalidate(token);
                return Err(AuthError::Expired);
            }
            return Ok(claims);
        }
        let claims = self.verify_signature_and_claims(token)?;
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    fn verify_signature_and_claims(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid);
        }
        // With a `kid`, only that key may have signed; without one (tokens from an older
        // signer), try each key.
        let candidates: Vec<&PublicKey> = match header.kid.as_deref() {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or(AuthError::UnknownKey)?;
                vec![key]
            }
            None => self.keys.iter().collect(),
        };
        let mut last = AuthError::Invalid;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                            AuthError::Malformed
                        }
                        _ => AuthError::Invalid,
                    };
                }
            }
        }
        Err(last)
    }
}

/// Issues tokens with one private key (the gateway's).
#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    public: PublicKey,
    ttl: Duration,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TokenSigner")
            .field("kid", &self.public.kid)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Parses a PEM `PRIVATE KEY` (PKCS#8) holding an Ed25519 key.
    pub fn from_pem(pem: &str, name: &str, ttl: Duration) -> Result<Self, AuthError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|_| AuthError::BadKey(name.to_owned()))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|_| AuthError::BadKey(name.to_owned()))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let public = PublicKey::from_verifying_key(&key.verifying_key(), name)?;
        Ok(Self {
            encoding,
            public,
            ttl,
        })
    }

    /// Reads the private key from a PEM file (the `AUTH_PRIVATE_KEY_FILE` format).
    pub fn from_pem_file(path: &Path, ttl: Duration) -> Result<Self, AuthError> {
        Self::from_pem(&read(path)?, &path.display().to_string(), ttl)
    }

    /// The public half of the signing key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// How long an issued token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `user_id`, valid from now for the signer's TTL.
    pub fn issue(&self, user_id: Uuid) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign(&Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user_id,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: Uuid::new_v4(),
        })
    }

    /// Signs arbitrary claims (tests use it to forge expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("encoding JSON claims with an Ed25519 key cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keys::{
        DEV_PRIVATE_KEY as PRIVATE, DEV_PUBLIC_KEY as PUBLIC, DEV_PUBLIC_KEY_NEXT as PUBLIC_NEXT,
    };
    // Only tests sign with the next key: the services never fall back to it.
    const PRIVATE_NEXT: &str = include_str!("../../../deploy/dev-keys/private-next.pem");

    fn signer(pem: &str) -> TokenSigner {
        TokenSigner::from_pem(pem, "test", Duration::from_secs(600)).unwrap()
    }

    fn verifier(pems: &[&str]) -> TokenVerifier {
        TokenVerifier::new(
            pems.iter()
                .map(|p| PublicKey::from_pem(p, "test").unwrap())
                .collect(),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_token_issued_by_the_signer_verifies_and_carries_the_user() {
        let user = Uuid::new_v4();
        let token = signer(PRIVATE).issue(user);
        let claims = verifier(&[PUBLIC]).verify(&token).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
    }

    #[test]
    fn a_remembered_token_verifies_again_but_a_tampered_copy_never_does() {
        let v = verifier(&[PUBLIC]);
        let token = signer(PRIVATE).issue(Uuid::new_v4());
        let first = v.verify(&token).unwrap();
        assert_eq!(
            v.verify(&token).unwrap(),
            first,
            "the second check is a hit"
        );
        assert_eq!(v.clone().verify(&token).unwrap(), first, "clones share it");

        // Same header and payload, another signature: a miss, checked and refused.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut forged = signature.as_bytes().to_vec();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{signed}.{}", String::from_utf8(forged).unwrap());
        assert!(v.verify(&forged).is_err());
    }

    #[test]
    fn the_signer_kid_is_the_thumbprint_of_its_public_key() {
        assert_eq!(
            signer(PRIVATE).public_key().kid(),
            PublicKey::from_pem(PUBLIC, "p").unwrap().kid()
        );
        assert_ne!(
            signer(PRIVATE).public_key().kid(),
            signer(PRIVATE_NEXT).public_key().kid()
        );
    }

    #[test]
    fn during_a_rotation_tokens_of_both_keys_verify() {
        let v = verifier(&[PUBLIC, PUBLIC_NEXT]);
        v.verify(&signer(PRIVATE).issue(Uuid::new_v4())).unwrap();
        v.verify(&signer(PRIVATE_NEXT).issue(Uuid::new_v4()))
            .unwrap();
    }

    #[test]
    fn a_token_from_an_unknown_key_is_refused() {
        let err = verifier(&[PUBLIC])
            .verify(&signer(PRIVATE_NEXT).issue(Uuid::new_v4()))
            .unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let s = signer(PRIVATE);
        let v = verifier(&[PUBLIC]);
        let base = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::new_v4(),
            iat: now(),
            nbf: now(),
            exp: now() + 600,
            jti: Uuid::new_v4(),
        };
        let expired = Claims {
            exp: now() - 3600,
            ..base.clone()
        };
        assert!(matches!(
            v.verify(&s.sign(&expired)),
            Err(AuthError::Expired)
        ));
        let future = Claims {
            nbf: now() + 3600,
            ..base.clone()
        };
        assert!(matches!(
            v.verify(&s.sign(&future)),
            Err(AuthError::NotYetValid)
        ));
        let wrong_iss = Claims {
            iss: "someone-else".into(),
            ..base.clone()
        };
        assert!(v.verify(&s.sign(&wrong_iss)).is_err());
        let wrong_aud = Claims {
            aud: "other".into(),
            ..base
        };
        assert!(v.verify(&s.sign(&wrong_aud)).is_err());
    }

    #[test]
    fn alg_none_hs256_and_tampered_tokens_are_refused() {
        let v = verifier(&[PUBLIC]);
        let token = signer(PRIVATE).issue(Uuid::new_v4());
        let parts: Vec<&str> = token.split('.').collect();

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(v.verify(&format!("{none_header}.{}.", parts[1])).is_err());

        // HS256 "signed" with the public key bytes: the classic algorithm-confusion attack.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &v.verify(&token).unwrap(),
            &EncodingKey::from_secret(PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&hs).is_err());

        let mut claims = v.verify(&token).unwrap();
        claims.sub = Uuid::new_v4();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(
            v.verify(&format!("{}.{forged_payload}.{}", parts[0], parts[2]))
                .is_err()
        );
        assert!(v.verify("not a token").is_err());
    }

    #[test]
    fn the_jwks_publishes_every_accepted_key() {
        let v = verifier(&[PUBLIC, PUBLIC_NEXT]);
        let jwks = v.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kty"], "OKP");
        assert_eq!(keys[0]["kid"], v.keys()[0].kid());
    }

    #[test]
    fn debug_output_never_contains_key_material() {
        let s = signer(PRIVATE);
        let shown = format!("{s:?}");
        assert!(!shown.contains("PRIVATE"));
    }
}
