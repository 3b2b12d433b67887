//! Building REST responses: JSON bodies, and every failure rendered from
//! its [`Error`] as the contract's `{"error": {"code", "message"}}` with
//! the status and headers its code calls for.

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use hyper::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, SEC_WEBSOCKET_VERSION, UPGRADE,
    WWW_AUTHENTICATE,
};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::auth;
use crate::error::Error;
use crate::sse::{Chunk, SseBody};
use crate::wire::error::ErrorBody;

/// Every response body: small and fully buffered, or an event stream.
pub enum Body {
    Full(Full<Bytes>),
    Stream(SseBody),
}

impl Body {
    pub fn new(bytes: Bytes) -> Self {
        Self::Full(Full::new(bytes))
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::new(Bytes::new())
    }
}

impl hyper::body::Body for Body {
    type Data = BodyData;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<BodyData>, Infallible>>> {
        match self.get_mut() {
            Self::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map(|frame| frame.map_data(BodyData::Full)))),
            Self::Stream(stream) => Pin::new(stream).poll_frame(cx).map(|frame| {
                frame.map(|frame| frame.map(|frame| frame.map_data(BodyData::Stream)))
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(full) => full.is_end_stream(),
            Self::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(full) => full.size_hint(),
            Self::Stream(stream) => stream.size_hint(),
        }
    }
}

/// A piece of a body: one buffer, or an event stream's chunk of many.
pub enum BodyData {
    Full(Bytes),
    Stream(Chunk),
}

impl Buf for BodyData {
    fn remaining(&self) -> usize {
        match self {
            Self::Full(bytes) => bytes.remaining(),
            Self::Stream(chunk) => chunk.remaining(),
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            Self::Full(bytes) => bytes.chunk(),
            Self::Stream(chunk) => chunk.chunk(),
        }
    }

    fn advance(&mut self, count: usize) {
        match self {
            Self::Full(bytes) => bytes.advance(count),
            Self::Stream(chunk) => chunk.advance(count),
        }
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        match self {
            Self::Full(bytes) => bytes.chunks_vectored(slices),
            Self::Stream(chunk) => chunk.chunks_vectored(slices),
        }
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

/// The failure as a response: 401 names how to authenticate, 405 what is
/// allowed, 426 the protocol to upgrade to (RFC 9110 §15.5.22) and, for a
/// handshake of another version, the one ringcast speaks (RFC 6455
/// §4.2.2); 429, and 503 for a full connection limit, when to retry.
pub fn error_response(error: &Error) -> Response<Body> {
    let message = error.to_string();
    let mut response = json_response(
        error.status(),
        &ErrorEnvelope {
            error: ErrorBody {
                code: error.code(),
                message: &message,
            },
        },
    );
    let headers = response.headers_mut();
    match error {
        Error::Unauthorized(_) => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(auth::CHALLENGE));
        }
        Error::MethodNotAllowed(allow) => {
            headers.insert(ALLOW, allow.clone());
        }
        Error::RateLimited(refused) => {
            headers.insert(RETRY_AFTER, HeaderValue::from(refused.retry_after_secs()));
        }
        Error::TooManyConnections(_) => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Error::UpgradeRequired(_) | Error::UnsupportedWebSocketVersion => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            if matches!(error, Error::UnsupportedWebSocketVersion) {
                headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
        }
        _ => {}
    }
    response
}

/// 204 to `OPTIONS`, naming the methods in `Allow`.
pub fn allow_response(allow: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(ALLOW, allow);
    response
}

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    raw_json_response(
        status,
        simd_json::to_vec(body).expect("responses always serialize"),
    )
}

/// A response whose body is JSON already.
pub fn raw_json_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A body of the given type: an embedded document, or a scrape.
pub fn typed_response(content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
