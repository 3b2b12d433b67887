//! A connection's outbox: the bounded queue between everything that sends
//! to a connection (fan-outs, its own reader) and its writer task.
//!
//! Publishers push shared `Bytes` handles under a short per-connection lock
//! and never wait inside it. The outbox counts what is *pending*: queued, or
//! taken by the writer and not yet fully written. The writer reports what
//! each write finished, so the counts, the slow-consumer decision and the
//! pauses all see the same number (see the module above for the rule).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::sync::Notify;

use crate::config::{Config, SlowConsumerPolicy};
use crate::send::batch::MAX_FRAMES_PER_WRITE;
use crate::send::event::{Deflate, EventFrame};
use crate::sync::lock;
use crate::wire::close::CloseReason;

/// The two bounds on a subscriber's pending events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// `SUBSCRIBER_QUEUE_SIZE`: pending events.
    pub events: usize,
    /// `SUBSCRIBER_QUEUE_BYTES`: pending events' encoded bytes.
    pub bytes: usize,
}

impl QueueLimits {
    /// Which bound one more event of `len` bytes would break, if any. The
    /// first pending event always fits, so no frame size is ever refused.
    fn bound_broken_by(&self, pending: &Pending, len: usize) -> Option<QueueBound> {
        if pending.events == 0 {
            None
        } else if pending.events + 1 > self.events {
            Some(QueueBound::Events)
        } else if pending.bytes + len > self.bytes {
            Some(QueueBound::Bytes)
        } else {
            None
        }
    }

    /// Whether `pending` is at or past half of either bound: the mark at
    /// which publishers wait for a writer that is behind.
    fn at_pause_mark(&self, pending: &Pending) -> bool {
        pending.events * 2 >= self.events.max(2) || pending.bytes * 2 >= self.bytes
    }
}

/// Which of a subscriber's bounds an event would break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueBound {
    /// `SUBSCRIBER_QUEUE_SIZE`.
    Events,
    /// `SUBSCRIBER_QUEUE_BYTES`.
    Bytes,
}

/// What happened to an event pushed into an outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Queued, and the subscriber's writer is behind while its socket takes
    /// bytes: the publisher should wait for it (`Outbox::writer_caught_up`).
    QueuedWriterBehind,
    /// Queued after dropping the oldest queued events (`drop_oldest`).
    QueuedDroppingOldest,
    /// Not queued: a bound was reached, nothing queued could be dropped
    /// (`drop_oldest`, everything pending is in the writer's hands).
    Dropped,
    /// A bound was reached under `disconnect`: the connection is closing.
    Overflowed(QueueBound),
    /// The connection is closing; nothing was queued.
    Closed,
}

/// What `Outbox::settle` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Set once the connection is closing.
    pub close: Option<CloseReason>,
    /// Events pending (queued or in the writer's batch) after the write.
    pub pending_events: usize,
}

/// What a queued frame is, which decides what it counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A live event: counts against the bounds, may be dropped.
    Event,
    /// A replayed event: bounded by the replay ring the subscriber asked
    /// for, so it counts against nothing.
    Replay,
    /// A reply or notice: never dropped; counts toward the reader's pause.
    Reply,
    /// The writer's own last frames (an error, the close frame), written
    /// after the queue is abandoned or flushed: counts against nothing.
    Closing,
}

/// A frame waiting to be written.
#[derive(Debug)]
pub struct Queued {
    pub frame: Bytes,
    pub kind: FrameKind,
}

impl Queued {
    pub fn new(frame: Bytes, kind: FrameKind) -> Self {
        Self { frame, kind }
    }
}

/// Events (with their bytes) and replies pending: queued or in the writer's
/// batch and not yet fully written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub events: usize,
    pub bytes: usize,
    pub replies: usize,
}

impl Pending {
    /// Counts a frame in.
    pub fn add(&mut self, queued: &Queued) {
        match queued.kind {
            FrameKind::Event => {
                self.events += 1;
                self.bytes += queued.frame.len();
            }
            FrameKind::Reply => self.replies += 1,
            FrameKind::Replay | FrameKind::Closing => {}
        }
    }

