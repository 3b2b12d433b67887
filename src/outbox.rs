//! A connection's outbox: the bounded queue of encoded frames waiting for the
//! connection's writer task.
//!
//! Publishers push shared `Bytes` handles (a pointer push under a short,
//! per-connection lock) and never wait; the writer takes the whole queue at
//! once. Events count against the bound and are subject to the slow-consumer
//! policy; replies to the client's own requests are never dropped, and the
//! reader stops reading requests while the queue is over its bound, so the
//! connection's memory stays bounded either way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::SlowConsumerPolicy;

/// Why a connection is closing, and so what its last frames are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame; it is echoed with this code.
    ClientClosed(u16),
    /// The server is shutting down.
    ServerShutdown,
    /// The outbox overflowed under the `disconnect` policy.
    SlowConsumer,
    /// Nothing heard from the peer for two heartbeat intervals.
    HeartbeatTimeout,
    /// No complete frame within `FIRST_FRAME_TIMEOUT` of the upgrade.
    FirstFrameTimeout,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A message larger than `MAX_MESSAGE_SIZE`.
    MessageTooBig,
    /// A frame that breaks RFC 6455.
    ProtocolError,
    /// The socket failed or hit EOF: nothing more can be written.
    ConnectionLost,
}

impl CloseReason {
    /// The close code to send, if the socket is still worth writing to.
    pub fn code(self) -> Option<u16> {
        match self {
            Self::ClientClosed(code) => Some(code),
            Self::ServerShutdown => Some(1001),
            Self::SlowConsumer | Self::HeartbeatTimeout | Self::FirstFrameTimeout => Some(1008),
            Self::InvalidUtf8 => Some(1007),
            Self::MessageTooBig => Some(1009),
            Self::ProtocolError => Some(1002),
            Self::ConnectionLost => None,
        }
    }

    /// The close frame's reason text.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ClientClosed(_) => "client closed",
            Self::ServerShutdown => "server shutting down",
            Self::SlowConsumer => "slow consumer",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::FirstFrameTimeout => "no frame before the first-frame deadline",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::MessageTooBig => "message too big",
            Self::ProtocolError => "protocol error",
            Self::ConnectionLost => "connection lost",
        }
    }

    /// Whether frames still queued are abandoned rather than flushed: a slow
    /// or silent peer is cut off, everyone else gets what was queued.
    pub fn abandons_queue(self) -> bool {
        matches!(
            self,
            Self::SlowConsumer | Self::HeartbeatTimeout | Self::ConnectionLost
        )
    }
}

/// What happened to an event pushed into an outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Queued after dropping the oldest queued event (`drop_oldest`).
    QueuedDroppingOldest,
    /// The outbox overflowed and is now closing (`disconnect`).
    Overflowed,
    /// The connection is closing; nothing was queued.
    Closed,
}

/// A queued frame; only events count against the bound or may be dropped.
#[derive(Debug)]
pub struct Queued {
    pub frame: Bytes,
    is_event: bool,
}

impl Queued {
    fn event(frame: &Bytes) -> Self {
        Self {
            frame: frame.clone(),
            is_event: true,
        }
    }

    /// A frame that is not an event, for the writer's own last frames.
    pub fn control(frame: Bytes) -> Self {
        Self {
            frame,
            is_event: false,
        }
    }
}

#[derive(Default)]
struct State {
    frames: VecDeque<Queued>,
    events: usize,
    close: Option<CloseReason>,
}

