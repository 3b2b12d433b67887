//! `Error`: every way a client's request can fail, over REST and WebSocket
//! alike, and the one map from each to its [`ErrorCode`]. REST renders an
//! `Error` as its status and JSON body, the WebSocket session as an `error`
//! frame, and the metrics count refused publishes by the same code.

use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::StatusCode;

use crate::auth::AuthError;
use crate::broker::BrokerError;
use crate::rate_limit::RateLimited;
use crate::wire::error::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A malformed frame, body, query or path.
    #[error("{0}")]
    BadRequest(String),
    #[error("subscription limit reached: a connection may hold at most {0} subscriptions")]
    TooManySubscriptions(usize),
    /// A missing, wrong or expired credential.
    #[error("{0}")]
    Unauthorized(String),
    /// A WebSocket request the connection's token does not permit.
    #[error("this connection's token does not permit {action} '{topic}'")]
    NotPermitted { action: &'static str, topic: String },
    /// A REST request the token does not permit.
    #[error("this token does not permit the request")]
    Forbidden,
    /// A browser page from an origin `ALLOWED_ORIGINS` does not list.
    #[error("{0}")]
    ForbiddenOrigin(&'static str),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed; this resource allows {}", .0.to_str().unwrap_or_default())]
    MethodNotAllowed(HeaderValue),
    #[error("body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the body did not arrive within {} (BODY_TIMEOUT)", humantime::format_duration(*.0))]
    RequestTimeout(Duration),
    /// `/ws` asked for without a WebSocket upgrade.
    #[error("{0}")]
    UpgradeRequired(&'static str),
    /// A WebSocket handshake of a version other than 13.
    #[error("only WebSocket version 13 is supported")]
    UnsupportedWebSocketVersion,
    /// A connection limit is full; a load balancer may retry another node.
    #[error("{0}")]
    TooManyConnections(String),
}

impl Error {
    /// The one map from a failure to its code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Broker(err) => match err {
                BrokerError::InvalidTopicName => ErrorCode::BadRequest,
                BrokerError::TopicExists(_) => ErrorCode::TopicExists,
                BrokerError::TopicNotFound(_) => ErrorCode::TopicNotFound,
                BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
                BrokerError::TopicLimit(_) => ErrorCode::TopicLimit,
                BrokerError::BackplaneUnavailable(_) => ErrorCode::Internal,
            },
            Self::BadRequest(_)
            | Self::TooManySubscriptions(_)
            | Self::UpgradeRequired(_)
            | Self::UnsupportedWebSocketVersion => ErrorCode::BadRequest,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::NotPermitted { .. } | Self::Forbidden => ErrorCode::Forbidden,
            Self::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::NoRoute(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Self::TooManyConnections(_) => ErrorCode::TooManyConnections,
        }
    }

    /// The HTTP status: the code's, except that a request for `/ws` that is
    /// no upgrade ringcast speaks is 426, which names the protocol to
    /// upgrade to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UpgradeRequired(_) | Self::UnsupportedWebSocketVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
            _ => self.code().status(),
        }
    }
}

impl From<AuthError> for Error {
    fn from(err: AuthError) -> Self {
        Self::Unauthorized(err.to_string())
    }
}
