//! The write loop's SSE side, and the response body it feeds. The loop
//! hands each batch of frames, framed as SSE, to a one-chunk channel whose
//! other end is the body hyper is writing: a chunk taken by the body is
//! written (hyper buffers at most a few before it waits for the socket),
//! and a channel that stays full is a socket that takes nothing, which
//! `WRITE_TIMEOUT` cuts as a slow consumer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::send::outbox::{Outbox, Pending, Queued};
use crate::send::writer::{take_frames, Transport, WriteError};
use crate::sse::cursor::CursorWriter;
use crate::sse::framing::{subscribed_event, Chunk, Subscribed, HEARTBEAT};
use crate::wire::close::CloseReason;
use crate::wire::reply;

/// A stream's side of the write loop.
pub struct SseTransport {
    chunks: mpsc::Sender<Chunk>,
    metrics: Arc<Metrics>,
    unsent: Unsent,
    /// Since when the body has taken nothing while frames wait.
    stalled_since: Option<Instant>,
}

/// What a stream has to send, not yet handed to the body.
struct Unsent {
    /// Frames taken from the outbox.
    batch: VecDeque<Queued>,
    /// Written ahead of `batch`: the `subscribed` event, heartbeats.
    ahead: Chunk,
    /// Written after `batch`, last: the events that end the stream.
    last: Chunk,
    cursor: CursorWriter,
}

impl Unsent {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.ahead.is_empty() && self.last.is_empty()
    }

    /// Frames all of it into one chunk for `permit`, and counts it.
    fn send(&mut self, permit: mpsc::Permit<'_, Chunk>, metrics: &Metrics) -> Pending {
        let frames = self.batch.len();
        let mut chunk = std::mem::take(&mut self.ahead);
        let mut done = Pending::default();
        for queued in self.batch.drain(..) {
            chunk.push_frame(&queued.frame, &mut self.cursor);
            done.add(&queued);
        }
        chunk.append(&mut self.last);
        metrics.record_write(frames, chunk.remaining());
        permit.send(chunk);
        done
    }
}

impl SseTransport {
    /// A stream that starts with `subscribed` for `topics`.
    pub fn new(chunks: mpsc::Sender<Chunk>, metrics: Arc<Metrics>, topics: &[Subscribed]) -> Self {
        let mut ahead = Chunk::default();
        ahead.push(subscribed_event(topics));
        let starts: Vec<_> = topics.iter().map(Subscribed::start).collect();
        Self {
            chunks,
            metrics,
            unsent: Unsent {
                batch: VecDeque::new(),
                ahead,
                last: Chunk::default(),
                cursor: CursorWriter::new(&starts),
            },
            stalled_since: None,
        }
    }
}

impl Transport for SseTransport {
    fn settle(&mut self, outbox: &Outbox, written: &Pending) -> Option<CloseReason> {
        take_frames(outbox, &self.metrics, &mut self.unsent.batch, written)
    }

    fn has_pending(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Cancel-safe: nothing is framed before the body has room.
    async fn write_some(
        &mut self,
        outbox: &Outbox,
        write_timeout: Duration,
    ) -> Result<Pending, WriteError> {
        let gone = || WriteError::Io(io::ErrorKind::BrokenPipe.into());
        let permit = match self.chunks.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(gone()),
            Err(mpsc::error::TrySendError::Full(())) => {
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                outbox.socket_full();
                match tokio::time::timeout_at(since + write_timeout, self.chunks.reserve()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(gone()),
                    Err(_) => {
                        self.metrics.record_write_timeout();
                        return Err(WriteError::TimedOut);
                    }
                }
            }
        };
        self.stalled_since = None;
        Ok(self.unsent.send(permit, &self.metrics))
    }

    /// A comment line; a stream's client cannot speak, so it is never
    /// cut for silence.
    fn heartbeat(&mut self, _outbox: &Outbox) -> bool {
        self.unsent.ahead.push(Bytes::from_static(HEARTBEAT));
        true
    }

    /// Shutdown ends the stream after `info` `server_shutdown`, a
    /// server-API disconnect after `info` `disconnected`, a slow consumer
    /// after `error` `SLOW_CONSUMER`; a lost connection gets nothing.
    fn push_last(&mut self, reason: &CloseReason) -> bool {
        if reason.abandons_queue() {
            self.unsent.batch.clear();
        }
        let last = match (reason.closing_error(), reason) {
            (Some((code, why)), _) => reply::error(None, code, why),
            (None, CloseReason::ServerShutdown) => reply::info(None, "server_shutdown"),
            (None, CloseReason::Disconnected(why)) => reply::disconnected(why),
            (None, _) => return false,
        };
        self.unsent.last.push_frame(&last, &mut self.unsent.cursor);
        true
    }

    async fn finish(&mut self) -> io::Result<()> {
        let permit = self
            .chunks
            .reserve()
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.unsent.send(permit, &self.metrics);
        Ok(())
    }
}

/// The body of a `GET /sse` response: the chunks its stream's writer
/// sends, until the writer ends the stream. Dropped (the client went away,
/// or hyper gave up on the connection), it closes the stream's outbox, so
/// its subscriptions end at once rather than at the next write.
pub struct SseBody {
    chunks: mpsc::Receiver<Chunk>,
    outbox: Arc<Outbox>,
}

impl SseBody {
    pub fn new(chunks: mpsc::Receiver<Chunk>, outbox: Arc<Outbox>) -> Self {
        Self { chunks, outbox }
    }
}

impl hyper::body::Body for SseBody {
    type Data = Chunk;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.outbox.close(CloseReason::ConnectionLost);
    }
}
