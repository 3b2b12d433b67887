//! Who may connect: API keys for REST requests and the WebSocket upgrade,
//! and the origins browsers may upgrade from.

use hyper::header::ORIGIN;
use hyper::Request;
use subtle::ConstantTimeEq;

/// The header carrying the key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The query parameter browsers use on the upgrade, where they cannot set headers.
pub const API_KEY_QUERY: &str = "api_key";

/// The accepted keys; empty means authentication is off.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys(Vec<Box<[u8]>>);

impl ApiKeys {
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        Self(
            keys.into_iter()
                .filter_map(|key| {
                    let key = key.as_ref().trim();
                    (!key.is_empty()).then(|| key.as_bytes().into())
                })
                .collect(),
        )
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Compares against every key in constant time, so timing tells nothing
    /// about which key, or how much of one, matched.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.as_ref().ct_eq(candidate)
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

fn header_key<B>(request: &Request<B>) -> Option<&[u8]> {
    request
        .headers()
        .get(API_KEY_HEADER)
        .map(|value| value.as_bytes())
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

    /// Whether an upgrade may proceed. Browsers always send `Origin` on an
    /// upgrade, and any origin not listed is refused, `null` included. A
    /// request without one is not from a browser (service and mobile
    /// clients), and such a client could send any origin anyway, so the
    /// list does not apply to it.
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
fn normalize_origin(origin: &str) -> String {
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