    fn subtract(&mut self, done: &Pending) {
        self.events -= done.events;
        self.bytes -= done.bytes;
        self.replies -= done.replies;
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Default)]
struct State {
    /// Frames not yet taken by the writer, oldest first.
    frames: VecDeque<Queued>,
    pending: Pending,
    /// A write found the socket full, and pending events have not fallen
    /// back under the pause mark since: the subscriber is not keeping up,
    /// so publishers do not wait for it.
    socket_full: bool,
    /// Where the frames the writer may not take yet start: the reader's
    /// replies to the frames of one read (and whatever was queued after
    /// them), held until it has read what it can, so they go out together.
    held_from: Option<usize>,
    /// Tasks in `writer_caught_up` or `wait_for_reader_room` (`u32`, to
    /// share a word with `socket_full`).
    waiters: u32,
    close: Option<CloseReason>,
}

pub struct Outbox {
    state: Mutex<State>,
    limits: QueueLimits,
    policy: SlowConsumerPolicy,
    /// Wakes the writer when the queue turns non-empty, or closes.
    writer_wakeup: Notify,
    /// Wakes waiters when pending counts fall, the socket fills, or it closes.
    progress: Notify,
    /// Wakes whoever waits in [`closed`](Self::closed).
    closed_wakeup: Notify,
    /// Set once the connection starts closing, for `closed` to check
    /// without the lock.
    closing: AtomicBool,
    /// The connection's reader has stopped and queued its last replies.
    reader_done: AtomicBool,
    /// What the connection agreed to for `permessage-deflate`, if anything;
    /// boxed, so that the outbox stays in 256 bytes without it.
    deflate: Option<Box<Deflate>>,
}

impl Outbox {
    /// An empty outbox with the given bounds and slow-consumer policy.
    pub fn new(limits: QueueLimits, policy: SlowConsumerPolicy) -> Self {
        Self {
            state: Mutex::default(),
            limits,
            policy,
            writer_wakeup: Notify::new(),
            progress: Notify::new(),
            closed_wakeup: Notify::new(),
            closing: AtomicBool::new(false),
            reader_done: AtomicBool::new(false),
            deflate: None,
        }
    }

    /// An empty outbox with the configured bounds and policy
    /// (`SUBSCRIBER_QUEUE_SIZE`, `SUBSCRIBER_QUEUE_BYTES`,
    /// `SLOW_CONSUMER_POLICY`), as every subscriber has.
    pub fn configured(config: &Config) -> Self {
        Self::new(
            QueueLimits {
                events: config.subscriber_queue_size as usize,
                bytes: config.subscriber_queue_bytes.0,
            },
            config.slow_consumer_policy,
        )
    }

    /// Events go out compressed as the connection agreed.
    pub fn deflating(self, deflate: Option<Deflate>) -> Self {
        Self {
            deflate: deflate.map(Box::new),
            ..self
        }
    }

    /// Queues a live event. An event that would break a bound applies the
    /// slow-consumer policy; one that leaves a subscriber whose socket takes
    /// bytes at its pause mark tells the publisher to wait for its writer.
    pub fn push_event(&self, event: &EventFrame) -> Delivery {
        let frame = event.frame_for(self.deflate());
        let mut state = self.lock();
        if state.close.is_some() {
            return Delivery::Closed;
        }
        let mut delivery = Delivery::Queued;
        if let Some(bound) = self.limits.bound_broken_by(&state.pending, frame.len()) {
            match self.policy {
                SlowConsumerPolicy::Disconnect => {
                    drop(state);
                    self.close(CloseReason::SlowConsumer);
                    return Delivery::Overflowed(bound);
                }
                SlowConsumerPolicy::DropOldest => {
                    if !self.drop_oldest_until_fits(&mut state, frame.len()) {
                        return Delivery::Dropped;
                    }
                    delivery = Delivery::QueuedDroppingOldest;
                }
            }
        }
        let queued = Queued::new(frame.clone(), FrameKind::Event);
        state.pending.add(&queued);
        if delivery == Delivery::Queued
            && !state.socket_full
            && self.limits.at_pause_mark(&state.pending)
        {
            delivery = Delivery::QueuedWriterBehind;
        }
        // A writer gathering frames (`COALESCE_WINDOW`) must not keep a
        // publisher waiting: reaching the pause mark wakes it too.
        self.enqueue(state, queued, delivery == Delivery::QueuedWriterBehind);
        delivery
    }

