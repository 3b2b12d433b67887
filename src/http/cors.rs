//! CORS for the REST API (`CORS_ALLOWED_ORIGINS`): which browser pages may
//! read responses and send JSON requests cross-site. Deciding who may use
//! the API at all is `ALLOWED_ORIGINS`' job (`crate::auth`); this only adds
//! the headers browsers need.

use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ALLOW,
    ORIGIN, VARY,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::Origins;

/// The request headers a page may send: a JSON body, either credential,
/// and the cursor an `EventSource` resumes an event stream from (not
/// CORS-safelisted, so its reconnect may need a preflight).
const ALLOWED_HEADERS: &str = "Content-Type, X-API-Key, Authorization, Last-Event-ID";
/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// What a request means for CORS, read before the request is consumed.
pub struct CorsRequest {
    /// The request's `Origin`, when it is listed.
    allowed_origin: Option<HeaderValue>,
    /// An `OPTIONS` carrying `Access-Control-Request-Method`.
    preflight: bool,
}

/// Reads what CORS needs from `request` before it is consumed; `None` when
/// no origins are configured.
pub fn inspect<B>(origins: &Origins, request: &Request<B>) -> Option<CorsRequest> {
    if origins.is_empty() {
        return None;
    }
    let allowed_origin = request
        .headers()
        .get(ORIGIN)
        .filter(|origin| origins.lists(origin))
        .cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    Some(CorsRequest {
        allowed_origin,
        preflight,
    })
}

impl CorsRequest {
    /// Adds the CORS headers to the response. `Vary: Origin` goes on every
    /// response, so a cache never serves one origin's answer to another; a
    /// preflight answered 204 allows the methods its `Allow` names.
    pub fn apply<B>(self, response: &mut Response<B>) {
        let status = response.status();
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = self.allowed_origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.preflight && status == StatusCode::NO_CONTENT {
            if let Some(allow) = headers.get(ALLOW).cloned() {
                headers.insert(ACCESS_CONTROL_ALLOW_METHODS, allow);
            }
            headers.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            headers.insert(
                ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
        }
    }
}
