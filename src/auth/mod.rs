//! Who may connect and what they may do: API keys (`keys`) and access
//! tokens (`tokens`) for REST requests and the WebSocket upgrade, the
//! [`Permissions`] they grant, and the [`Origins`] browsers may use the
//! broker from.

mod keys;
mod origins;
mod permissions;
mod tokens;

pub use origins::Origins;
pub use permissions::Permissions;
pub use tokens::{mint_hs256, Claims, TokenError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::header::AUTHORIZATION;
use hyper::Request;

use crate::config::Config;
use crate::metrics::Metrics;
use keys::ApiKeys;
use tokens::TokenVerifier;

/// The header carrying the key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The scheme of `Authorization: Bearer <key or token>`.
const BEARER_SCHEME: &str = "bearer";
/// `WWW-Authenticate` on a 401: a key in `X-API-Key`, or a key or token as
/// a bearer token.
pub const CHALLENGE: &str =
    "ApiKey realm=\"ringcast\", header=\"X-API-Key\", Bearer realm=\"ringcast\"";
/// The query parameters browsers use on the upgrade, where they cannot set
/// headers.
pub const API_KEY_QUERY: &str = "api_key";
pub const TOKEN_QUERY: &str = "token";

/// Identifies a credential for per-credential limits without keeping it:
/// a digest of the API key, or of the token's subject (so a refreshed
/// token shares its predecessor's bucket), or of the token itself.
pub type CredentialId = keys::Digest;

/// What an authenticated request or connection may do.
#[derive(Clone, Debug)]
pub struct Grant {
    pub permissions: Arc<Permissions>,
    /// When the token expires; `None` for an API key or without auth.
    pub expires_at: Option<SystemTime>,
    /// `None` without authentication.
    pub credential: Option<CredentialId>,
    /// The token's `sub`, by which the server API finds a user's
    /// connections; `None` for an API key, without auth, or without `sub`.
    pub subject: Option<Arc<str>>,
}

impl Grant {
    /// How long the token stays in force, with `leeway` past its expiry
    /// as verification allows; `None` for an API key or without auth.
    pub fn expires_in(&self, leeway: Duration) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_add(leeway)
        })
    }
}

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key or token")]
    Missing,
    #[error("invalid API key")]
    BadKey,
    #[error("access tokens are not configured (JWT_SECRET or JWT_PUBLIC_KEY)")]
    TokensOff,
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Checks credentials: API keys, and tokens when a JWT key is configured.
/// With neither, authentication is off and everyone has every permission.
#[derive(Debug)]
pub struct Authenticator {
    keys: ApiKeys,
    tokens: Option<TokenVerifier>,
    everything: Arc<Permissions>,
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            keys: ApiKeys::new(&config.api_key),
            tokens: TokenVerifier::from_config(config)?,
            everything: Arc::new(Permissions::all()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.keys.enabled() || self.tokens.is_some()
    }

    /// A REST request's grant: its credential must be in a header.
    pub fn rest<B>(&self, request: &Request<B>) -> Result<Grant, AuthError> {
        if !self.enabled() {
            return Ok(self.open());
        }
        match header_credential(request) {
            Some(credential) => self.credential(credential),
            None => Err(AuthError::Missing),
        }
    }

    /// An upgrade's (or a browser page's) grant: the credential may be in
    /// a header or, for browsers, in `?api_key=` or `?token=`. A header,
    /// when sent, decides.
    pub fn upgrade<B>(&self, request: &Request<B>) -> Result<Grant, AuthError> {
        if !self.enabled() {
            return Ok(self.open());
        }
        if let Some(credential) = header_credential(request) {
            return self.credential(credential);
        }
        let query = request.uri().query().unwrap_or_default().as_bytes();
        for (name, value) in form_urlencoded::parse(query) {
            match &*name {
                API_KEY_QUERY => return self.key(value.as_bytes()),
                TOKEN_QUERY => return self.token(&value),
                _ => {}
            }
        }
        Err(AuthError::Missing)
    }

    /// The grant of a token alone, as the WebSocket `auth` frame sends one.
    pub fn token(&self, token: &str) -> Result<Grant, AuthError> {
        let verifier = self.tokens.as_ref().ok_or(AuthError::TokensOff)?;
        let verified = verifier.verify(token)?;
        let credential = keys::digest(match &verified.subject {
            Some(subject) => subject.as_bytes(),
            None => token.as_bytes(),
        });
        Ok(Grant {
            permissions: Arc::new(verified.permissions),
            expires_at: Some(verified.expires_at),
            credential: Some(credential),
            subject: verified.subject.map(Arc::from),
        })
    }