    /// `drop_oldest`: drops queued events, oldest first, until an event of
    /// `len` bytes fits. Events the writer has taken cannot be dropped;
    /// false if dropping the rest is not enough.
    fn drop_oldest_until_fits(&self, state: &mut State, len: usize) -> bool {
        while self.limits.bound_broken_by(&state.pending, len).is_some() {
            let Some(oldest) = state
                .frames
                .iter()
                .position(|queued| queued.kind == FrameKind::Event)
            else {
                return false;
            };
            let dropped = state.frames.remove(oldest).expect("position is in range");
            if let Some(held_from) = state.held_from.as_mut().filter(|from| **from > oldest) {
                *held_from -= 1;
            }
            state.pending.subtract(&Pending {
                events: 1,
                bytes: dropped.frame.len(),
                replies: 0,
            });
        }
        true
    }

    /// Events meant for this subscriber were lost before they reached its
    /// queue (cluster mode: its node fell behind the stream). Under
    /// `disconnect` it is closed as a slow consumer, so it knows to
    /// resubscribe with `last_n`; under `drop_oldest` losing events is what
    /// it chose. Returns whether it was disconnected.
    pub fn missed_events(&self) -> bool {
        match self.policy {
            SlowConsumerPolicy::Disconnect => {
                self.close(CloseReason::SlowConsumer);
                true
            }
            SlowConsumerPolicy::DropOldest => false,
        }
    }

    /// What the connection agreed to for `permessage-deflate`, if anything.
    pub fn deflate(&self) -> Option<&Deflate> {
        self.deflate.as_deref()
    }

