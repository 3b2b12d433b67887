//! Who may connect: API keys for REST requests and the WebSocket upgrade,
//! and the origins browsers may upgrade from.

use std::net::SocketAddr;

use hyper::header::{AUTHORIZATION, ORIGIN};
use hyper::Request;
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;

/// The header carrying the key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The scheme of `Authorization: Bearer <key>`, the other place a key may be.
const BEARER_SCHEME: &str = "bearer";
/// `WWW-Authenticate` on a 401: a key in `X-API-Key`, or as a bearer token.
pub const CHALLENGE: &str =
    "ApiKey realm=\"ringcast\", header=\"X-API-Key\", Bearer realm=\"ringcast\"";
/// The query parameter browsers use on the upgrade, where they cannot set headers.
pub const API_KEY_QUERY: &str = "api_key";

/// The accepted keys, kept as SHA-256 digests; empty means authentication
/// is off.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys(Vec<KeyDigest>);

/// Keys are compared as digests: every digest has the same length, so the
/// comparison's time cannot tell a key's length (a constant-time compare of
/// slices returns early when the lengths differ).
type KeyDigest = [u8; 32];

fn digest(key: &[u8]) -> KeyDigest {
    ring::digest::digest(&ring::digest::SHA256, key)
        .as_ref()
        .try_into()
        .expect("SHA-256 digests are 32 bytes")
}

impl ApiKeys {
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        Self(
            keys.into_iter()
                .filter_map(|key| {
                    let key = key.as_ref().trim();
                    (!key.is_empty()).then(|| digest(key.as_bytes()))
                })
                .collect(),
        )
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Compares against every key in constant time, so timing tells nothing
    /// about which key, how much of one, or how long a key matched.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let candidate = digest(candidate);
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&candidate)
            })
            .into()
    }

    /// Whether a REST request may proceed: the key must be in the header.
    pub fn allows_rest<B>(&self, request: &Request<B>) -> bool {
        !self.enabled() || header_key(request).is_some_and(|key| self.accepts(key))
    }

    /// Whether an upgrade may proceed: the key may be in the header or,
    /// for browsers, in `?api_key=`.
    pub fn allows_upgrade<B>(&self, request: &Request<B>) -> bool {
        if !self.enabled() {
            return true;
        }
        if let Some(key) = header_key(request) {
            return self.accepts(key);
        }
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .any(|(name, value)| name == API_KEY_QUERY && self.accepts(value.as_bytes()))
    }
}

/// Counts and logs a request refused for its credential. The key itself is
/// never logged.
pub fn record_failure(metrics: &Metrics, peer: SocketAddr, path: &str) {
    metrics.record_auth_failure();
    tracing::warn!(%peer, path, "authentication failed: missing or invalid API key");
}

/// The credential a request carries in a header: `X-API-Key: <key>`, or
/// else `Authorization: Bearer <key>` (the scheme is case-insensitive, as
/// RFC 9110 has it). The one place headers are read for a key.
pub fn header_key<B>(request: &Request<B>) -> Option<&[u8]> {
    let headers = request.headers();
    if let Some(key) = headers.get(API_KEY_HEADER) {
        return Some(key.as_bytes());
    }
    let authorization = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = authorization.split_at(authorization.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(BEARER_SCHEME.as_bytes())
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

/// The origins browsers may open a WebSocket from; empty allows all.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    pub fn new<S: AsRef<str>>(origins: impl IntoIterator<Item = S>) -> Self {
        Self(
            origins
                .into_iter()
                .map(|origin| normalize_origin(origin.as_ref()))
                .filter(|origin| !origin.is_empty())
                .collect(),
        )
    }

    /// Whether a request (REST or the upgrade) may proceed. Browsers send
    /// `Origin` on every upgrade and on every cross-site or non-GET
    /// request, and any origin not listed is refused, `null` included. A
    /// request without one is not a browser's cross-site request (service
    /// and mobile clients), and such a client could send any origin anyway,
    /// so the list does not apply to it.
    pub fn allows<B>(&self, request: &Request<B>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        match request.headers().get(ORIGIN) {
            None => true,
            Some(origin) => origin
                .to_str()
                .is_ok_and(|origin| self.0.contains(&normalize_origin(origin))),
        }
    }
}

/// Origins compare case-insensitively (scheme and host are) and without a
/// trailing slash.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, header: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(key) = header {
            builder = builder.header(API_KEY_HEADER, key);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn disabled_without_keys() {
        let keys = ApiKeys::new(Vec::<String>::new());
        assert!(!keys.enabled());
        assert!(keys.allows_rest(&request("/topics", None)));
    }

    #[test]
    fn any_listed_key_is_accepted() {
        let keys = ApiKeys::new(["alpha", " beta ", ""]);
        assert!(keys.accepts(b"alpha") && keys.accepts(b"beta"));
        assert!(!keys.accepts(b"alph") && !keys.accepts(b"") && !keys.accepts(b"alphax"));
        assert!(keys.allows_rest(&request("/topics", Some("beta"))));
        assert!(!keys.allows_rest(&request("/topics?api_key=beta", None)));
        assert!(keys.allows_upgrade(&request("/ws?x=1&api_key=beta", None)));
        assert!(keys.allows_upgrade(&request("/ws?api_key=al%70ha", None)));
        assert!(!keys.allows_upgrade(&request("/ws?api_key=wrong", None)));
        assert!(!keys.allows_upgrade(&request("/ws?api_key=beta", Some("wrong"))));
    }

    #[test]
    fn a_bearer_token_is_a_key_too() {
        let keys = ApiKeys::new(["alpha"]);
        let with_authorization = |value: &str| {
            Request::builder()
                .uri("/topics")
                .header(AUTHORIZATION, value)
                .body(())
                .unwrap()
        };
        for accepted in ["Bearer alpha", "bearer alpha", "BEARER   alpha "] {
            let request = with_authorization(accepted);
            assert!(keys.allows_rest(&request), "{accepted}");
            assert!(keys.allows_upgrade(&request), "{accepted}");
        }
        for refused in [
            "Bearer beta",
            "Basic alpha",
            "Bearer",
            "Bearer ",
            "alpha",
            "Beareralpha",
        ] {
            assert!(!keys.allows_rest(&with_authorization(refused)), "{refused}");
        }
        let both = Request::builder()
            .header(API_KEY_HEADER, "wrong")
            .header(AUTHORIZATION, "Bearer alpha")
            .body(())
            .unwrap();
        assert!(!keys.allows_rest(&both), "X-API-Key, when sent, decides");
    }

    #[test]
    fn origins_are_matched_exactly_but_case_and_slash_insensitively() {
        let upgrade = |origin: Option<&str>| {
            let mut builder = Request::builder().uri("/ws");
            if let Some(origin) = origin {
                builder = builder.header(ORIGIN, origin);
            }
            builder.body(()).unwrap()
        };
        let open = AllowedOrigins::new(Vec::<String>::new());
        assert!(open.allows(&upgrade(Some("https://evil.example"))));
        let origins = AllowedOrigins::new(["https://App.example.com/", "http://localhost:3000"]);
        for allowed in [
            "https://app.example.com",
            "HTTPS://APP.EXAMPLE.COM/",
            "http://localhost:3000",
        ] {
            assert!(origins.allows(&upgrade(Some(allowed))), "{allowed}");
        }
        for refused in [
            "https://app.example.com.evil.example",
            "http://app.example.com",
            "http://localhost:3001",
            "null",
            "",
        ] {
            assert!(!origins.allows(&upgrade(Some(refused))), "{refused}");
        }
        assert!(origins.allows(&upgrade(None)), "not a browser");
    }
}