    fn key(&self, key: &[u8]) -> Result<Grant, AuthError> {
        let credential = self.keys.check(key).ok_or(AuthError::BadKey)?;
        Ok(Grant {
            credential: Some(credential),
            ..self.open()
        })
    }

    fn credential(&self, credential: HeaderCredential<'_>) -> Result<Grant, AuthError> {
        match credential {
            HeaderCredential::Key(key) => self.key(key),
            // A bearer credential is a key when it is one, and otherwise
            // must be a token (when tokens are configured).
            HeaderCredential::Bearer(bearer) => match self.key(bearer) {
                Err(AuthError::BadKey) if self.tokens.is_some() => {
                    let token = std::str::from_utf8(bearer)
                        .map_err(|_| TokenError::Malformed("not UTF-8".into()))?;
                    self.token(token)
                }
                keyed => keyed,
            },
        }
    }

    fn open(&self) -> Grant {
        Grant {
            permissions: self.everything.clone(),
            expires_at: None,
            credential: None,
            subject: None,
        }
    }
}

/// Counts and logs a request refused for its credential. The credential
/// itself is never logged.
pub fn record_failure(metrics: &Metrics, peer: SocketAddr, path: &str, why: &AuthError) {
    metrics.record_auth_failure();
    tracing::warn!(%peer, path, %why, "authentication failed");
}

/// A credential in a header: `X-API-Key: <key>` (a key only), or else
/// `Authorization: Bearer <key or token>`.
enum HeaderCredential<'a> {
    Key(&'a [u8]),
    Bearer(&'a [u8]),
}

/// The one place headers are read for a credential. The bearer scheme is
/// case-insensitive, as RFC 9110 has it.
fn header_credential<B>(request: &Request<B>) -> Option<HeaderCredential<'_>> {
    let headers = request.headers();
    if let Some(key) = headers.get(API_KEY_HEADER) {
        return Some(HeaderCredential::Key(key.as_bytes()));
    }
    let authorization = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = authorization.split_at(authorization.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(BEARER_SCHEME.as_bytes())
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
        .map(HeaderCredential::Bearer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_only(keys: &[&str]) -> Authenticator {
        let mut args = vec!["--api-key".to_owned(), keys.join(",")];
        if keys.is_empty() {
            args.clear();
        }
        Authenticator::new(&Config::from_args(args).unwrap()).unwrap()
    }

    fn request(uri: &str, header: Option<(&str, &str)>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn disabled_without_keys_or_tokens() {
        let auth = keys_only(&[]);
        assert!(!auth.enabled());
        let grant = auth.rest(&request("/topics", None)).unwrap();
        assert!(grant.permissions.is_admin() && grant.credential.is_none());
    }

    #[test]
    fn keys_in_headers_and_query() {
        let auth = keys_only(&["alpha", "beta"]);
        let key = Some((API_KEY_HEADER, "beta"));
        assert!(auth.rest(&request("/topics", key)).is_ok());
        assert!(auth.rest(&request("/topics?api_key=beta", None)).is_err());
        assert!(auth.upgrade(&request("/ws?x=1&api_key=beta", None)).is_ok());
        assert!(auth.upgrade(&request("/ws?api_key=al%70ha", None)).is_ok());
        assert!(auth.upgrade(&request("/ws?api_key=wrong", None)).is_err());
        let wrong = Some((API_KEY_HEADER, "wrong"));
        assert!(auth.upgrade(&request("/ws?api_key=beta", wrong)).is_err());
        assert!(matches!(
            auth.upgrade(&request("/ws?token=x", None)),
            Err(AuthError::TokensOff)
        ));
    }

    #[test]
    fn a_bearer_token_is_a_key_too() {
        let auth = keys_only(&["alpha"]);
        let bearer = |value| request("/topics", Some(("authorization", value)));
        for accepted in ["Bearer alpha", "bearer alpha", "BEARER   alpha "] {
            assert!(auth.rest(&bearer(accepted)).is_ok(), "{accepted}");
            assert!(auth.upgrade(&bearer(accepted)).is_ok(), "{accepted}");
        }
        for refused in [
            "Bearer beta",
            "Basic alpha",
            "Bearer",
            "Bearer ",
            "alpha",
            "Beareralpha",
        ] {
            assert!(auth.rest(&bearer(refused)).is_err(), "{refused}");
        }
        let both = Request::builder()
            .header(API_KEY_HEADER, "wrong")
            .header(AUTHORIZATION, "Bearer alpha")
            .body(())
            .unwrap();
        assert!(auth.rest(&both).is_err(), "X-API-Key, when sent, decides");
    }
}