    /// Queues replayed events; bounded by the replay ring, not the policy.
    pub fn push_replay<'a>(&self, events: impl Iterator<Item = &'a EventFrame>) {
        // Frames are picked (an event not deflated yet is deflated) before
        // taking the lock this connection's writer and fan-outs contend for.
        let frames: Vec<Queued> = events
            .map(|event| Queued::new(event.frame_for(self.deflate()).clone(), FrameKind::Replay))
            .collect();
        let mut state = self.lock();
        if state.close.is_none() {
            let was_empty = state.frames.is_empty();
            state.frames.extend(frames);
            let became_non_empty = was_empty && !state.frames.is_empty();
            drop(state);
            self.wake_writer_if(became_non_empty);
        }
    }

    /// Queues a reply or notice; never dropped while the connection is
    /// open, nor while it closes with its queue flushed and its reader has
    /// requests left to answer.
    pub fn push_reply(&self, frame: Bytes) {
        let mut state = self.lock();
        if self.takes_replies(&state) {
            let queued = Queued::new(frame, FrameKind::Reply);
            state.pending.add(&queued);
            self.enqueue(state, queued, false);
        }
    }

    /// The reader's reply to a client frame: queued in order like any
    /// reply, but held from the writer, without waking it, until the reader
    /// runs out of frames to handle (`holding_replies`) or a write's worth
    /// of frames is held; then the writer is woken once and writes them
    /// together, instead of once per reply.
    pub fn push_held_reply(&self, frame: Bytes) {
        let mut state = self.lock();
        if self.takes_replies(&state) {
            let queued = Queued::new(frame, FrameKind::Reply);
            state.pending.add(&queued);
            let queued_len = state.frames.len();
            let held_from = *state.held_from.get_or_insert(queued_len);
            state.frames.push_back(queued);
            if state.frames.len() - held_from >= MAX_FRAMES_PER_WRITE {
                self.release_held(state);
            }
        }
    }

    /// Runs the reader's `work`, releasing the replies it holds whenever it
    /// has to wait (for the socket, a writer, the backplane): they are
    /// never held while the reader waits.
    pub fn holding_replies<F: Future>(&self, work: F) -> HoldingReplies<'_, F> {
        HoldingReplies { outbox: self, work }
    }

    /// Lets the writer take the held replies, and wakes it for them.
    fn release_held(&self, mut state: std::sync::MutexGuard<'_, State>) {
        let held = state
            .held_from
            .take()
            .is_some_and(|from| state.frames.len() > from);
        drop(state);
        self.wake_writer_if(held);
    }

    fn takes_replies(&self, state: &State) -> bool {
        state.close.as_ref().is_none_or(|reason| {
            !reason.abandons_queue() && !self.reader_done.load(Ordering::Acquire)
        })
    }

    /// Appends a counted frame; wakes the writer if the queue was empty, or
    /// if `wake_anyway`.
    fn enqueue(
        &self,
        mut state: std::sync::MutexGuard<'_, State>,
        queued: Queued,
        wake_anyway: bool,
    ) {
        let was_empty = state.frames.is_empty();
        state.frames.push_back(queued);
        drop(state);
        self.wake_writer_if(was_empty || wake_anyway);
    }

    /// The writer takes frames whenever it has written what it took, so
    /// only the push that makes the queue non-empty (or a pressing one)
    /// needs to wake it.
    fn wake_writer_if(&self, needed: bool) {
        if needed {
            self.writer_wakeup.notify_one();
        }
    }

    /// The writer's one call per write: counts what it finished writing
    /// (`written`), tops `batch` up to `max_frames` from the queue, and
    /// reports whether the connection is closing and how many events are
    /// pending now.
    pub fn settle(
        &self,
        written: &Pending,
        batch: &mut VecDeque<Queued>,
        max_frames: usize,
    ) -> Settled {
        let mut state = self.lock();
        if !written.is_empty() {
            state.pending.subtract(written);
            if !self.limits.at_pause_mark(&state.pending) {
                state.socket_full = false;
            }
        }
        let room = max_frames.saturating_sub(batch.len());
        let takeable = state.held_from.unwrap_or(state.frames.len());
        if room >= state.frames.len() && batch.is_empty() && state.held_from.is_none() {
            std::mem::swap(batch, &mut state.frames);
        } else {
            let take = room.min(takeable);
            batch.extend(state.frames.drain(..take));
            if let Some(held_from) = state.held_from.as_mut() {
                *held_from -= take;
            }
            if state.frames.is_empty() {
                // Nothing left to take: an idle connection keeps no slots.
                state.frames = VecDeque::new();
            }
        }
        let settled = Settled {
            close: state.close.clone(),
            pending_events: state.pending.events,
        };
        let wake = state.waiters > 0 && !written.is_empty();
        drop(state);
        if wake {
            self.progress.notify_waiters();
        }
        settled
    }

    /// The writer found the socket full: publishers stop waiting for this
    /// connection (it is not keeping up; its bounds now decide).
    pub fn socket_full(&self) {
        let mut state = self.lock();
        state.socket_full = true;
        let wake = state.waiters > 0;
        drop(state);
        if wake {
            self.progress.notify_waiters();
        }
    }

    /// Resolves when there may be new frames to take (or a close).
    pub async fn wait_for_frames(&self) {
        self.writer_wakeup.notified().await;
    }

    /// A publisher's wait after `Delivery::QueuedWriterBehind`: resolves once
    /// the writer is back under the pause mark, its socket turns out to be
    /// full (then it is the subscriber that is slow, and its bounds decide),
    /// or the connection closes.
    pub async fn writer_caught_up(&self) {
        self.wait_until(|limits, state| state.socket_full || !limits.at_pause_mark(&state.pending))
            .await;
    }

    /// The reader's wait after each client frame: it reads no further
    /// request while this connection's own pending frames (events and
    /// replies alike) are at the pause mark, so a client that does not
    /// read its replies cannot grow them without bound.
    pub async fn wait_for_reader_room(&self) {
        self.wait_until(|limits, state| {
            let own = Pending {
                events: state.pending.events + state.pending.replies,
                ..state.pending
            };
            !limits.at_pause_mark(&own)
        })
        .await;
    }

    async fn wait_until(&self, done: impl Fn(&QueueLimits, &State) -> bool) {
        let settled = || {
            let state = self.lock();
            state.close.is_some() || done(&self.limits, &state)
        };
        if settled() {
            return;
        }
        let _waiter = Waiter::register(self);
        loop {
            // Created before the check, so a wake-up between the two is kept.
            let progress = self.progress.notified();
            if settled() {
                return;
            }
            tokio::select! {
                _ = progress => {}
                _ = self.closed() => return,
            }
        }
    }

    /// Starts closing the connection; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(reason);
            self.closing.store(true, Ordering::Release);
            drop(state);
            self.closed_wakeup.notify_waiters();
            self.writer_wakeup.notify_one();
        }
    }

    /// The reader has stopped for good and queued its last replies. A
    /// writer closing with its queue flushed writes the close frame only
    /// after this, so that every request read gets its answer.
    pub fn reader_finished(&self) {
        let mut state = self.lock();
        state.held_from = None;
        self.reader_done.store(true, Ordering::Release);
        drop(state);
        self.writer_wakeup.notify_one();
    }

    /// Whether `reader_finished` was called. Read before `settle`, it
    /// covers every reply the reader queued: `settle` takes them.
    pub fn reader_done(&self) -> bool {
        self.reader_done.load(Ordering::Acquire)
    }

    /// Why the connection is closing, once it is (the writer learns it
    /// from `settle`).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close.clone()
    }

    /// Resolves once the connection starts closing.
    pub async fn closed(&self) {
        loop {
            // Created before the check: `notify_waiters` reaches it from then on.
            let wakeup = self.closed_wakeup.notified();
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            wakeup.await;
        }
    }

    #[cfg(test)]
    fn pending(&self) -> Pending {
        self.lock().pending
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Counts a task waiting on `progress` for as long as it waits, so the
/// writer wakes waiters only when there are some.
struct Waiter<'a>(&'a Outbox);