pub struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    policy: SlowConsumerPolicy,
    /// Wakes the writer when the queue turns non-empty or closes.
    writer_wakeup: Notify,
    /// Wakes a reader waiting for the queue to drain below its bound.
    room: Notify,
    closing: CancellationToken,
    /// Set with `closing`; the writer reads it before every write, and
    /// `CancellationToken::is_cancelled` takes a lock.
    is_closing: AtomicBool,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` events.
    pub fn new(capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Self {
            state: Mutex::default(),
            capacity,
            policy,
            writer_wakeup: Notify::new(),
            room: Notify::new(),
            closing: CancellationToken::new(),
            is_closing: AtomicBool::new(false),
        }
    }

    /// Queues an event, applying the slow-consumer policy when full.
    pub fn push_event(&self, frame: &Bytes) -> Delivery {
        let mut state = self.lock();
        if state.close.is_some() {
            return Delivery::Closed;
        }
        let mut delivery = Delivery::Queued;
        if state.events >= self.capacity {
            match self.policy {
                SlowConsumerPolicy::Disconnect => {
                    drop(state);
                    self.close(CloseReason::SlowConsumer);
                    return Delivery::Overflowed;
                }
                SlowConsumerPolicy::DropOldest => {
                    if let Some(oldest) = state.frames.iter().position(|queued| queued.is_event) {
                        state.frames.remove(oldest);
                        state.events -= 1;
                    }
                    delivery = Delivery::QueuedDroppingOldest;
                }
            }
        }
        state.events += 1;
        // A writer holding back to coalesce must not let a burst overflow
        // the queue: reaching half the bound wakes it as well.
        let half_full = state.events == self.capacity.div_ceil(2);
        let was_empty = state.frames.is_empty();
        state.frames.push_back(Queued::event(frame));
        drop(state);
        self.wake_writer_if(was_empty || half_full);
        delivery
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

    /// Queues replayed events, which are bounded by the replay ring rather
    /// than by the policy: a subscriber asked for them.
    pub fn push_replay<'a>(&self, frames: impl Iterator<Item = &'a Bytes>) {
        let mut state = self.lock();
        if state.close.is_none() {
            let before = state.frames.len();
            state.frames.extend(frames.map(Queued::event));
            state.events += state.frames.len() - before;
            self.wake_writer_if(before == 0 && !state.frames.is_empty());
        }
    }

    /// Queues a reply or notice; never dropped while the connection is open.
    pub fn push_control(&self, frame: Bytes) {
        let state = self.lock();
        if state.close.is_none() {
            self.enqueue(state, Queued::control(frame));
        }
    }

    fn enqueue(&self, mut state: std::sync::MutexGuard<'_, State>, queued: Queued) {
        let was_empty = state.frames.is_empty();
        state.frames.push_back(queued);
        drop(state);
        self.wake_writer_if(was_empty);
    }

    /// The writer drains the whole queue on each wake-up, so only the push
    /// that makes the queue non-empty (or half full) needs to wake it.
    fn wake_writer_if(&self, became_non_empty: bool) {
        if became_non_empty {
            self.writer_wakeup.notify_one();
        }
    }

    /// Moves every queued frame into `batch` (which the writer keeps and
    /// reuses) and reports whether the connection is closing.
    pub fn take_all(&self, batch: &mut VecDeque<Queued>) -> Option<CloseReason> {
        let mut state = self.lock();
        if batch.is_empty() {
            std::mem::swap(batch, &mut state.frames);
        } else {
            batch.append(&mut state.frames);
        }
        state.events = 0;
        let close = state.close;
        drop(state);
        self.room.notify_waiters();
        close
    }

    /// Whether queued events fill half the bound or more: too many to
    /// keep waiting for company.
    pub fn is_half_full(&self) -> bool {
        self.lock().events * 2 >= self.capacity
    }

    /// Resolves when there may be new frames to take (or a close).
    pub async fn wait_for_frames(&self) {
        self.writer_wakeup.notified().await;
    }

    /// Resolves once the queue holds no more than its bound, or the
    /// connection is closing: the reader's backpressure on client requests.
    pub async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            {
                let state = self.lock();
                if state.frames.len() <= self.capacity || state.close.is_some() {
                    return;
                }
            }
            tokio::select! {
                _ = room => {}
                _ = self.closing.cancelled() => return,
            }
        }
    }

    /// Starts closing the connection; the first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some(reason);
            drop(state);
            self.is_closing.store(true, Ordering::Release);
            self.closing.cancel();
            self.writer_wakeup.notify_one();
        }
    }

    /// Why the connection is closing, once it is. Lock-free until then: the
    /// writer asks before every write, and `close` records the reason before
    /// it raises the flag.
    pub fn close_reason(&self) -> Option<CloseReason> {
        if !self.is_closing.load(Ordering::Acquire) {
            return None;
        }
        self.lock().close
    }

    /// Resolves once the connection starts closing.
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(outbox: &Outbox) -> (Vec<u8>, Option<CloseReason>) {
        let mut batch = VecDeque::new();
        let close = outbox.take_all(&mut batch);
        (batch.iter().map(|queued| queued.frame[0]).collect(), close)
    }

    #[test]
    fn keeps_fifo_order_across_kinds() {
        let outbox = Outbox::new(8, SlowConsumerPolicy::Disconnect);
        outbox.push_control(frame(1));
        outbox.push_replay([frame(2), frame(3)].iter());
        assert_eq!(outbox.push_event(&frame(4)), Delivery::Queued);
        assert_eq!(drain(&outbox), (vec![1, 2, 3, 4], None));
        assert_eq!(
            drain(&outbox),
            (vec![], None),
            "the first drain took everything"
        );
    }

    #[test]
    fn disconnect_policy_closes_on_overflow() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::Disconnect);
        assert_eq!(outbox.push_event(&frame(1)), Delivery::Queued);
        assert_eq!(outbox.push_event(&frame(2)), Delivery::Queued);
        assert_eq!(outbox.push_event(&frame(3)), Delivery::Overflowed);
        assert_eq!(outbox.push_event(&frame(4)), Delivery::Closed);
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(
            drain(&outbox),
            (vec![1, 2], Some(CloseReason::SlowConsumer))
        );
    }

    #[test]
    fn drop_oldest_policy_drops_events_but_not_replies() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::DropOldest);
        outbox.push_control(frame(0));
        for n in 1..=5 {
            outbox.push_event(&frame(n));
        }
        assert_eq!(outbox.push_event(&frame(6)), Delivery::QueuedDroppingOldest);
        assert_eq!(drain(&outbox), (vec![0, 5, 6], None));
        assert_eq!(
            outbox.push_event(&frame(7)),
            Delivery::Queued,
            "drained queue has room again"
        );
    }

    #[test]
    fn replies_are_not_bounded_but_stop_after_close() {
        let outbox = Outbox::new(1, SlowConsumerPolicy::Disconnect);
        for n in 0..4 {
            outbox.push_control(frame(n));
        }
        outbox.close(CloseReason::ServerShutdown);
        outbox.close(CloseReason::SlowConsumer);
        outbox.push_control(frame(9));
        assert_eq!(
            drain(&outbox),
            (vec![0, 1, 2, 3], Some(CloseReason::ServerShutdown))
        );
    }

    #[tokio::test]
    async fn wait_for_room_resolves_after_the_writer_drains() {
        let outbox = std::sync::Arc::new(Outbox::new(1, SlowConsumerPolicy::Disconnect));
        outbox.push_control(frame(1));
        outbox.push_control(frame(2));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain(&outbox);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_writer_is_woken_when_the_queue_turns_non_empty_and_half_full() {
        use std::time::Duration;
        let outbox = Outbox::new(4, SlowConsumerPolicy::Disconnect);
        let woken = |outbox: &Outbox| {
            futures_util::FutureExt::now_or_never(outbox.wait_for_frames()).is_some()
        };
        outbox.push_event(&frame(1));
        assert!(woken(&outbox), "empty to non-empty");
        assert!(!woken(&outbox), "one wake per transition");
        outbox.push_event(&frame(2));
        assert!(woken(&outbox), "half full");
        outbox.push_event(&frame(3));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), outbox.wait_for_frames())
                .await
                .is_err(),
            "neither empty nor crossing half"
        );
    }
}
