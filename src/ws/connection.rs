//! One WebSocket connection's life after the upgrade: its reader (the
//! session) and its writer run side by side and meet only at the outbox;
//! whichever ends first closes the outbox, which stops the other.

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

use crate::auth::Grant;
use crate::node::Node;
use crate::send::deadline::WriteDeadline;
use crate::send::event::Deflate;
use crate::send::liveness::Liveness;
use crate::send::outbox::Outbox;
use crate::send::writer::{write_loop, FrameWriter, WebSocketTransport, WriterTiming};
use crate::wire::close::CloseReason;
use crate::ws::frame_reader::FrameDecoder;
use crate::ws::session::Session;

/// After the server's close frame, unread input is read and dropped until
/// the peer closes, falls quiet for `LINGER_QUIET`, or `LINGER` or
/// `LINGER_BYTES` is reached: a socket closed with unread input answers
/// with a reset, which fails the peer's writes and can discard the close
/// frame before the peer reads it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_QUIET: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

/// What the upgrade accepted, for the connection it becomes.
pub(super) struct Accepted {
    pub node: Arc<Node>,
    pub peer: SocketAddr,
    pub grant: Grant,
    pub deflate: Option<Deflate>,
}

/// Sets an upgraded connection up on the owned halves of its TCP stream
/// (its outbox, writer task and session) and returns its reader's side, to
/// run until it closes; `None` if the stream is not TCP. Set up here rather
/// than in an `async fn`, whose arguments would stay in the connection's
/// task for as long as it lives.
#[expect(
    clippy::boxed_local,
    reason = "the upgrade's task holds the box, not its contents, until here"
)]
pub(super) fn start(
    io: TokioIo<hyper::upgrade::Upgraded>,
    accepted: Box<Accepted>,
) -> Option<impl Future<Output = ()>> {
    let Accepted {
        node,
        peer,
        grant,
        deflate,
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
    let mut decoder = FrameDecoder::new(&parts.read_buf, node.config().max_message_size as usize);
    if deflate.is_some() {
        decoder = decoder.inflating(node.metrics().clone());
    }
    // The leftover bytes share hyper's whole read buffer: let it go.
    drop(parts.read_buf);
    let outbox = Arc::new(Outbox::configured(node.config()).deflating(deflate));
    let liveness = Arc::new(Liveness::default());
    let writer = spawn_writer(writer, &node, &outbox, &liveness);
    let session = Session::new(node, outbox.clone(), grant);
    Some(serve(
        reader, decoder, session, outbox, liveness, writer, peer,
    ))
}

/// Runs one connection until it closes.
async fn serve(
    mut reader: OwnedReadHalf,
    mut decoder: FrameDecoder,
    mut session: Session,
    outbox: Arc<Outbox>,
    liveness: Arc<Liveness>,
    writer: JoinHandle<CloseReason>,
    peer: SocketAddr,
) {
    let id = session.id();
    tracing::info!(conn = id, %peer, "connection opened");
    tokio::select! {
        reason = session.read_loop(&reader, &mut decoder, &liveness) => outbox.close(reason),
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
