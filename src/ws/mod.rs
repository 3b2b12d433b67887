//! WebSocket `/ws`: a connection's life, from the upgrade to its close.
//!
//! - [`upgrade`]: the handshake checks and the start of a connection task.
//! - [`session`]: the reader, client frames to broker calls.
//! - the writer is [`crate::send`]'s, which owns everything outbound.
//!
//! The socket is split into owned halves, so reading and writing never share
//! a lock; the reader and writer meet only at the outbox, and this module
//! joins them: whichever ends first closes the outbox, which stops the other.

pub mod deflate;
pub mod permessage_deflate;
mod session;
mod upgrade;

pub use upgrade::upgrade;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::auth::Grant;
use crate::frame_reader::FrameDecoder;
use crate::protocol::ErrorCode;
use crate::send::{write_loop, Deflate, FrameWriter, Outbox, QueueLimits, WriterTiming};
use crate::state::AppState;
use session::Session;

/// After the server's close frame, unread input is read and dropped until
/// the peer closes, falls quiet for `LINGER_QUIET`, or `LINGER` or
/// `LINGER_BYTES` is reached: a socket closed with unread input answers
/// with a reset, which fails the peer's writes and can discard the close
/// frame before the peer reads it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_QUIET: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

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
            Self::ConnectionLost => "connection lost",
        }
    }

    /// The close frame's reason text: the client's own when echoing it.
    pub fn close_text(&self) -> &str {
        match self {
            Self::ClientClosed { reason, .. } => reason,
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

/// When the peer was last heard from, for the heartbeat's silence check.
pub struct Liveness {
    epoch: Instant,
    last_seen_ms: AtomicU64,
}

impl Liveness {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    fn heard_from_peer(&self) {
        self.last_seen_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn silent_for(&self) -> Duration {
        let last_seen = Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last_seen)
    }
}

async fn run(
    io: TokioIo<hyper::upgrade::Upgraded>,
    state: Arc<AppState>,
    peer: SocketAddr,
    grant: Grant,
    deflate: Option<Deflate>,
) {
    // Owned halves of the TCP stream instead of a locked split; bytes hyper
    // read past the upgrade request are decoded first.
    match io.into_inner().downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (reader, writer) = parts.io.into_inner().into_split();
            let mut decoder =
                FrameDecoder::new(&parts.read_buf, state.config.max_message_size as usize);
            if deflate.is_some() {
                decoder = decoder.inflating(state.metrics.clone());
            }
            // The leftover bytes share hyper's whole read buffer: let it go.
            drop(parts.read_buf);
            serve(reader, decoder, writer, state, peer, grant, deflate).await;
        }
        Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
    }
}

/// Runs one connection until it closes.
async fn serve(
    mut reader: OwnedReadHalf,
    decoder: FrameDecoder,
    writer: OwnedWriteHalf,
    state: Arc<AppState>,
    peer: SocketAddr,
    grant: Grant,
    deflate: Option<Deflate>,
) {
    let config = &state.config;
    let outbox = Arc::new(
        Outbox::new(
            QueueLimits {
                events: config.subscriber_queue_size as usize,
                bytes: config.subscriber_queue_bytes.0,
            },
            config.slow_consumer_policy,
        )
        .deflating(deflate),
    );
    let liveness = Arc::new(Liveness::new());
    let writer = write_loop(
        FrameWriter::new(writer, state.metrics.clone()),
        outbox.clone(),
        liveness.clone(),
        WriterTiming {
            heartbeat: config.heartbeat_interval,
            write_timeout: config.write_timeout,
            coalesce_window: config.coalesce_window,
        },
        state.draining.clone(),
    );
    let writer = tokio::spawn(state.contain_panic("connection writer", writer).map({
        let outbox = outbox.clone();
        // The reader must stop too, or the connection would linger
        // half-alive.
        move |reason| {
            reason.unwrap_or_else(|| {
                outbox.close(CloseReason::ConnectionLost);
                CloseReason::ConnectionLost
            })
        }
    }));
    let mut session = Session::new(state.clone(), outbox.clone(), grant);
    let id = session.id();
    tracing::info!(conn = id, %peer, "connection opened");
    tokio::select! {
        reason = session.read_loop(&reader, decoder, &liveness) => outbox.close(reason),
        _ = outbox.closed() => {}
    }
    session.answer_pending_publishes().await;
    drop(session);
    let reason = writer.await.unwrap_or(CloseReason::ConnectionLost);
    if reason.code().is_some() {
        linger(&mut reader).await;
    }
    if let Some(why) = reason.slow_consumer_message() {
        tracing::warn!(conn = id, %peer, why, "slow consumer disconnected");
    }
    tracing::info!(conn = id, %peer, reason = reason.describe(), "connection closed");
}

/// Reads and drops the peer's input within the `LINGER` bounds.
async fn linger(reader: &mut OwnedReadHalf) {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut scratch = vec![0; 16 * 1024];
    let mut left = LINGER_BYTES;
    while left > 0 {
        let quiet_until = deadline.min(tokio::time::Instant::now() + LINGER_QUIET);
        match tokio::time::timeout_at(quiet_until, reader.read(&mut scratch)).await {
            Ok(Ok(read)) if read > 0 => left = left.saturating_sub(read),
            _ => return,
        }
    }
}
