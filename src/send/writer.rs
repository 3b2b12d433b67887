//! A connection's writer task: takes frames from the outbox, hands the
//! kernel many per `writev`, resumes partial writes exactly, watches the
//! socket's progress (`WRITE_TIMEOUT`), sends heartbeats, and writes the
//! last frames when the connection closes.
//!
//! The loop ([`write_loop`]) is the same for every transport; what differs
//! (how frames reach the peer, what a heartbeat and the last frames are)
//! is a [`Transport`]: [`WebSocketTransport`] here, the SSE stream's in
//! `crate::sse`.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::send::batch::{MAX_BYTES_PER_WRITE, MAX_FRAMES_PER_WRITE};
use crate::send::liveness::Liveness;
use crate::send::outbox::{FrameKind, Outbox, Pending, Queued};
use crate::shutdown::Shutdown;
use crate::wire::close::CloseReason;
use crate::wire::frame::{close_frame, ping_frame};
use crate::wire::reply;

/// How long the last frames (an error, the close frame) may take to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the socket accepted no byte for the write timeout")]
    TimedOut,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes queued frames, many per syscall, resuming after partial writes,
/// and counts each write (frames finished, bytes) once.
pub struct FrameWriter<W> {
    sink: W,
    metrics: Arc<Metrics>,
    batch: VecDeque<Queued>,
    /// Bytes of `batch[0]` already written.
    offset: usize,
    /// Since when the socket has accepted nothing while frames wait.
    stalled_since: Option<Instant>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(sink: W, metrics: Arc<Metrics>) -> Self {
        Self {
            sink,
            metrics,
            batch: VecDeque::new(),
            offset: 0,
            stalled_since: None,
        }
    }

    /// One vectored write of the batch's head; returns what it finished.
    /// When the socket is full, tells `outbox` and waits for room until
    /// `write_timeout` has passed since the socket last took a byte.
    /// Cancel-safe: a cancelled write wrote nothing, and the stall keeps
    /// its start.
    pub async fn write_some(
        &mut self,
        outbox: &Outbox,
        write_timeout: Duration,
    ) -> Result<Pending, WriteError> {
        let first_try = std::future::poll_fn(|cx| Poll::Ready(self.poll_write_head(cx))).await;
        let written = match first_try {
            Poll::Ready(written) => written?,
            Poll::Pending => {
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                outbox.socket_full();
                let write = std::future::poll_fn(|cx| self.poll_write_head(cx));
                // Boxed: a timer inline would take room in every writer's
                // task for its whole life, and only a full socket needs one.
                match Box::pin(tokio::time::timeout_at(since + write_timeout, write)).await {
                    Ok(written) => written?,
                    Err(_) => {
                        self.metrics.record_write_timeout();
                        return Err(WriteError::TimedOut);
                    }
                }
            }
        };
        let done = self.advance(written)?;
        self.stalled_since = None;
        Ok(done)
    }

    /// Drops what `written` bytes completed from the batch and counts it; a
    /// write of nothing means the socket will take no more.
    fn advance(&mut self, written: usize) -> io::Result<Pending> {
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let (bytes, mut written) = (written, written);
        let mut done = Pending::default();
        let mut frames = 0;
        while written > 0 {
            let remaining = self.batch[0].frame.len() - self.offset;
            if written < remaining {
                self.offset += written;
                break;
            }
            written -= remaining;
            self.offset = 0;
            let finished = self.batch.pop_front().expect("written bytes were queued");
            done.add(&finished);
            frames += 1;
        }
        self.metrics.record_write(frames, bytes);
        Ok(done)
    }

