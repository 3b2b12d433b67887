//! A topic: its log (the event numbering, the replay ring and what it may
//! have lost) under one short lock, and its copy-on-write subscriber list.
//! Subscribing, replay and recovery, history and presence are here; the
//! fan-out that appends to the log is [`Broker::deliver`](super::Broker::deliver).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::broker::dedup::DedupWindow;
use crate::broker::prefetch::prefetch;
use crate::broker::TopicOptions;
use crate::metrics::Metrics;
use crate::send::event::{deflated, Deflate, EventFrame};
use crate::send::outbox::Outbox;
use crate::sync::lock;
use crate::wire::history::History;
use crate::wire::reply;
use crate::wire::request::Replay;

/// Identifies one connection's subscription in a topic.
pub type ConnectionId = u64;

pub(super) type Subscribers = Vec<Subscriber>;

/// One entry of a topic's subscriber list: the fan-out reads the first
/// two fields, presence the others.
#[derive(Clone)]
pub(super) struct Subscriber {
    pub(super) id: ConnectionId,
    pub(super) outbox: Arc<Outbox>,
    /// The `client_id` the subscribe named, if any.
    pub(super) client_id: Option<Arc<str>>,
    pub(super) since: SystemTime,
}

/// Who is subscribed to a topic: read from the topic's lock-free list
/// snapshot, without taking any lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub connection: ConnectionId,
    /// The `client_id` the subscribe named; `None` means the connection's id.
    pub client_id: Option<Arc<str>>,
    /// When the subscription joined.
    pub since: SystemTime,
}

pub struct Topic {
    pub(super) name: Arc<str>,
    /// In cluster mode the registry revision that created this topic, so a
    /// topic deleted and created again is told apart from its predecessor;
    /// 0 on a single node.
    pub(super) incarnation: u64,
    /// Names this incarnation of the topic's history: from `Broker`'s
    /// `boot_nonce` on a single node, from the registry revision and the
    /// streams' identity in cluster mode (`cluster`'s `Backplane::epoch`).
    pub(super) epoch: Arc<str>,
    /// What it was created with: its history's bounds, join and leave.
    pub(super) options: TopicOptions,
    pub(super) log: Mutex<Log>,
    /// Read by every publish without a lock; replaced whole on change.
    pub(super) subscribers: ArcSwap<Subscribers>,
    /// Serialises changes to `subscribers`.
    pub(super) membership: Mutex<()>,
    /// Events published so far; readable without the topic lock.
    pub(super) messages: AtomicU64,
    /// Where subscriptions are counted as they come and go, so `/health`
    /// need not visit every topic.
    pub(super) metrics: Arc<Metrics>,
    /// Cluster mode: where joins and leaves go for the other nodes.
    pub(super) membership_changes: Option<UnboundedSender<MembershipChange>>,
}

/// A subscription starting or ending, on a topic with `presence_events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    Join,
    Leave,
}

impl Membership {
    /// The `join` or `leave` frame.
    fn frame(self, topic: &str, client_id: &str) -> Bytes {
        match self {
            Self::Join => reply::join(topic, client_id),
            Self::Leave => reply::leave(topic, client_id),
        }
    }
}

/// Cluster mode: a join or leave on this node, for the other nodes'
/// subscribers of the same topic incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub topic: String,
    pub incarnation: u64,
    pub change: Membership,
    pub client_id: String,
}

/// What publishes serialise on: the event numbering and the replay ring.
#[derive(Default)]
pub(super) struct Log {
    pub(super) seq: u64,
    /// Each event's `seq` beside its frame: recovery compares them, and
    /// the frame alone would have to be parsed.
    pub(super) ring: VecDeque<(u64, EventFrame)>,
    /// With a `history_ttl`, when each ring event was published, beside
    /// it; empty without one, so such a topic's publishes pay nothing.
    pub(super) published_at: VecDeque<SystemTime>,
    /// Every event of this topic with a `seq` above this is in the ring.
    /// It rises to the `seq` of each event evicted from the ring, and in
    /// cluster mode to just below an event read after events this node may
    /// never have been handed (see `Broker::history_may_be_incomplete`).
    /// Recovery after `since_seq` is complete iff `since_seq >= lost_up_to`:
    /// an event missing from the ring has `seq <= lost_up_to <= since_seq`,
    /// so it is not one the client lacks. It never decreases except where
    /// `Broker::settle_history` proves a tighter bound.
    pub(super) lost_up_to: u64,
    /// Highest `seq` evicted from the ring; `lost_up_to` is at least this.
    pub(super) evicted_up_to: u64,
    pub(super) deleted: bool,
    /// Recent message ids, when `DEDUP_WINDOW` applies (a single node).
    pub(super) dedup: Option<DedupWindow>,
}

