//! The browser pages: `/docs` (Swagger UI over `/openapi.json`) and
//! `/dashboard` (live totals and topics from `/stats`, a topic's tail over
//! `/ws` through the `ringcast-client` package, a publish form). Their files
//! are compiled into the binary and the pages' Content-Security-Policy lets
//! them load nothing from anywhere else.
//!
//! The two pages need a key like every REST endpoint but `/health`, and also
//! take it as `?api_key=`, since a browser's address bar cannot send a
//! header. Their scripts and styles under `/assets/` hold no data of the
//! server and are public, so the browser can load them without a key.

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};

use crate::http::response::Body;

/// One file served at a fixed path.
pub struct Page {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    kind: Kind,
    etag: OnceLock<HeaderValue>,
}

enum Kind {
    /// A page: needs a key, and is held to its policy.
    Html { policy: &'static str },
    /// A script or style sheet: public.
    Asset,
}

/// Swagger UI sets inline styles, and shows images as `data:` URLs.
const DOCS_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";
/// `connect-src 'self'` covers the page's own `/ws`.
const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const fn page(path: &'static str, body: &'static [u8], policy: &'static str) -> Page {
    Page {
        path,
        content_type: HTML,
        body,
        kind: Kind::Html { policy },
        etag: OnceLock::new(),
    }
}

const fn asset(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Page {
    Page {
        path,
        content_type,
        body,
        kind: Kind::Asset,
        etag: OnceLock::new(),
    }
}

static PAGES: [Page; 10] = [
    page(
        "/docs",
        include_bytes!("../../pages/docs.html"),
        DOCS_POLICY,
    ),
    page(
        "/dashboard",
        include_bytes!("../../pages/dashboard.html"),
        DASHBOARD_POLICY,
    ),
    asset("/assets/docs.js", JS, include_bytes!("../../pages/docs.js")),
    asset(
        "/assets/dashboard.js",
        JS,
        include_bytes!("../../pages/dashboard.js"),
    ),
    // clients/js's bundle, which the dashboard's live tail imports; CI
    // checks it equals a fresh build of the package.
    asset(
        "/assets/ringcast-client.js",
        JS,
        include_bytes!("../../pages/vendor/ringcast-client.js"),
    ),
    asset(
        "/assets/session-key.js",
        JS,
        include_bytes!("../../pages/session-key.js"),
    ),
    asset(
        "/assets/pages.css",
        CSS,
        include_bytes!("../../pages/pages.css"),
    ),
    asset(
        "/assets/swagger-ui/swagger-ui-bundle.js",
        JS,
        include_bytes!("../../pages/vendor/swagger-ui/swagger-ui-bundle.js"),
    ),
    // The bundle's header points here for its licenses.
    asset(
        "/assets/swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../pages/vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"),
    ),
    asset(
        "/assets/swagger-ui/swagger-ui.css",
        CSS,
        include_bytes!("../../pages/vendor/swagger-ui/swagger-ui.css"),
    ),
];

/// The page or asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Page> {
    PAGES.iter().find(|page| page.path == path)
}

impl Page {
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// Whether it is served without a key.
    pub fn is_public(&self) -> bool {
        matches!(self.kind, Kind::Asset)
    }

    /// The file, or 304 when the browser's copy (`If-None-Match`) is current.
    pub fn response(&self, request: &HeaderMap) -> Response<Body> {
        let etag = self.etag.get_or_init(|| content_tag(self.body));
        let mut response = if is_current(request, etag) {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            Response::new(Body::new(Bytes::from_static(self.body)))
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, etag.clone());
        // Revalidated on every use, so a new binary's files are never
        // hidden behind stale ones; unchanged ones cost a 304.
        let cache = match self.kind {
            Kind::Html { .. } => "private, no-cache",
            Kind::Asset => "public, no-cache",
        };
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Kind::Html { policy } = self.kind {
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
            // The address may still hold `?api_key=` while the page loads.
            headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        }
        response
    }
}

/// A strong validator from the content: part of its SHA-256, quoted.
fn content_tag(body: &[u8]) -> HeaderValue {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    HeaderValue::try_from(format!("\"{hex}\"")).expect("hex digits are a valid header value")
}

/// Whether `If-None-Match` lists `etag` (weakly compared, as the header is)
/// or is `*`.
fn is_current(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_none_match: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_str(if_none_match).unwrap());
        headers
    }

    #[test]
    fn pages_need_a_key_and_assets_do_not() {
        assert!(!find("/docs").unwrap().is_public());
        assert!(!find("/dashboard").unwrap().is_public());
        assert!(find("/assets/dashboard.js").unwrap().is_public());
        assert!(find("/docs/").is_none() && find("/assets/").is_none());
    }

    #[test]
    fn every_page_references_only_files_served_here() {
        for page in PAGES.iter().filter(|page| !page.is_public()) {
            let html = std::str::from_utf8(page.body).unwrap();
            for reference in html.split(['"', '\'']).filter(|s| s.starts_with("assets/")) {
                assert!(
                    find(&format!("/{reference}")).is_some(),
                    "{} references {reference}, which is not served",
                    page.path
                );
            }
        }
    }

    #[test]
    fn every_script_imports_only_files_served_here() {
        for script in PAGES.iter().filter(|page| page.content_type == JS) {
            let source = std::str::from_utf8(script.body).unwrap();
            for line in source.lines().filter(|line| line.starts_with("import ")) {
                let module = line.split('"').nth(1).expect("an import names its module");
                let served = module
                    .strip_prefix("./")
                    .map(|file| format!("/assets/{file}"));
                assert!(
                    served.as_deref().and_then(find).is_some(),
                    "{} imports {module}, which is not served",
                    script.path
                );
            }
        }
        assert!(find("/assets/ringcast-client.js").unwrap().is_public());
    }

    #[test]
    fn a_current_copy_gets_304_with_the_same_tag() {
        let page = find("/assets/pages.css").unwrap();
        let full = page.response(&HeaderMap::new());
        assert_eq!(full.status(), StatusCode::OK);
        let etag = full.headers()[ETAG].to_str().unwrap().to_owned();
        assert_eq!(full.headers()[CONTENT_TYPE], CSS);
        for current in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let cached = page.response(&headers(&current));
            assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "{current}");
            assert_eq!(cached.headers()[ETAG], *etag);
        }
        let stale = page.response(&headers("\"0123\""));
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[test]
    fn pages_carry_their_policy() {
        let response = find("/dashboard").unwrap().response(&HeaderMap::new());
        assert_eq!(response.headers()[CONTENT_TYPE], HTML);
        assert!(response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'"));
        let asset = find("/assets/dashboard.js")
            .unwrap()
            .response(&HeaderMap::new());
        assert!(asset.headers().get(CONTENT_SECURITY_POLICY).is_none());
    }
}