    /// The slice array lives only inside a poll, not across an await, so
    /// it costs an idle connection's future nothing.
    fn poll_write_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_WRITE];
        let mut count = 0;
        let mut total = 0;
        for (index, queued) in self.batch.iter().enumerate() {
            let unwritten = if index == 0 {
                &queued.frame[self.offset..]
            } else {
                &queued.frame[..]
            };
            slices[count] = IoSlice::new(unwritten);
            count += 1;
            total += unwritten.len();
            if count == MAX_FRAMES_PER_WRITE || total >= MAX_BYTES_PER_WRITE {
                break;
            }
        }
        Pin::new(&mut self.sink).poll_write_vectored(cx, &slices[..count])
    }

    /// Counts what the last write finished and takes more from `outbox`;
    /// reports whether the connection is closing. After a write, samples
    /// the queue depth (once per write, never per event).
    pub fn settle(&mut self, outbox: &Outbox, written: &Pending) -> Option<CloseReason> {
        take_frames(outbox, &self.metrics, &mut self.batch, written)
    }

    /// Drops every frame not yet started; a half-written one must finish
    /// or the peer cannot parse what follows.
    pub fn abandon_unstarted(&mut self) {
        self.batch.truncate(usize::from(self.offset > 0));
    }

    /// Queues one of the connection's last frames after everything taken.
    pub fn push_last(&mut self, frame: Bytes) {
        self.batch.push_back(Queued::new(frame, FrameKind::Closing));
    }

    /// Whether frames are waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Writes everything taken so far, with no write timeout; callers bound
    /// it themselves.
    pub async fn write_all(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            let written = std::future::poll_fn(|cx| self.poll_write_head(cx)).await?;
            self.advance(written)?;
        }
        Ok(())
    }

    /// Writes everything pending, then shuts the write side down.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.write_all().await?;
        self.sink.shutdown().await
    }
}

/// Counts what the last write finished and tops `batch` up from `outbox`;
/// reports whether the connection is closing. After a write, samples the
/// queue depth (once per write, never per event).
pub fn take_frames(
    outbox: &Outbox,
    metrics: &Metrics,
    batch: &mut VecDeque<Queued>,
    written: &Pending,
) -> Option<CloseReason> {
    let settled = outbox.settle(written, batch, MAX_FRAMES_PER_WRITE);
    if batch.is_empty() {
        // The writer is about to wait: an idle connection keeps no slots.
        *batch = VecDeque::new();
    }
    if !written.is_empty() {
        metrics.record_queue_depth(settled.pending_events);
    }
    settled.close
}

/// How the write loop reaches one kind of peer: the frames it has taken,
/// how they are written, what a heartbeat is, and what the last frames
/// of a closing connection are.
pub trait Transport {
    /// Counts what the last write finished and takes more from `outbox`;
    /// reports whether the connection is closing.
    fn settle(&mut self, outbox: &Outbox, written: &Pending) -> Option<CloseReason>;

    /// Whether anything taken is waiting to be written.
    fn has_pending(&self) -> bool;

    /// Writes some of what is pending; returns what it finished. Gives up
    /// once the peer has taken nothing for `write_timeout` (telling
    /// `outbox` when it first finds the peer full). Cancel-safe.
    fn write_some(
        &mut self,
        outbox: &Outbox,
        write_timeout: Duration,
    ) -> impl Future<Output = Result<Pending, WriteError>> + Send;

    /// A heartbeat period has passed: queues the heartbeat, or says the
    /// peer is gone (false).
    fn heartbeat(&mut self, outbox: &Outbox) -> bool;

    /// Queues the last frames a connection closing for `reason` writes
    /// (after dropping what it had not started, when the reason abandons
    /// the queue); false when nothing more is to be written.
    fn push_last(&mut self, reason: &CloseReason) -> bool;

