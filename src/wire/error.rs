//! `ErrorCode`: the one error vocabulary of REST bodies, WebSocket `error`
//! frames and the `ringcast_publish_errors` metric.
//!
//! REST names every failure precisely. The WebSocket `error` frame carries
//! a closed list of codes that existing clients know (the seeds' contract),
//! so each code also says which of those it is sent as there: the table in
//! [`ErrorCode::columns`] is the whole map, and the README prints it.

use hyper::StatusCode;
use serde::Serialize;

/// Every error code ringcast answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    TopicExists,
    TopicLimit,
    SlowConsumer,
    Unauthorized,
    Forbidden,
    ForbiddenOrigin,
    RateLimited,
    ShuttingDown,
    Internal,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    TooManyConnections,
}

/// How one code is answered: its name, the HTTP status of a REST answer
/// (`None`: REST never answers it) and the code a WebSocket `error` frame
/// carries for it (`None`: a WebSocket never gets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    pub name: &'static str,
    pub rest: Option<StatusCode>,
    pub websocket: Option<ErrorCode>,
}

impl ErrorCode {
    pub const ALL: [Self; 17] = [
        Self::BadRequest,
        Self::TopicNotFound,
        Self::TopicExists,
        Self::TopicLimit,
        Self::SlowConsumer,
        Self::Unauthorized,
        Self::Forbidden,
        Self::ForbiddenOrigin,
        Self::RateLimited,
        Self::ShuttingDown,
        Self::Internal,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RequestTimeout,
        Self::TooManyConnections,
    ];

    /// The whole map. Over a WebSocket, a code outside the contract's six
    /// (`BAD_REQUEST`, `TOPIC_NOT_FOUND`, `SLOW_CONSUMER`, `UNAUTHORIZED`,
    /// `RATE_LIMITED`, `INTERNAL`) is sent as the nearest of them: a token
    /// that does not permit the request is `UNAUTHORIZED`, and shutting
    /// down is the server's trouble (`INTERNAL`).
    pub const fn columns(self) -> Columns {
        use ErrorCode::*;
        let (name, rest, websocket) = match self {
            BadRequest => (
                "BAD_REQUEST",
                Some(StatusCode::BAD_REQUEST),
                Some(BadRequest),
            ),
            TopicNotFound => (
                "TOPIC_NOT_FOUND",
                Some(StatusCode::NOT_FOUND),
                Some(TopicNotFound),
            ),
            TopicExists => ("TOPIC_EXISTS", Some(StatusCode::CONFLICT), None),
            TopicLimit => ("TOPIC_LIMIT", Some(StatusCode::BAD_REQUEST), None),
            SlowConsumer => ("SLOW_CONSUMER", None, Some(SlowConsumer)),
            Unauthorized => (
                "UNAUTHORIZED",
                Some(StatusCode::UNAUTHORIZED),
                Some(Unauthorized),
            ),
            Forbidden => ("FORBIDDEN", Some(StatusCode::FORBIDDEN), Some(Unauthorized)),
            ForbiddenOrigin => ("FORBIDDEN_ORIGIN", Some(StatusCode::FORBIDDEN), None),
            RateLimited => (
                "RATE_LIMITED",
                Some(StatusCode::TOO_MANY_REQUESTS),
                Some(RateLimited),
            ),
            ShuttingDown => (
                "SHUTTING_DOWN",
                Some(StatusCode::SERVICE_UNAVAILABLE),
                Some(Internal),
            ),
            Internal => (
                "INTERNAL",
                Some(StatusCode::SERVICE_UNAVAILABLE),
                Some(Internal),
            ),
            NotFound => ("NOT_FOUND", Some(StatusCode::NOT_FOUND), None),
            MethodNotAllowed => (
                "METHOD_NOT_ALLOWED",
                Some(StatusCode::METHOD_NOT_ALLOWED),
                None,
            ),
            PayloadTooLarge => (
                "PAYLOAD_TOO_LARGE",
                Some(StatusCode::PAYLOAD_TOO_LARGE),
                None,
            ),
            UnsupportedMediaType => (
                "UNSUPPORTED_MEDIA_TYPE",
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                None,
            ),
            RequestTimeout => ("REQUEST_TIMEOUT", Some(StatusCode::REQUEST_TIMEOUT), None),
            TooManyConnections => (
                "TOO_MANY_CONNECTIONS",
                Some(StatusCode::SERVICE_UNAVAILABLE),
                None,
            ),
        };
        Columns {
            name,
            rest,
            websocket,
        }
    }

    /// The code as REST and the metrics spell it.
    pub const fn as_str(self) -> &'static str {
        self.columns().name
    }

    /// The HTTP status a REST answer with this code carries (500 for the
    /// one code REST never answers).
    pub fn status(self) -> StatusCode {
        self.columns()
            .rest
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The code a WebSocket `error` frame carries for this failure
    /// (`BAD_REQUEST` for the codes a WebSocket never gets).
    pub fn on_websocket(self) -> Self {
        self.columns().websocket.unwrap_or(Self::BadRequest)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The `error` member of a REST error body and of a WebSocket `error`
/// frame: `{"code": "...", "message": "..."}`.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_codes_are_the_contracts_six() {
        let contract = [
            "BAD_REQUEST",
            "TOPIC_NOT_FOUND",
            "SLOW_CONSUMER",
            "UNAUTHORIZED",
            "RATE_LIMITED",
            "INTERNAL",
        ];
        for code in ErrorCode::ALL {
            let sent = code.on_websocket();
            assert!(contract.contains(&sent.as_str()), "{code:?} -> {sent:?}");
            assert_eq!(sent.on_websocket(), sent, "{sent:?} maps to itself");
        }
    }

    #[test]
    fn every_code_has_its_own_name() {
        let mut names: Vec<_> = ErrorCode::ALL.map(ErrorCode::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index, "ALL is in declaration order");
        }
    }
}