impl<'a> Waiter<'a> {
    fn register(outbox: &'a Outbox) -> Self {
        outbox.lock().waiters += 1;
        Self(outbox)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.lock().waiters -= 1;
    }
}

pin_project! {
    /// [`Outbox::holding_replies`]: a combinator rather than an `async fn`,
    /// which would store `work` twice (as its argument and pinned), and
    /// `work` is a connection's whole read loop, alive as long as it is.
    pub struct HoldingReplies<'a, F> {
        outbox: &'a Outbox,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for HoldingReplies<'_, F> {
    type Output = F::Output;

    /// Whether the work waits or is done, its held replies go out.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let poll = this.work.poll(cx);
        this.outbox.release_held(this.outbox.lock());
        poll
    }
}

/// Subscribers whose writers fell behind during a fan-out; the publisher
/// waits for them before it publishes more. Empty (and unallocated) in the
/// common case.
#[derive(Default)]
pub struct LaggingWriters(Vec<Arc<Outbox>>);

impl LaggingWriters {
    pub fn push(&mut self, outbox: &Arc<Outbox>) {
        self.0.push(outbox.clone());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Resolves once each of them has caught up, found its socket full
    /// (then its own bound decides) or closed.
    pub async fn wait(self) {
        for outbox in &self.0 {
            outbox.writer_caught_up().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    fn event(n: u8) -> EventFrame {
        EventFrame::new(frame(n))
    }

    fn outbox(events: usize, bytes: usize, policy: SlowConsumerPolicy) -> Outbox {
        Outbox::new(QueueLimits { events, bytes }, policy)
    }

    /// Takes every queued frame as the writer would; `written` reports them
    /// written as well, so they stop counting.
    fn drain(outbox: &Outbox, written: bool) -> (Vec<u8>, Option<CloseReason>) {
        let mut batch = VecDeque::new();
        let close = outbox
            .settle(&Pending::default(), &mut batch, usize::MAX)
            .close;
        let firsts = batch.iter().map(|queued| queued.frame[0]).collect();
        if written {
            let mut done = Pending::default();
            batch.iter().for_each(|queued| done.add(queued));
            outbox.settle(&done, &mut VecDeque::new(), 0);
        }
        (firsts, close)
    }

    #[test]
    fn keeps_fifo_order_across_kinds_and_counts_only_live_events() {
        let outbox = outbox(8, usize::MAX, SlowConsumerPolicy::Disconnect);
        outbox.push_reply(frame(1));
        outbox.push_replay([event(2), event(3)].iter());
        assert_eq!(outbox.push_event(&event(4)), Delivery::Queued);
        let pending = Pending {
            events: 1,
            bytes: 10,
            replies: 1,
        };
        assert_eq!(outbox.pending(), pending);
        assert_eq!(drain(&outbox, false), (vec![1, 2, 3, 4], None));
        assert_eq!(outbox.pending(), pending, "taken is still pending");
        assert_eq!(drain(&outbox, true), (vec![], None));
    }

    #[test]
    fn written_frames_stop_counting() {
        let outbox = outbox(4, usize::MAX, SlowConsumerPolicy::Disconnect);
        for round in 0..5 {
            assert_eq!(outbox.push_event(&event(round)), Delivery::Queued);
            drain(&outbox, true);
        }
        assert_eq!(outbox.pending(), Pending::default());
    }

    #[test]
    fn a_replay_larger_than_the_bound_cuts_nobody() {
        let outbox = outbox(4, usize::MAX, SlowConsumerPolicy::Disconnect);
        let ring: Vec<_> = (0..10).map(event).collect();
        outbox.push_replay(ring.iter());
        assert_eq!(outbox.push_event(&event(10)), Delivery::Queued);
        assert_eq!(outbox.close_reason(), None);
    }

    #[test]
    fn disconnect_policy_closes_at_the_event_bound() {
        let outbox = outbox(2, usize::MAX, SlowConsumerPolicy::Disconnect);
        outbox.socket_full();
        assert_eq!(outbox.push_event(&event(1)), Delivery::Queued);
        assert_eq!(outbox.push_event(&event(2)), Delivery::Queued);
        assert_eq!(
            outbox.push_event(&event(3)),
            Delivery::Overflowed(QueueBound::Events)
        );
        assert_eq!(outbox.push_event(&event(4)), Delivery::Closed);
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(
            drain(&outbox, false),
            (vec![1, 2], Some(CloseReason::SlowConsumer))
        );
    }

    #[test]
    fn the_byte_bound_applies_too_but_one_event_always_fits() {
        let outbox = outbox(100, 25, SlowConsumerPolicy::Disconnect);
        outbox.socket_full();
        let big = EventFrame::new(Bytes::from(vec![0; 1000]));
        assert_eq!(outbox.push_event(&big), Delivery::Queued, "alone it fits");
        drain(&outbox, true);
        outbox.socket_full();
        assert_eq!(outbox.push_event(&event(1)), Delivery::Queued);
        assert_eq!(outbox.push_event(&event(2)), Delivery::Queued);
        assert_eq!(
            outbox.push_event(&event(3)),
            Delivery::Overflowed(QueueBound::Bytes),
            "30 > 25 bytes"
        );
    }

    #[test]
    fn drop_oldest_drops_queued_events_but_not_replies_or_taken_ones() {
        let outbox = outbox(2, usize::MAX, SlowConsumerPolicy::DropOldest);
        outbox.socket_full();
        outbox.push_reply(frame(0));
        assert_eq!(outbox.push_event(&event(1)), Delivery::Queued);
        let mut taken = VecDeque::new();
        outbox.settle(&Pending::default(), &mut taken, 2);
        assert_eq!(taken.len(), 2, "the reply and event 1 are the writer's");
        for n in 2..=5 {
            outbox.push_event(&event(n));
        }
        assert_eq!(outbox.push_event(&event(6)), Delivery::QueuedDroppingOldest);
        assert_eq!(drain(&outbox, false), (vec![6], None));
        assert_eq!(
            outbox.push_event(&event(7)),
            Delivery::Dropped,
            "only taken events are left to drop"
        );
    }

    #[test]
    fn replies_are_not_bounded_and_stop_once_the_closing_reader_is_done() {
        let cut = outbox(1, usize::MAX, SlowConsumerPolicy::Disconnect);
        cut.close(CloseReason::SlowConsumer);
        cut.push_reply(frame(1));
        assert_eq!(
            drain(&cut, false),
            (vec![], Some(CloseReason::SlowConsumer)),
            "an abandoned queue takes nothing more"
        );

        let outbox = outbox(1, usize::MAX, SlowConsumerPolicy::Disconnect);
        for n in 0..4 {
            outbox.push_reply(frame(n));
        }
        outbox.close(CloseReason::ServerShutdown);
        outbox.close(CloseReason::SlowConsumer);
        outbox.push_reply(frame(8));
        outbox.reader_finished();
        outbox.push_reply(frame(9));
        assert_eq!(
            drain(&outbox, false),
            (vec![0, 1, 2, 3, 8], Some(CloseReason::ServerShutdown)),
            "the reader's last answers go out before the close"
        );
    }

    #[test]
    fn a_writer_behind_on_a_free_socket_holds_publishers_not_the_subscriber() {
        let outbox = outbox(4, usize::MAX, SlowConsumerPolicy::Disconnect);
        assert_eq!(outbox.push_event(&event(1)), Delivery::Queued);
        assert_eq!(outbox.push_event(&event(2)), Delivery::QueuedWriterBehind);
        assert!(outbox.writer_caught_up().now_or_never().is_none());
        drain(&outbox, true);
        assert!(outbox.writer_caught_up().now_or_never().is_some());
        outbox.push_event(&event(3));
        outbox.push_event(&event(4));
        outbox.socket_full();
        assert!(
            outbox.writer_caught_up().now_or_never().is_some(),
            "a full socket is the subscriber's own doing"
        );
        assert_eq!(outbox.push_event(&event(5)), Delivery::Queued);
    }

    #[tokio::test]
    async fn waiters_wake_when_the_writer_reports_progress() {
        let outbox = std::sync::Arc::new(outbox(2, usize::MAX, SlowConsumerPolicy::Disconnect));
        outbox.push_event(&event(1));
        outbox.push_reply(frame(2));
        let waiters = [
            tokio::spawn({
                let outbox = outbox.clone();
                async move { outbox.writer_caught_up().await }
            }),
            tokio::spawn({
                let outbox = outbox.clone();
                async move { outbox.wait_for_reader_room().await }
            }),
        ];
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|waiter| !waiter.is_finished()));
        assert_eq!(outbox.lock().waiters, 2);
        drain(&outbox, true);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .unwrap();
        }
        assert_eq!(outbox.lock().waiters, 0);
    }