    /// Writes everything pending and ends the stream; callers bound it.
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A WebSocket's writer: its frames go out as they are, the heartbeat is
/// an `info` ping and a ping frame, and a peer silent for two heartbeat
/// periods is given up on.
pub struct WebSocketTransport<W> {
    frames: FrameWriter<W>,
    liveness: Arc<Liveness>,
    heartbeat: Duration,
}

impl<W> WebSocketTransport<W> {
    pub fn new(frames: FrameWriter<W>, liveness: Arc<Liveness>, heartbeat: Duration) -> Self {
        Self {
            frames,
            liveness,
            heartbeat,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> Transport for WebSocketTransport<W> {
    fn settle(&mut self, outbox: &Outbox, written: &Pending) -> Option<CloseReason> {
        self.frames.settle(outbox, written)
    }

    fn has_pending(&self) -> bool {
        self.frames.has_pending()
    }

    async fn write_some(
        &mut self,
        outbox: &Outbox,
        write_timeout: Duration,
    ) -> Result<Pending, WriteError> {
        self.frames.write_some(outbox, write_timeout).await
    }

    /// Also bounds a flush on close: a peer that stopped reading and
    /// sending is given up on after two intervals, whatever the close was
    /// for.
    fn heartbeat(&mut self, outbox: &Outbox) -> bool {
        let alive = self.liveness.silent_for() < 2 * self.heartbeat;
        if alive {
            outbox.push_reply(reply::info(None, "ping"));
            outbox.push_reply(ping_frame());
        }
        alive
    }

    fn push_last(&mut self, reason: &CloseReason) -> bool {
        let Some(code) = reason.code() else {
            return false;
        };
        if reason.abandons_queue() {
            self.frames.abandon_unstarted();
        }
        if let Some((code, why)) = reason.closing_error() {
            self.frames.push_last(reply::error(None, code, why));
        }
        self.frames
            .push_last(close_frame(code, reason.close_text()));
        true
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.frames.finish().await
    }
}

/// When a connection's writer gives up on its peer.
pub struct WriterTiming {
    /// Period of the heartbeat.
    pub heartbeat: Duration,
    /// `WRITE_TIMEOUT`: frames waiting and no byte accepted for this long
    /// cuts the connection as a slow consumer.
    pub write_timeout: Duration,
    /// `COALESCE_WINDOW` (opt-in; zero by default): a connection that wrote
    /// less than this long ago lets frames gather for the rest of the window
    /// before writing again, unless its pending events reach the pause mark.
    pub coalesce_window: Duration,
}

impl WriterTiming {
    /// `HEARTBEAT_INTERVAL`, `WRITE_TIMEOUT` and `COALESCE_WINDOW`.
    pub fn configured(config: &Config) -> Self {
        Self {
            heartbeat: config.heartbeat_interval,
            write_timeout: config.write_timeout,
            coalesce_window: config.coalesce_window,
        }
    }
}

/// The writer task: writes whatever is pending as soon as the socket takes
/// it — frames that gathered while the writer waited to be scheduled or for
/// the socket go out together; no frame waits for a timer unless
/// `COALESCE_WINDOW` asks for it — sends heartbeats, and on close sends the
/// last frames. Returns why the connection closed.
///
/// A plain function returning an `async move` block: an `async fn` would
/// keep its arguments in the task beside the locals they move into, for the
/// connection's whole life.
pub fn write_loop<T: Transport + Send>(
    mut writer: T,
    outbox: Arc<Outbox>,
    timing: WriterTiming,
    shutdown: Shutdown,
) -> impl Future<Output = CloseReason> + Send {
    let WriterTiming {
        heartbeat,
        write_timeout,
        coalesce_window,
    } = timing;
    async move {
        let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut written = Pending::default();
        // With a coalescing window: until when frames may gather.
        let mut gather_until: Option<Instant> = None;
        let reason = loop {
            // Read before the queue is taken, so the reader's last replies are.
            let reader_done = outbox.reader_done();
            let closing = writer.settle(&outbox, &written);
            let just_wrote = !written.is_empty();
            written = Pending::default();
            if let Some(reason) = &closing {
                if reason.abandons_queue() || (reader_done && !writer.has_pending()) {
                    break reason.clone();
                }
            }
            if !writer.has_pending() {
                if just_wrote && !coalesce_window.is_zero() {
                    gather_until = Some(Instant::now() + coalesce_window);
                }
                tokio::select! {
                    biased;
                    _ = outbox.wait_for_frames() => {
                        if let Some(until) = gather_until.take().filter(|until| *until > Instant::now()) {
                            // Any further wake-up is a close or pending events at
                            // the pause mark: either ends the gathering.
                            tokio::select! {
                                // Boxed for the same reason as a stalled write's timer.
                                _ = Box::pin(tokio::time::sleep_until(until)) => {}
                                _ = outbox.wait_for_frames() => {}
                                _ = shutdown.draining() => {}
                            }
                        }
                    }
                    _ = ticker.tick() => if !writer.heartbeat(&outbox) {
                        break CloseReason::HeartbeatTimeout;
                    },
                    _ = shutdown.draining(), if closing.is_none() => outbox.close(CloseReason::ServerShutdown),
                }
                continue;
            }
            // The write first: when the socket takes it at once, nothing else
            // is polled (a close is seen by the next `settle`).
            tokio::select! {
                biased;
                result = writer.write_some(&outbox, write_timeout) => match result {
                    Ok(done) => written = done,
                    Err(WriteError::TimedOut) => break CloseReason::WriteTimeout,
                    Err(WriteError::Io(_)) => break CloseReason::ConnectionLost,
                },
                _ = outbox.closed(), if closing.is_none() => {}
                _ = shutdown.draining(), if closing.is_none() => outbox.close(CloseReason::ServerShutdown),
                _ = ticker.tick() => if !writer.heartbeat(&outbox) {
                    break CloseReason::HeartbeatTimeout;
                },
            }
        };
        outbox.close(reason.clone());
        if writer.push_last(&reason) {
            let _ = tokio::time::timeout(CLOSE_GRACE, writer.finish()).await;
        }
        reason
    }
}
