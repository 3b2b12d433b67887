//! Why a WebSocket connection closes, and what that means on the wire: the
//! close code and reason, and the `error` frame sent before it.

use std::sync::Arc;

use crate::wire::error::ErrorCode;

/// The close code of a server-API disconnect (the application range,
/// RFC 6455 §7.4.2).
pub const DISCONNECTED_CODE: u16 = 4000;
/// The longest close reason: a close frame's payload is at most 125
/// bytes, two of them the code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// `reason` cut to what a close frame holds, at a character boundary.
pub fn fit_close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Why a connection is closing, and so what its last frames are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame; it is echoed with its code and reason
    /// (RFC 6455 §5.5.1).
    ClientClosed { code: u16, reason: Arc<str> },
    /// The server is shutting down.
    ServerShutdown,
    /// A subscriber's pending events reached a bound under `disconnect`.
    SlowConsumer,
    /// Frames waited and the socket accepted no byte for `WRITE_TIMEOUT`.
    WriteTimeout,
    /// Nothing heard from the peer for two heartbeat intervals.
    HeartbeatTimeout,
    /// No complete frame within `FIRST_FRAME_TIMEOUT` of the upgrade.
    FirstFrameTimeout,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A compressed message that does not inflate.
    InvalidCompressedData,
    /// A message larger than `MAX_MESSAGE_SIZE`.
    MessageTooBig,
    /// A frame that breaks RFC 6455.
    ProtocolError,
    /// The connection's access token expired before a new one was sent.
    TokenExpired,
    /// An application backend asked for it (`POST /disconnect`), with
    /// this reason.
    Disconnected(Arc<str>),
    /// The socket failed or hit EOF: nothing more can be written.
    ConnectionLost,
}

impl CloseReason {
    /// The close code to send, if the socket is still worth writing to.
    pub fn code(&self) -> Option<u16> {
        match *self {
            Self::ClientClosed { code, .. } => Some(code),
            Self::ServerShutdown => Some(1001),
            Self::SlowConsumer
            | Self::WriteTimeout
            | Self::HeartbeatTimeout
            | Self::FirstFrameTimeout
            | Self::TokenExpired => Some(1008),
            Self::InvalidUtf8 | Self::InvalidCompressedData => Some(1007),
            Self::MessageTooBig => Some(1009),
            Self::ProtocolError => Some(1002),
            Self::Disconnected(_) => Some(DISCONNECTED_CODE),
            Self::ConnectionLost => None,
        }
    }

    /// Why, in words: for the log, and the text of the server's own close.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::ClientClosed { .. } => "client closed",
            Self::ServerShutdown => "server shutting down",
            Self::SlowConsumer | Self::WriteTimeout => "slow consumer",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::FirstFrameTimeout => "no frame before the first-frame deadline",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::InvalidCompressedData => "invalid compressed data",
            Self::MessageTooBig => "message too big",
            Self::ProtocolError => "protocol error",
            Self::TokenExpired => "token expired",
            Self::Disconnected(_) => "disconnected by the server API",
            Self::ConnectionLost => "connection lost",
        }
    }

    /// The close frame's reason text: the client's own when echoing it.
    pub fn close_text(&self) -> &str {
        match self {
            Self::ClientClosed { reason, .. } | Self::Disconnected(reason) => reason,
            _ => self.describe(),
        }
    }

    /// For a slow consumer, the `SLOW_CONSUMER` error's message.
    pub fn slow_consumer_message(&self) -> Option<&'static str> {
        match self {
            Self::SlowConsumer => Some("subscriber queue overflowed"),
            Self::WriteTimeout => Some("socket accepted nothing within WRITE_TIMEOUT"),
            _ => None,
        }
    }

    /// The `error` frame sent just before the close frame, if any.
    pub fn closing_error(&self) -> Option<(ErrorCode, &'static str)> {
        match self {
            Self::TokenExpired => Some((ErrorCode::Unauthorized, self.describe())),
            _ => self
                .slow_consumer_message()
                .map(|why| (ErrorCode::SlowConsumer, why)),
        }
    }

    /// Whether frames still queued are abandoned rather than flushed: a slow
    /// or silent peer is cut off, everyone else gets what was queued.
    pub fn abandons_queue(&self) -> bool {
        matches!(
            self,
            Self::SlowConsumer | Self::WriteTimeout | Self::HeartbeatTimeout | Self::ConnectionLost
        )
    }
}