    #[tokio::test]
    async fn the_writer_is_woken_once_per_empty_to_non_empty() {
        let outbox = outbox(100, usize::MAX, SlowConsumerPolicy::Disconnect);
        let woken = |outbox: &Outbox| outbox.wait_for_frames().now_or_never().is_some();
        outbox.push_event(&event(1));
        assert!(woken(&outbox), "empty to non-empty");
        outbox.push_event(&event(2));
        assert!(!woken(&outbox), "one wake per transition");
        drain(&outbox, true);
        outbox.push_reply(frame(3));
        assert!(woken(&outbox));
    }

    #[tokio::test]
    async fn held_replies_go_to_the_writer_together_once_the_reader_waits() {
        let outbox = outbox(100, usize::MAX, SlowConsumerPolicy::Disconnect);
        let woken = |outbox: &Outbox| outbox.wait_for_frames().now_or_never().is_some();
        let taken = |outbox: &Outbox| {
            let mut batch = VecDeque::new();
            outbox.settle(&Pending::default(), &mut batch, usize::MAX);
            batch
                .iter()
                .map(|queued| queued.frame[0])
                .collect::<Vec<_>>()
        };
        outbox.push_reply(frame(1));
        assert!(woken(&outbox));
        let reader = outbox.holding_replies(async {
            outbox.push_held_reply(frame(2));
            assert_eq!(outbox.push_event(&event(3)), Delivery::Queued);
            outbox.push_held_reply(frame(4));
            assert!(!woken(&outbox), "nothing woke the writer for them");
            assert_eq!(taken(&outbox), [1], "held, and what came after them");
            std::future::pending::<()>().await;
        });
        assert!(reader.now_or_never().is_none());
        assert!(woken(&outbox), "the reader waits: released, one wake-up");
        assert_eq!(taken(&outbox), [2, 3, 4]);
        assert_eq!(outbox.pending().replies, 3);

        for n in 0..MAX_FRAMES_PER_WRITE {
            outbox.push_held_reply(frame(n as u8));
        }
        assert!(woken(&outbox), "a whole write's worth is released at once");
        assert_eq!(taken(&outbox).len(), MAX_FRAMES_PER_WRITE);
        outbox.push_held_reply(frame(9));
        outbox.reader_finished();
        assert_eq!(taken(&outbox), [9], "a finished reader holds nothing");
    }

    #[tokio::test]
    async fn reaching_the_pause_mark_wakes_a_gathering_writer() {
        let outbox = outbox(4, usize::MAX, SlowConsumerPolicy::Disconnect);
        let woken = |outbox: &Outbox| outbox.wait_for_frames().now_or_never().is_some();
        outbox.push_event(&event(1));
        assert!(woken(&outbox));
        assert_eq!(outbox.push_event(&event(2)), Delivery::QueuedWriterBehind);
        assert!(woken(&outbox), "a publisher is about to wait for it");
    }
}
