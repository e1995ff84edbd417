//! Where the keys come from: the PEM files named by the settings (`AUTH_PRIVATE_KEY_FILE`,
//! `AUTH_PUBLIC_KEY_FILE`), or, when a setting is unset, the development keys of
//! `deploy/dev-keys` with a loud warning.
//!
//! The development keys are in the repository, so anyone can mint tokens for them: they
//! exist so that `cargo run` and the tests work with no setup, never for production.
//! This module is the one place that embeds them.

use std::{path::Path, time::Duration};

use crate::{AuthError, PublicKey, TokenSigner, TokenVerifier};

/// The development private key (`deploy/dev-keys/private.pem`). Public knowledge.
pub const DEV_PRIVATE_KEY: &str = include_str!("../../../deploy/dev-keys/private.pem");
/// The development public key (`deploy/dev-keys/public.pem`), the half of [`DEV_PRIVATE_KEY`].
pub const DEV_PUBLIC_KEY: &str = include_str!("../../../deploy/dev-keys/public.pem");
/// The next development public key (`deploy/dev-keys/public-next.pem`), for rehearsing a
/// key rotation locally.
pub const DEV_PUBLIC_KEY_NEXT: &str = include_str!("../../../deploy/dev-keys/public-next.pem");

/// The gateway's keys: the signer from `private_key_file` and the verifier from
/// `public_key_files` (comma-separated, the `AUTH_PUBLIC_KEY_FILE` format); each falls
/// back to the development keys (current and next public key) when unset.
///
/// Refuses a signer whose public half is not among the verifier's keys: every token it
/// issued would then be refused, by the gateway and by every service.
pub fn signer_and_verifier(
    private_key_file: Option<&Path>,
    public_key_files: Option<&str>,
    ttl: Duration,
) -> Result<(TokenSigner, TokenVerifier), AuthError> {
    let signer = match private_key_file {
        Some(path) => TokenSigner::from_pem_file(path, ttl)?,
        None => {
            tracing::warn!(
                "AUTH_PRIVATE_KEY_FILE is not set: signing tokens with the DEVELOPMENT key from deploy/dev-keys. Never do this in production."
            );
            TokenSigner::from_pem(DEV_PRIVATE_KEY, "deploy/dev-keys/private.pem", ttl)?
        }
    };
    let verifier = match public_key_files {
        Some(list) => TokenVerifier::from_pem_files(list)?,
        None => {
            tracing::warn!(
                "AUTH_PUBLIC_KEY_FILE is not set: accepting tokens of the DEVELOPMENT keys from deploy/dev-keys."
            );
            TokenVerifier::new(vec![
                PublicKey::from_pem(DEV_PUBLIC_KEY, "deploy/dev-keys/public.pem")?,
                PublicKey::from_pem(DEV_PUBLIC_KEY_NEXT, "deploy/dev-keys/public-next.pem")?,
            ])?
        }
    };
    let kid = signer.public_key().kid();
    if !verifier.keys().iter().any(|k| k.kid() == kid) {
        return Err(AuthError::SignerNotVerifiable);
    }
    Ok((signer, verifier))
}

/// A service's verifier (a service only verifies): from `public_key_files`
/// (comma-separated, the `AUTH_PUBLIC_KEY_FILE` format), or, when unset, the current
/// development public key alone.
pub fn verifier(public_key_files: Option<&str>) -> Result<TokenVerifier, AuthError> {
    match public_key_files {
        Some(files) => TokenVerifier::from_pem_files(files),
        None => {
            tracing::warn!(
                "AUTH_PUBLIC_KEY_FILE is not set: using the DEVELOPMENT public key from \
                 deploy/dev-keys (anyone can mint tokens for it; never do this in production)"
            );
            TokenVerifier::new(vec![PublicKey::from_pem(
                DEV_PUBLIC_KEY,
                "development key",
            )?])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use uuid::Uuid;

    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    /// A file of `deploy/dev-keys`, as a settings value would name it.
    fn dev_key_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/dev-keys")
            .join(name)
    }

    fn dev_key_list(names: &[&str]) -> String {
        names
            .iter()
            .map(|n| dev_key_file(n).display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn with_no_key_settings_the_development_signer_issues_tokens_the_development_verifiers_accept()
    {
        let (signer, verifier) = signer_and_verifier(None, None, TTL).unwrap();
        let user = Uuid::new_v4();
        let token = signer.issue(user);
        assert_eq!(verifier.verify(&token).unwrap().sub, user);
        assert_eq!(verifier.keys().len(), 2, "the current and the next dev key");
        assert_eq!(signer.ttl(), TTL);

        // A service's fallback (the current dev key only) accepts the gateway's tokens.
        let service = super::verifier(None).unwrap();
        assert_eq!(service.keys().len(), 1);
        assert_eq!(service.verify(&token).unwrap().sub, user);
    }

    #[test]
    fn a_signer_whose_key_is_not_among_the_public_keys_is_refused() {
        let next_private = dev_key_file("private-next.pem");
        let only_current = dev_key_list(&["public.pem"]);
        let err = signer_and_verifier(Some(&next_private), Some(&only_current), TTL).unwrap_err();
        assert!(matches!(err, AuthError::SignerNotVerifiable), "{err:?}");

        // The development signer with a public key file that lacks its half: refused too.
        let only_next = dev_key_list(&["public-next.pem"]);
        let err = signer_and_verifier(None, Some(&only_next), TTL).unwrap_err();
        assert!(matches!(err, AuthError::SignerNotVerifiable), "{err:?}");
    }

    #[test]
    fn key_files_named_by_the_settings_are_used_instead_of_the_development_keys() {
        let next_private = dev_key_file("private-next.pem");
        let both = dev_key_list(&["public.pem", "public-next.pem"]);
        let (signer, verifier) =
            signer_and_verifier(Some(&next_private), Some(&both), TTL).unwrap();
        let next_kid = PublicKey::from_pem(DEV_PUBLIC_KEY_NEXT, "next").unwrap();
        assert_eq!(signer.public_key().kid(), next_kid.kid());
        verifier.verify(&signer.issue(Uuid::new_v4())).unwrap();

        // A service configured with the current key only refuses the next key's tokens.
        let service = super::verifier(Some(&dev_key_list(&["public.pem"]))).unwrap();
        let err = service.verify(&signer.issue(Uuid::new_v4())).unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
    }

    #[test]
    fn a_missing_key_file_is_an_error_naming_it() {
        let missing = dev_key_file("no-such-key.pem");
        let err = signer_and_verifier(Some(&missing), None, TTL).unwrap_err();
        assert!(matches!(err, AuthError::KeyFile { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-key.pem"), "{err}");
        let err = super::verifier(Some(&missing.display().to_string())).unwrap_err();
        assert!(matches!(err, AuthError::KeyFile { .. }), "{err:?}");
    }
}