/// One row of `GET /topics` and `GET /stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: Arc<str>,
    pub subscribers: usize,
    pub messages: u64,
    pub options: TopicOptions,
}

/// Where a subscription joined its topic's history, as the subscriber is
/// told before its replay: the transport turns it into a `subscribe` ack
/// or an SSE `subscribed` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined<'a> {
    pub topic: &'a str,
    /// The topic's latest `seq` at join; 0 if none yet.
    pub seq: u64,
    pub epoch: &'a str,
    /// For a resume (`since_seq`), whether no event after it was lost.
    pub recovered: Option<bool>,
    /// The `seq` after which this subscriber's events start: just before
    /// its first replayed event, or `seq` without a replay.
    pub delivers_after: u64,
}

impl Topic {
    /// Subscribes a connection: tells `joined` where it joins (the topic's
    /// latest `seq` and epoch, and with `since_seq` whether the replay is
    /// complete) for the transport to queue its notice, then queues the
    /// replay oldest first and joins the live stream, all under the log
    /// lock so no publish can fall between replay and live. The one place
    /// a subscriber joins a topic's history and its live stream. Returns
    /// false if the topic was deleted meanwhile; subscribing twice is a
    /// no-op but for the notice.
    pub fn subscribe(
        &self,
        id: ConnectionId,
        outbox: &Arc<Outbox>,
        client_id: Option<&str>,
        replay: Replay<'_>,
        joined: impl FnOnce(Joined<'_>),
    ) -> bool {
        if let Some(deflate) = outbox.deflate() {
            self.deflate_replay(deflate, replay);
        }
        let mut log = lock(&self.log);
        if log.deleted {
            return false;
        }
        log.expire(self.options.history_ttl);
        let (skip, recovered) = log.replay_start(replay, &self.epoch);
        joined(Joined {
            topic: &self.name,
            seq: log.seq,
            epoch: &self.epoch,
            recovered,
            delivers_after: log.ring.get(skip).map_or(log.seq, |(seq, _)| seq - 1),
        });
        let _membership = lock(&self.membership);
        let current = self.subscribers.load();
        if current.iter().any(|subscriber| subscriber.id == id) {
            return true;
        }
        outbox.push_replay(log.ring.iter().skip(skip).map(|(_, event)| event));
        let joining = Subscriber {
            id,
            outbox: outbox.clone(),
            client_id: client_id.map(Arc::from),
            since: SystemTime::now(),
        };
        self.announce(Membership::Join, &joining, &current);
        let mut subscribers = Subscribers::clone(&current);
        subscribers.push(joining);
        self.subscribers.store(Arc::new(subscribers));
        self.metrics.subscription_started();
        true
    }

    /// With `presence_events`, tells `others` that `subscriber` joined or
    /// left, encoded once, and in cluster mode hands the change on for the
    /// other nodes' subscribers. Called under the membership lock, so
    /// every subscriber of this node sees the joins and leaves in the same
    /// order.
    fn announce(&self, change: Membership, subscriber: &Subscriber, others: &[Subscriber]) {
        if !self.options.presence_events {
            return;
        }
        let client_id = match &subscriber.client_id {
            Some(client_id) => client_id.to_string(),
            None => subscriber.id.to_string(),
        };
        if !others.is_empty() {
            let notice = change.frame(&self.name, &client_id);
            for other in others {
                other.outbox.push_reply(notice.clone());
            }
        }
        if let Some(changes) = &self.membership_changes {
            // The receiver lives as long as the cluster follower.
            let _ = changes.send(MembershipChange {
                topic: self.name.to_string(),
                incarnation: self.incarnation,
                change,
                client_id,
            });
        }
    }

    /// Cluster mode: another node's subscriber of this topic joined or
    /// left; every subscriber here is told.
    pub fn tell_subscribers(&self, change: Membership, client_id: &str) {
        if !self.options.presence_events {
            return;
        }
        let _membership = lock(&self.membership);
        let subscribers = self.subscribers.load();
        if subscribers.is_empty() {
            return;
        }
        let notice = change.frame(&self.name, client_id);
        for subscriber in subscribers.iter() {
            subscriber.outbox.push_reply(notice.clone());
        }
    }

    /// Deflates the events a compressed subscriber's replay will take
    /// while holding the topic's lock only to copy their plain frames and
    /// then to keep the results, so that `subscribe` queues frames already
    /// made (but for events published in between, which the fan-out
    /// deflated if any compressed subscriber got them).
    pub(super) fn deflate_replay(&self, deflate: &Deflate, replay: Replay<'_>) {
        if replay == Replay::Last(0) {
            return;
        }
        let awaiting: Vec<(u64, Bytes)> = {
            let log = lock(&self.log);
            let (skip, _) = log.replay_start(replay, &self.epoch);
            log.ring
                .iter()
                .skip(skip)
                .filter_map(|(seq, event)| Some((*seq, event.awaiting_deflate(deflate)?.clone())))
                .collect()
        };
        if awaiting.is_empty() {
            return;
        }
        let made: Vec<(u64, Option<Bytes>)> = awaiting
            .into_iter()
            .map(|(seq, plain)| (seq, deflated(&plain, deflate)))
            .collect();
        let log = lock(&self.log);
        for (seq, frame) in made {
            if let Ok(at) = log.ring.binary_search_by_key(&seq, |(kept, _)| *kept) {
                log.ring[at].1.share_deflated(frame);
            }
        }
    }

    /// Up to `limit` events: the first after `since` (with whether none
    /// was lost, as for a subscribe), or else the latest.
    pub fn history(&self, since: Option<u64>, limit: usize) -> History {
        let mut log = lock(&self.log);
        log.expire(self.options.history_ttl);
        let (skip, recovered) = match since {
            None => (log.ring.len().saturating_sub(limit), None),
            Some(since) => match log.recovery_after(since) {
                Some(skip) => (skip, Some(since >= log.lost_up_to)),
                None => (log.ring.len(), Some(false)),
            },
        };
        History {
            epoch: self.epoch.clone(),
            seq: log.seq,
            recovered,
            events: log
                .ring
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(seq, event)| (*seq, event.plain().clone()))
                .collect(),
        }
    }

