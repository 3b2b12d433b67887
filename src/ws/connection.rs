//! One WebSocket connection's life after the upgrade: its reader (with the
//! connection's message handler) and its writer run side by side and meet
//! only at the outbox; whichever ends first closes the outbox, which stops
//! the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::broker::ConnectionId;
use crate::node::Node;
use crate::send::deadline::WriteDeadline;
use crate::send::event::Deflate;
use crate::send::liveness::Liveness;
use crate::send::outbox::Outbox;
use crate::send::writer::{write_loop, FrameWriter, WebSocketTransport, WriterTiming};
use crate::wire::close::CloseReason;
use crate::ws::frame_reader::FrameDecoder;
use crate::ws::handler::MessageHandler;
use crate::ws::reader::read_loop;

/// After the server's close frame, unread input is read and dropped until
/// the peer closes, falls quiet for `LINGER_QUIET`, or `LINGER` or
/// `LINGER_BYTES` is reached: a socket closed with unread input answers
/// with a reset, which fails the peer's writes and can discard the close
/// frame before the peer reads it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_QUIET: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

/// Runs an upgraded connection until it closes, on the owned halves of its
/// TCP stream, with the message handler `make_handler` makes for it.
pub(super) async fn run<H: MessageHandler>(
    io: TokioIo<hyper::upgrade::Upgraded>,
    node: Arc<Node>,
    peer: SocketAddr,
    deflate: Option<Deflate>,
    make_handler: impl FnOnce(ConnectionId, Arc<Outbox>) -> H,
) {
    // Owned halves of the TCP stream instead of a locked split; bytes hyper
    // read past the upgrade request are decoded first.
    match io
        .into_inner()
        .downcast::<TokioIo<WriteDeadline<TcpStream>>>()
    {
        Ok(parts) => {
            let (reader, writer) = parts.io.into_inner().into_inner().into_split();
            let mut decoder =
                FrameDecoder::new(&parts.read_buf, node.config().max_message_size as usize);
            if deflate.is_some() {
                decoder = decoder.inflating(node.metrics().clone());
            }
            // The leftover bytes share hyper's whole read buffer: let it go.
            drop(parts.read_buf);
            serve(reader, decoder, writer, node, peer, deflate, make_handler).await;
        }
        Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
    }
}

/// Runs one connection until it closes.
async fn serve<H: MessageHandler>(
    mut reader: OwnedReadHalf,
    decoder: FrameDecoder,
    writer: OwnedWriteHalf,
    node: Arc<Node>,
    peer: SocketAddr,
    deflate: Option<Deflate>,
    make_handler: impl FnOnce(ConnectionId, Arc<Outbox>) -> H,
) {
    let config = node.config();
    let outbox = Arc::new(Outbox::configured(config).deflating(deflate));
    let liveness = Arc::new(Liveness::default());
    let writer = write_loop(
        WebSocketTransport::new(
            FrameWriter::new(writer, node.metrics().clone()),
            liveness.clone(),
            config.heartbeat_interval,
        ),
        outbox.clone(),
        WriterTiming::configured(config),
        node.shutdown().clone(),
    );
    let writer = tokio::spawn(node.contain_panic("connection writer", writer).map({
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
    let id = node.next_connection_id();
    let reader_done = ReaderDone(outbox.clone());
    let mut handler = make_handler(id, outbox.clone());
    tracing::info!(conn = id, %peer, "connection opened");
    let read = read_loop(
        &mut handler,
        &outbox,
        &reader,
        decoder,
        &liveness,
        config.first_frame_timeout,
    );
    tokio::select! {
        reason = read => outbox.close(reason),
        _ = outbox.closed() => {}
    }
    handler.closing().await;
    drop(handler);
    drop(reader_done);
    let reason = writer.await.unwrap_or(CloseReason::ConnectionLost);
    if reason.code().is_some() {
        linger(&mut reader).await;
    }
    if let Some(why) = reason.slow_consumer_message() {
        tracing::warn!(conn = id, %peer, why, "slow consumer disconnected");
    }
    tracing::info!(conn = id, %peer, reason = reason.describe(), "connection closed");
}

/// Lets the writer close once the reader and its handler are gone, however
/// the connection ends, panics included (see `Outbox::reader_finished`):
/// made before the handler, so that it is dropped after it.
struct ReaderDone(Arc<Outbox>);

impl Drop for ReaderDone {
    fn drop(&mut self) {
        self.0.reader_finished();
    }
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
