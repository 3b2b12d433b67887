//! A connection's reader: client frames in, each message to the
//! connection's [`MessageHandler`], pings answered. The replies to the
//! frames of one read are held and go to the writer together once the
//! reader has to wait (see `Outbox::holding_replies`), and no frame is read
//! while the connection's own pending frames are at half its bound.

use std::time::Duration;

use tokio::net::tcp::OwnedReadHalf;

use crate::send::liveness::Liveness;
use crate::send::outbox::Outbox;
use crate::wire::close::CloseReason;
use crate::wire::frame::pong_frame;
use crate::ws::frame_reader::{self, FrameDecoder, Incoming, Received};
use crate::ws::handler::MessageHandler;

/// Reads frames until the connection should close, and says why. The
/// first frame must come within `first_frame_timeout`: a connection that
/// never completes one would otherwise hold a slot until the heartbeat
/// gives up on it.
pub(super) async fn read_loop(
    handler: &mut impl MessageHandler,
    outbox: &Outbox,
    reader: &OwnedReadHalf,
    decoder: &mut FrameDecoder,
    liveness: &Liveness,
    first_frame_timeout: Duration,
) -> CloseReason {
    let frames = async {
        let mut first_frame_deadline = Some(first_frame_timeout);
        loop {
            let may_read = handler.may_read();
            let read = tokio::select! {
                biased;
                interrupted = handler.interrupted() => match interrupted {
                    Some(reason) => return reason,
                    None => continue,
                },
                // Cancel-safe: a frame read in part stays in the decoder.
                read = next_frame(reader, decoder, &mut first_frame_deadline), if may_read => read,
            };
            let Received {
                incoming,
                read_socket,
            } = match read {
                Ok(received) => received,
                Err(reason) => return reason,
            };
            // Once per read, not per frame: the frames of one read arrived
            // together, and at full rate a clock reading per frame showed.
            if read_socket {
                liveness.heard_from_peer();
            }
            handle(handler, outbox, incoming).await;
            // The rest of what was read is handled here rather than through
            // the select above: interruptions are looked for once per read,
            // not once per frame.
            loop {
                handler.after_frame().await;
                outbox.wait_for_reader_room().await;
                if !handler.may_read() {
                    break;
                }
                match decoder.next_buffered() {
                    Ok(Some(incoming)) => handle(handler, outbox, incoming).await,
                    Ok(None) => break,
                    Err(reason) => return reason,
                }
            }
        }
    };
    outbox.holding_replies(frames).await
}

/// One message to the handler, or a control frame answered.
async fn handle(handler: &mut impl MessageHandler, outbox: &Outbox, incoming: Incoming) {
    match incoming {
        Incoming::Message(message) => handler.on_message(message).await,
        Incoming::Ping(payload) => outbox.push_held_reply(pong_frame(&payload)),
        Incoming::Pong => {}
    }
}

/// The next frame from the client; the first one must come within
/// `first_frame_deadline`, which is used up by the first read.
async fn next_frame(
    reader: &OwnedReadHalf,
    decoder: &mut FrameDecoder,
    first_frame_deadline: &mut Option<Duration>,
) -> Result<Received, CloseReason> {
    match first_frame_deadline.take() {
        // Boxed: it is needed once, and its timer would otherwise stay in
        // the connection's task for the connection's whole life.
        Some(deadline) => Box::pin(tokio::time::timeout(
            deadline,
            frame_reader::read_incoming(reader, decoder),
        ))
        .await
        .unwrap_or(Err(CloseReason::FirstFrameTimeout)),
        None => frame_reader::read_incoming(reader, decoder).await,
    }
}