    /// Removes a connection's subscription, if it has one. Returns once no
    /// fan-out can still push to it, so nothing follows the caller's ack.
    pub fn unsubscribe(&self, id: ConnectionId) {
        self.remove_subscribers(&[id]);
        // A publish that read the old list holds the log lock until its
        // fan-out is done; a publish waits on this no longer than it takes
        // to lock and unlock.
        drop(lock(&self.log));
    }

    /// Ends the subscriptions whose connection and `client_id` `picks`
    /// picks (a server-API unsubscribe), and returns their outboxes once no
    /// fan-out can still push to them, so a notice queued next follows
    /// every event they were given.
    pub fn unsubscribe_picked(
        &self,
        picks: impl Fn(ConnectionId, Option<&str>) -> bool,
    ) -> Vec<Arc<Outbox>> {
        let removed =
            self.remove_where(|subscriber| picks(subscriber.id, subscriber.client_id.as_deref()));
        drop(lock(&self.log));
        removed
            .into_iter()
            .map(|subscriber| subscriber.outbox)
            .collect()
    }

    pub(super) fn remove_subscribers(&self, ids: &[ConnectionId]) {
        self.remove_where(|subscriber| ids.contains(&subscriber.id));
    }

    /// Takes the subscribers `removed` picks off the list, and returns them.
    fn remove_where(&self, removed: impl Fn(&Subscriber) -> bool) -> Subscribers {
        let _membership = lock(&self.membership);
        let current = self.subscribers.load();
        if !current.iter().any(&removed) {
            return Subscribers::new();
        }
        let (gone, remaining): (Subscribers, Subscribers) = current
            .iter()
            .cloned()
            .partition(|subscriber| removed(subscriber));
        self.metrics.subscriptions_ended(gone.len());
        for leaving in &gone {
            self.announce(Membership::Leave, leaving, &remaining);
        }
        self.subscribers.store(Arc::new(remaining));
        gone
    }

