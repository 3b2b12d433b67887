//! One WebSocket connection's life after the upgrade: its reader (with the
//! connection's message handler) and its writer run side by side and meet
//! only at the outbox; whichever ends first closes the outbox, which stops
//! the other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::broker::ConnectionId;
use crate::metrics::ConnectionGuard;
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

/// What the upgrade accepted, for the connection it becomes: `make_handler`
/// makes the connection's message handler from its id and outbox.
pub(super) struct Accepted<M> {
    pub node: Arc<Node>,
    pub peer: SocketAddr,
    pub deflate: Option<Deflate>,
    /// The connection's place under `MAX_CONNECTIONS`, held while it lives.
    pub slot: ConnectionGuard,
    pub make_handler: M,
}

/// Sets an upgraded connection up on the owned halves of its TCP stream
/// (its outbox, writer task and message handler) and returns its reader's
/// side, to run until it closes; `None` if the stream is not TCP. Set up
/// here rather than in an `async fn`, whose arguments would stay in the
/// connection's task for as long as it lives.
#[expect(
    clippy::boxed_local,
    reason = "the upgrade's task holds the box, not its contents, until here"
)]
pub(super) fn start<H: MessageHandler>(
    io: TokioIo<hyper::upgrade::Upgraded>,
    accepted: Box<Accepted<impl FnOnce(ConnectionId, Arc<Outbox>) -> H>>,
) -> Option<impl Future<Output = ()>> {
    let Accepted {
        node,
        peer,
        deflate,
        slot,
        make_handler,
    } = *accepted;
    // Owned halves of the TCP stream instead of a locked split; bytes hyper
    // read past the upgrade request are decoded first.
    let Ok(parts) = io
        .into_inner()
        .downcast::<TokioIo<WriteDeadline<TcpStream>>>()
    else {
        tracing::error!("upgraded connection is not a TCP stream");
        return None;
    };
    let (reader, writer) = parts.io.into_inner().into_inner().into_split();
    let config = node.config();
    let mut decoder = FrameDecoder::new(&parts.read_buf, config.max_message_size as usize);
    if deflate.is_some() {
        decoder = decoder.inflating(node.metrics().clone());
    }
    // The leftover bytes share hyper's whole read buffer: let it go.
    drop(parts.read_buf);
    let outbox = Arc::new(Outbox::configured(config).deflating(deflate));
    let liveness = Arc::new(Liveness::default());
    let writer = spawn_writer(writer, &node, &outbox, &liveness);
    let id = node.next_connection_id();
    // Made before the handler, so that it is dropped after it.
    let reader_done = ReaderDone(outbox.clone());
    let handler = make_handler(id, outbox.clone());
    Some(
        Connection {
            id,
            peer,
            reader,
            decoder,
            outbox,
            liveness,
            writer,
            first_frame_timeout: config.first_frame_timeout,
            slot,
        }
        .serve(handler, reader_done),
    )
}

/// A connection's reader side, set up.
struct Connection {
    id: ConnectionId,
    peer: SocketAddr,
    reader: OwnedReadHalf,
    decoder: FrameDecoder,
    outbox: Arc<Outbox>,
    liveness: Arc<Liveness>,
    writer: JoinHandle<CloseReason>,
    first_frame_timeout: Duration,
    slot: ConnectionGuard,
}

impl Connection {
    /// Runs the connection until it closes. A plain function returning an
    /// `async move` block, for the reason given at `write_loop`.
    fn serve(
        self,
        mut handler: impl MessageHandler,
        reader_done: ReaderDone,
    ) -> impl Future<Output = ()> {
        let Connection {
            id,
            peer,
            mut reader,
            mut decoder,
            outbox,
            liveness,
            writer,
            first_frame_timeout,
            slot,
        } = self;
        async move {
            tracing::info!(conn = id, %peer, "connection opened");
            let read = read_loop(
                &mut handler,
                &outbox,
                &reader,
                &mut decoder,
                &liveness,
                first_frame_timeout,
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
            // Named here so that the task holds the slot until now.
            drop(slot);
        }
    }
}

/// Starts the connection's writer task. Not inside `serve`: the writer's
/// future, built there, would take room in the reader's task for as long
/// as the connection lives.
fn spawn_writer(
    writer: OwnedWriteHalf,
    node: &Arc<Node>,
    outbox: &Arc<Outbox>,
    liveness: &Arc<Liveness>,
) -> JoinHandle<CloseReason> {
    let config = node.config();
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
    tokio::spawn(node.contain_panic("connection writer", writer).map({
        let outbox = outbox.clone();
        // The reader must stop too, or the connection would linger
        // half-alive.
        move |reason| {
            reason.unwrap_or_else(|| {
                outbox.close(CloseReason::ConnectionLost);
                CloseReason::ConnectionLost
            })
        }
    }))
}

/// Lets the writer close once the reader and its handler are gone, however
/// the connection ends, panics included (see `Outbox::reader_finished`).
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
