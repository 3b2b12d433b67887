//! The send path: everything between "this frame is for that connection"
//! and the bytes leaving its socket — the queue, wake-ups, batching, the
//! slow-consumer decision and the writer — and the whole rule, here:
//!
//! - **What counts.** A connection's *pending* events are those queued for
//!   it or taken by its writer and not yet fully written, with their encoded
//!   bytes. Replayed events (`last_n`) and the writer's own closing frames
//!   count against nothing: a replay is bounded by the ring the subscriber
//!   asked for. Replies (`ack`, `pong`, `error`, notices) are counted apart.
//! - **The bound.** `SUBSCRIBER_QUEUE_SIZE` events and
//!   `SUBSCRIBER_QUEUE_BYTES` bytes of pending events. An event that would
//!   take a subscriber past either (its first pending event always fits)
//!   applies `SLOW_CONSUMER_POLICY`: `disconnect` cuts it (`SLOW_CONSUMER`,
//!   close 1008); `drop_oldest` drops its oldest queued events until the new
//!   one fits (events already handed to the socket writer, at most
//!   [`batch::MAX_FRAMES_PER_WRITE`], are not dropped; if those alone fill
//!   the bound the new event is dropped instead). So pending events never
//!   exceed the bound: with the frames in the writer's hands, a subscriber
//!   holds at most `SUBSCRIBER_QUEUE_SIZE` events and
//!   `SUBSCRIBER_QUEUE_BYTES` bytes (plus one event, if that one is larger).
//! - **Slow means not keeping up.** A subscriber reaches its bound when its
//!   socket does not take bytes (or when more publishers than half a bound
//!   race into it at once, or in cluster mode, whose single follower waits
//!   for no writer): while its socket takes bytes and its
//!   pending events are at half a bound or more (its writer is behind
//!   because the server is busy), the connection that published waits for
//!   that writer before it reads its next frame, so the pressure goes back
//!   to publishers (their TCP windows) instead of cutting a subscriber that
//!   reads. Once a write finds the socket full, nobody waits for that
//!   subscriber until its pending events are back under half a bound, and
//!   meanwhile its bound decides. `WRITE_TIMEOUT` cuts a connection with
//!   frames waiting whose socket accepted no byte for that long, under
//!   either policy.
//! - **Replies.** A connection's reader reads no further frame while its own
//!   pending events and replies are at half the event bound, so a client
//!   that sends without reading cannot grow its replies without bound.
//!   Replies are never held back: nothing waits for a timer.
//! - **Batching.** A push that turns the queue non-empty wakes the writer;
//!   everything queued by the time it runs (what a publisher's read cycle,
//!   or the other tasks of that scheduler tick, produced) goes out in one
//!   `writev` of up to [`batch::MAX_FRAMES_PER_WRITE`] frames and 64 KiB,
//!   and while the socket takes bytes the writer keeps writing whatever
//!   gathered meanwhile. A frame never waits for wall-clock time while the
//!   socket could take it, unless the opt-in `COALESCE_WINDOW` asks for it
//!   (and then not once the subscriber is at its pause mark). A
//!   connection's reader holds its replies (acks, pongs, errors), in order
//!   with the rest of the queue, until it has to wait for anything (the
//!   socket, above all) or holds a write's worth: the replies to the frames
//!   of one read wake the writer once and leave in one write.
//! - **Event streams.** An SSE stream (`crate::sse`) has the same outbox
//!   and write loop; its "socket" is the response body hyper writes, and a
//!   frame counts as written once the body has taken it. hyper buffers a
//!   few chunks (at most 16 of them, about 400 KiB) before it waits for
//!   the socket, so up to that much may sit past the bound; the stream
//!   has no reader, so the reader's rules do not apply.

pub mod batch;
pub mod deadline;
pub mod event;
pub mod liveness;
pub mod outbox;
pub mod writer;

pub use event::{Deflate, EventFrame};
pub use liveness::Liveness;
pub use outbox::{
    Delivery, FrameKind, LaggingWriters, Outbox, Pending, QueueBound, QueueLimits, Queued, Settled,
};
pub use writer::{
    take_frames, write_loop, FrameWriter, Transport, WebSocketTransport, WriteError, WriterTiming,
};