    /// Whether connection `id` is subscribed to this topic.
    pub fn has_subscriber(&self, id: ConnectionId) -> bool {
        self.subscribers
            .load()
            .iter()
            .any(|subscriber| subscriber.id == id)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether the topic has been deleted (a later topic may reuse its name).
    pub fn is_deleted(&self) -> bool {
        lock(&self.log).deleted
    }

    /// This topic's subscriptions in the order they joined, from the
    /// list's current snapshot (no lock is taken).
    pub fn presence(&self) -> Vec<Presence> {
        self.subscribers
            .load()
            .iter()
            .map(|subscriber| Presence {
                connection: subscriber.id,
                client_id: subscriber.client_id.clone(),
                since: subscriber.since,
            })
            .collect()
    }

    pub fn summary(&self) -> TopicSummary {
        TopicSummary {
            name: self.name.clone(),
            subscribers: self.subscribers.load().len(),
            messages: self.messages.load(Ordering::Relaxed),
            options: self.options,
        }
    }
}

impl Log {
    /// Starts loading what keeping one more event would evict, last
    /// touched a ring's length of publishes ago: the head of the oldest
    /// event's frame, which dropping it frees and the allocator hands out
    /// again for the new one, and the slot that the next publish will
    /// evict (its frame can only be found once the slot is in cache).
    pub(super) fn prefetch_eviction(&self, options: &TopicOptions) {
        /// As much of a frame as a typical event's.
        const FRAME_HEAD: usize = 256;
        if self.ring.len() >= options.history_size {
            if let Some((_, oldest)) = self.ring.front() {
                let frame = oldest.plain();
                prefetch(&frame[..frame.len().min(FRAME_HEAD)]);
            }
            if let Some(next) = self.ring.get(1) {
                prefetch(next);
            }
        }
    }

    /// Keeps event `seq`, published `at`, in a ring of `history_size`
    /// (the oldest evicted if it is full, and any older than
    /// `history_ttl`), and lends it back; with no room kept, hands it back.
    pub(super) fn keep(
        &mut self,
        seq: u64,
        event: EventFrame,
        at: SystemTime,
        options: &TopicOptions,
    ) -> Result<&EventFrame, EventFrame> {
        self.expire(options.history_ttl);
        if options.history_size == 0 {
            self.forget(seq);
            return Err(event);
        }
        if self.ring.len() >= options.history_size {
            self.evict_oldest();
        }
        if options.history_ttl.is_some() {
            self.published_at.push_back(at);
        }
        self.ring.push_back((seq, event));
        Ok(&self.ring.back().expect("just kept").1)
    }

    /// Evicts the events older than `ttl`, if the topic has one.
    pub(super) fn expire(&mut self, ttl: Option<Duration>) {
        let Some(cutoff) = ttl.and_then(|ttl| SystemTime::now().checked_sub(ttl)) else {
            return;
        };
        while self.published_at.front().is_some_and(|at| *at < cutoff) {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((evicted, _)) = self.ring.pop_front() {
            self.published_at.pop_front();
            self.forget(evicted);
        }
    }

    /// Event `seq` is no longer kept: recovery can no longer count on it.
    fn forget(&mut self, seq: u64) {
        self.evicted_up_to = seq;
        self.lost_up_to = self.lost_up_to.max(seq);
    }

    /// How many ring events a replay skips, and for a recovery whether
    /// none was lost.
    pub(super) fn replay_start(&self, replay: Replay<'_>, epoch: &str) -> (usize, Option<bool>) {
        match replay {
            Replay::Last(n) => (self.ring.len().saturating_sub(n), None),
            Replay::Since { seq, epoch: asked } => match self.recovery_after(seq) {
                Some(skip) if asked.is_none_or(|asked| asked == epoch) => {
                    (skip, Some(seq >= self.lost_up_to))
                }
                _ => (self.ring.len(), Some(false)),
            },
        }
    }

    /// How many ring events a client that has seen up to `since` already
    /// has; `None` when `since` is ahead of this topic (another history).
    pub(super) fn recovery_after(&self, since: u64) -> Option<usize> {
        (since <= self.seq).then(|| self.ring.partition_point(|&(seq, _)| seq <= since))
    }
}
