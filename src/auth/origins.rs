//! Lists of origins (`ALLOWED_ORIGINS`, `CORS_ALLOWED_ORIGINS`), compared
//! case-insensitively (scheme and host are) and without a trailing slash.

use hyper::header::{HeaderValue, ORIGIN};
use hyper::Request;

/// A configured list of origins; empty when unset.
#[derive(Clone, Debug, Default)]
pub struct Origins(Vec<String>);

impl Origins {
    pub fn new<S: AsRef<str>>(origins: impl IntoIterator<Item = S>) -> Self {
        Self(
            origins
                .into_iter()
                .map(|origin| normalize(origin.as_ref()))
                .filter(|origin| !origin.is_empty())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an `Origin` header names one of the list.
    pub fn lists(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|origin| self.0.contains(&normalize(origin)))
    }

    /// The `ALLOWED_ORIGINS` rule: whether a request (REST or the upgrade)
    /// may proceed. Browsers send `Origin` on every upgrade and on every
    /// cross-site or non-GET request, and any origin not listed is
    /// refused, `null` included. A request without one is not a browser's
    /// cross-site request (service and mobile clients), and such a client
    /// could send any origin anyway, so the list does not apply to it; nor
    /// does an empty list.
    pub fn admit<B>(&self, request: &Request<B>) -> bool {
        self.is_empty()
            || request
                .headers()
                .get(ORIGIN)
                .is_none_or(|origin| self.lists(origin))
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_matched_exactly_but_case_and_slash_insensitively() {
        let upgrade = |origin: Option<&str>| {
            let mut builder = Request::builder().uri("/ws");
            if let Some(origin) = origin {
                builder = builder.header(ORIGIN, origin);
            }
            builder.body(()).unwrap()
        };
        let open = Origins::new(Vec::<String>::new());
        assert!(open.admit(&upgrade(Some("https://evil.example"))));
        let origins = Origins::new(["https://App.example.com/", "http://localhost:3000"]);
        for allowed in [
            "https://app.example.com",
            "HTTPS://APP.EXAMPLE.COM/",
            "http://localhost:3000",
        ] {
            assert!(origins.admit(&upgrade(Some(allowed))), "{allowed}");
        }
        for refused in [
            "https://app.example.com.evil.example",
            "http://app.example.com",
            "http://localhost:3001",
            "null",
            "",
        ] {
            assert!(!origins.admit(&upgrade(Some(refused))), "{refused}");
        }
        assert!(origins.admit(&upgrade(None)), "not a browser");
    }
}
