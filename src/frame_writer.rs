//! Vectored writes of queued frames: a connection's writer hands the kernel
//! many encoded frames per syscall and resumes exactly where a partial
//! write stopped.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::outbox::{CloseReason, Outbox, Queued};

/// Most slices handed to one `writev`.
const MAX_SLICES_PER_WRITE: usize = 64;
/// Most bytes handed to one `writev`.
const MAX_BYTES_PER_WRITE: usize = 64 * 1024;

/// Writes queued frames, many per syscall, resuming after partial writes.
pub struct FrameWriter<W> {
    sink: W,
    batch: VecDeque<Queued>,
    /// Bytes of `batch[0]` already written.
    offset: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(sink: W) -> Self {
        Self {
            sink,
            batch: VecDeque::new(),
            offset: 0,
        }
    }

    /// One vectored write of the batch's head. Cancel-safe: a cancelled
    /// write wrote nothing, and the batch only advances by what was written.
    pub async fn write_some(&mut self) -> io::Result<()> {
        let mut written = std::future::poll_fn(|cx| self.poll_write_head(cx)).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let remaining = self.batch[0].frame.len() - self.offset;
            if written >= remaining {
                written -= remaining;
                self.batch.pop_front();
                self.offset = 0;
            } else {
                self.offset += written;
                written = 0;
            }
        }
        Ok(())
    }

    /// The slice array lives only inside a poll, not across an await, so
    /// it costs an idle connection's future nothing.
    fn poll_write_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES_PER_WRITE];
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
            if count == MAX_SLICES_PER_WRITE || total >= MAX_BYTES_PER_WRITE {
                break;
            }
        }
        Pin::new(&mut self.sink).poll_write_vectored(cx, &slices[..count])
    }

    pub async fn write_all(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            self.write_some().await?;
        }
        Ok(())
    }

    /// Drops every frame not yet started; a half-written one must finish
    /// or the peer cannot parse what follows.
    pub fn abandon_unstarted(&mut self) {
        self.batch.truncate(usize::from(self.offset > 0));
    }

    /// Queues a frame after everything already taken.
    pub fn push(&mut self, frame: Bytes) {
        self.batch.push_back(Queued::control(frame));
    }

    /// Whether frames are waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Takes everything queued in `outbox` and reports whether the
    /// connection is closing.
    pub fn refill(&mut self, outbox: &Outbox) -> Option<CloseReason> {
        outbox.take_all(&mut self.batch)
    }

    /// Writes everything pending, then shuts the write side down.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.write_all().await?;
        self.sink.shutdown().await
    }
}
