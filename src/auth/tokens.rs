//! Access tokens: JWTs signed by the application's backend with
//! `JWT_SECRET` (HS256) or the private half of `JWT_PUBLIC_KEY` (RS256 or
//! ES256), carrying the holder's permissions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Permissions;
use crate::config::Config;

/// The claims ringcast reads; `nbf` and `aud` are checked by the validation.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Claims {
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// A verified token: who holds it, what it permits, until when.
#[derive(Debug)]
pub struct VerifiedToken {
    pub subject: Option<String>,
    pub permissions: Permissions,
    pub expires_at: SystemTime,
}

/// Why a token was refused; the message is the 401's and the `error`
/// frame's.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token audience does not match")]
    WrongAudience,
    #[error("token signature or algorithm not accepted")]
    BadSignature,
    #[error("malformed token: {0}")]
    Malformed(String),
}

/// Checks tokens against the one configured key and algorithm.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// The verifier `JWT_SECRET` or `JWT_PUBLIC_KEY` configures, if either
    /// is set; an unreadable or unusable key is an error.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let (key, algorithm) = match (&config.jwt_secret, &config.jwt_public_key) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err("set JWT_SECRET or JWT_PUBLIC_KEY, not both".into());
            }
            // An empty secret would let anyone sign tokens.
            (Some(secret), None) if secret.is_empty() => {
                return Err("JWT_SECRET is empty".into());
            }
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|err| format!("JWT_PUBLIC_KEY {}: {err}", path.display()))?;
                public_key(&pem)
                    .map_err(|err| format!("JWT_PUBLIC_KEY {}: {err}", path.display()))?
            }
        };
        // Only the configured algorithm: a token naming another, `none`
        // included, or HMAC-signed with the public key, is refused.
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["exp", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp"]);
            }
        }
        Ok(Some(Self { key, validation }))
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| match err.into_kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                other => TokenError::Malformed(format!("{other:?}")),
            })?
            .claims;
        Ok(VerifiedToken {
            permissions: Permissions::new(&claims.subscribe, &claims.publish, claims.admin),
            subject: claims.sub,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

/// A PEM public key and the algorithm it implies: RSA keys sign RS256,
/// P-256 keys ES256.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    DecodingKey::from_ec_pem(pem)
        .map(|key| (key, Algorithm::ES256))
        .map_err(|_| "not a PEM RSA or EC (P-256) public key".into())
}

/// Signs `claims` with an HS256 secret: what `ringcast token` prints.
pub fn mint_hs256(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}
