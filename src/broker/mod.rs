//! Topics, their subscribers and replay rings, and the fan-out.
//!
//! Topics live in a sharded `DashMap`. Each topic serialises its publishes
//! under one short lock (its log): the event is numbered, encoded once into
//! a shared `Bytes` (and deflated at most once, for the subscribers that
//! negotiated compression: `send::EventFrame`), kept in the replay ring and
//! pushed into every subscriber's outbox. That lock is what gives every subscriber the same
//! order and lets a subscriber join with a replay and no gap or duplicate.
//!
//! The subscriber list is copy-on-write: a publish reads the current list
//! without a lock, and changes swap in a new list under a lock of their own.
//! Unsubscribes and the removal of closed subscribers never wait for a
//! publish nor make one wait; a subscribe holds the log lock only while it
//! queues its replay and swaps the list, which is what makes it gap-free.
//!
//! Idempotent publish: on a single node each topic keeps its
//! `DEDUP_WINDOW` of message ids (`dedup`), checked and extended under the
//! same lock, so of two publishes of one id exactly one is delivered.
//!
//! Recovery: every topic names its history with an *epoch* and keeps, with
//! the ring, a bound on what it may have lost (`Log::lost_up_to`), so a
//! client that reconnects with the last `seq` it saw learns whether the
//! replay it gets is complete.

mod dedup;
mod prefetch;
mod topic;
mod topic_options;

pub use topic::{
    ConnectionId, Joined, Membership, MembershipChange, Presence, Topic, TopicSummary,
};
pub use topic_options::TopicOptions;

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use foldhash::quality::RandomState as TopicHasher;
use tokio::sync::mpsc::UnboundedSender;

use crate::broker::dedup::DedupWindow;
use crate::broker::topic::{Log, Subscriber};
use crate::metrics::{FanOut, Metrics};
use crate::send::event::EventFrame;
use crate::send::outbox::{Delivery, LaggingWriters, QueueBound};
use crate::sync::lock;
use crate::wire::reply;
use crate::wire::request::Message;
use crate::wire::timestamp::Timestamp;

/// Longest topic name accepted.
pub const MAX_TOPIC_NAME_LEN: usize = 255;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("topic name must be 1-{MAX_TOPIC_NAME_LEN} characters from A-Z a-z 0-9 _ - . :, and not . or ..")]
    InvalidTopicName,
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' not found")]
    TopicNotFound(String),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("topic limit reached: at most {0} topics may exist (MAX_TOPICS)")]
    TopicLimit(usize),
    #[error("cluster backplane unavailable: {0}")]
    BackplaneUnavailable(String),
}

/// Whether `name` is a valid topic name. `.` and `..` are not: HTTP
/// clients resolve them as path segments, so `/topics/..` could never reach
/// such a topic.
pub fn is_valid_topic_name(name: &str) -> bool {
    (1..=MAX_TOPIC_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

pub struct Broker {
    /// Hashed with foldhash, seeded per process: every publish looks its
    /// topic up, and SipHash, the standard one, was a visible part of that.
    topics: DashMap<Arc<str>, Arc<Topic>, TopicHasher>,
    /// Single node: random per process, so epochs change with a restart
    /// (the history is in memory and is lost with it).
    boot_nonce: u64,
    /// Single node: topics created so far, so a topic created again gets
    /// a new epoch.
    creations: AtomicU64,
    /// Topics in the map, kept beside it so the limit is exact under races.
    topic_count: AtomicUsize,
    max_topics: usize,
    /// What a topic is created with when its creation names no option.
    default_options: TopicOptions,
    /// `DEDUP_WINDOW` on a single node; `None` when off, and in cluster
    /// mode, where the backplane deduplicates.
    dedup_window: Option<Duration>,
    accepting_publishes: AtomicBool,
    metrics: Arc<Metrics>,
    /// Cluster mode: where topics hand their joins and leaves on.
    membership_changes: OnceLock<UnboundedSender<MembershipChange>>,
}

/// Where an event's `seq` and `ts` come from.
#[derive(Clone, Copy, Debug)]
pub enum Stamp {
    /// Published on this node alone: the topic's next number, and now.
    Local,
    /// Stored by the cluster backplane: its stream sequence and store time,
    /// the same on every node. `catching_up`: read while this node replays
    /// the stream, which may meanwhile discard events it has not reached.
    Backplane {
        seq: u64,
        stored_at: SystemTime,
        catching_up: bool,
    },
}

/// An event that went into the fan-out, or a duplicate of one.
pub struct Published {
    pub seq: u64,
    /// The event's `ts`, or when a duplicate was refused.
    pub at: SystemTime,
    /// Subscribers whose writers were behind (see `crate::send`).
    pub lagging: LaggingWriters,
    /// The message id was published to this topic within `DEDUP_WINDOW`:
    /// `seq` is the original's, and nothing was delivered.
    pub duplicate: bool,
}

/// What a publisher is told: its event's `seq`, or the original's for a
/// duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub duplicate: bool,
}

impl Published {
    pub fn receipt(&self) -> Receipt {
        Receipt {
            seq: self.seq,
            duplicate: self.duplicate,
        }
    }

    fn duplicate(seq: u64, at: SystemTime) -> Self {
        Self {
            seq,
            at,
            lagging: LaggingWriters::default(),
            duplicate: true,
        }
    }
}

impl Broker {
    /// A broker keeping `ring_capacity` events per topic for replay unless
    /// a topic's options say otherwise, and at most `max_topics` topics.
    pub fn new(ring_capacity: usize, max_topics: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            topics: DashMap::with_hasher(TopicHasher::default()),
            boot_nonce: RandomState::new().hash_one(std::process::id()),
            creations: AtomicU64::new(0),
            topic_count: AtomicUsize::new(0),
            max_topics,
            default_options: TopicOptions::with_history(ring_capacity),
            dedup_window: None,
            accepting_publishes: AtomicBool::new(true),
            metrics,
            membership_changes: OnceLock::new(),
        }
    }

    /// Answers a local publish whose message id was published to the same
    /// topic within `window` with the original's `seq` (zero: never).
    pub fn with_dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = (!window.is_zero()).then_some(window);
        self
    }

    /// Cluster mode, before any topic exists: every topic's joins and
    /// leaves also go to `changes`, for the other nodes.
    pub fn share_membership_changes(&self, changes: UnboundedSender<MembershipChange>) {
        let _ = self.membership_changes.set(changes);
    }

    /// What a topic is created with when its creation names no option.
    pub fn default_options(&self) -> TopicOptions {
        self.default_options
    }

    pub fn create_topic(&self, name: &str, options: TopicOptions) -> Result<(), BrokerError> {
        if !is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName);
        }
        match self.topics.entry(Arc::from(name)) {
            dashmap::Entry::Occupied(_) => Err(BrokerError::TopicExists(name.to_owned())),
            dashmap::Entry::Vacant(slot) => {
                self.reserve_topic_slot()?;
                let creation = self.creations.fetch_add(1, Ordering::Relaxed) + 1;
                let epoch = format!("{:016x}-{creation}", self.boot_nonce);
                self.insert_topic(slot, 0, epoch, options);
                Ok(())
            }
        }
    }

    /// Counts one more topic, or fails with `TopicLimit` if that would
    /// exceed `MAX_TOPICS`.
    fn reserve_topic_slot(&self) -> Result<(), BrokerError> {
        if self.topic_count.fetch_add(1, Ordering::AcqRel) >= self.max_topics {
            self.topic_count.fetch_sub(1, Ordering::AcqRel);
            return Err(BrokerError::TopicLimit(self.max_topics));
        }
        Ok(())
    }

    /// Whether `MAX_TOPICS` topics exist already. In cluster mode a check
    /// before the shared registry is asked, so nodes racing may exceed it
    /// by the number of nodes.
    pub fn at_topic_limit(&self) -> Result<(), BrokerError> {
        if self.topic_count.load(Ordering::Acquire) >= self.max_topics {
            return Err(BrokerError::TopicLimit(self.max_topics));
        }
        Ok(())
    }

    fn insert_topic(
        &self,
        slot: dashmap::VacantEntry<'_, Arc<str>, Arc<Topic>>,
        incarnation: u64,
        epoch: String,
        options: TopicOptions,
    ) {
        let name = slot.key().clone();
        tracing::info!(
            topic = &*name,
            incarnation,
            epoch,
            ?options,
            "topic created"
        );
        slot.insert(Arc::new(Topic {
            name,
            incarnation,
            epoch: epoch.into(),
            options,
            log: Mutex::new(Log {
                ring: VecDeque::with_capacity(options.history_size.min(64)),
                dedup: self.dedup_window.map(DedupWindow::new),
                ..Log::default()
            }),
            subscribers: ArcSwap::default(),
            membership: Mutex::new(()),
            messages: AtomicU64::new(0),
            metrics: self.metrics.clone(),
            membership_changes: self.membership_changes.get().cloned(),
        }));
    }

    /// Cluster mode: the registry says topic `name` exists as `incarnation`.
    /// An older incarnation still here is deleted first (its subscribers
    /// are told) and returned; a newer one is left alone. The registry is
    /// the authority, so `MAX_TOPICS` is not applied here. `epoch` is the
    /// incarnation's, the same on every node, and so are its `options`.
    pub fn adopt_topic(
        &self,
        name: &str,
        incarnation: u64,
        epoch: &str,
        options: TopicOptions,
    ) -> Option<u64> {
        let retired = self.retire_topic(name, incarnation);
        if let dashmap::Entry::Vacant(slot) = self.topics.entry(Arc::from(name)) {
            self.topic_count.fetch_add(1, Ordering::AcqRel);
            self.insert_topic(slot, incarnation, epoch.to_owned(), options);
        }
        retired
    }

    /// Cluster mode: deletes topic `name` if its incarnation is older than
    /// registry revision `revision`; returns the incarnation deleted.
    pub fn retire_topic(&self, name: &str, revision: u64) -> Option<u64> {
        let incarnation = self
            .topic(name)
            .ok()
            .map(|topic| topic.incarnation)
            .filter(|incarnation| *incarnation < revision)?;
        // Only the registry follower changes topics in cluster mode, so the
        // topic checked is the one deleted.
        let _ = self.delete_topic(name);
        Some(incarnation)
    }

    /// Removes a topic; its subscribers get `info topic_deleted` and are
    /// unsubscribed (their connections stay open).
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let (_, topic) = self
            .topics
            .remove(name)
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_owned()))?;
        self.topic_count.fetch_sub(1, Ordering::AcqRel);
        let subscribers = {
            let mut log = lock(&topic.log);
            log.deleted = true;
            log.ring.clear();
            log.published_at.clear();
            let _membership = lock(&topic.membership);
            topic.subscribers.swap(Arc::default())
        };
        self.metrics.subscriptions_ended(subscribers.len());
        let notice = reply::info(Some(name), "topic_deleted");
        for subscriber in subscribers.iter() {
            subscriber.outbox.push_reply(notice.clone());
        }
        tracing::info!(
            topic = name,
            subscribers = subscribers.len(),
            "topic deleted"
        );
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.topics
            .get(name)
            .map(|entry| entry.value().clone())
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_owned()))
    }

    /// Publishes a message to a topic. When this returns, the event is in
    /// the replay ring and in every current subscriber's outbox.
    pub fn publish(&self, topic: &str, message: &Message<'_>) -> Result<Published, BrokerError> {
        self.deliver(&*self.topic(topic)?, message, Stamp::Local)
    }

    /// Whether publishes are still accepted (not shutting down).
    pub fn check_accepting_publishes(&self) -> Result<(), BrokerError> {
        if !self.accepting_publishes.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        Ok(())
    }

    /// The one entry point for "an event for topic X" into the fan-out, for
    /// local publishes and for events from the cluster backplane alike.
    pub fn deliver(
        &self,
        topic: &Topic,
        message: &Message<'_>,
        stamp: Stamp,
    ) -> Result<Published, BrokerError> {
        let mut log = self.open_log(topic)?;
        let mut gone = Vec::new();
        let (published, counts) = self.append(topic, &mut log, message, stamp, &mut gone);
        drop(log);
        self.settle_fan_out(topic, &gone, &[counts]);
        Ok(published)
    }

    /// Publishes `messages` to a topic in order, all under one hold of its
    /// log: either every one is published (or answered as a duplicate) or,
    /// the topic being gone or the server shutting down, none is.
    pub fn publish_batch(
        &self,
        topic: &str,
        messages: &[Message<'_>],
    ) -> Result<Vec<Published>, BrokerError> {
        let topic = self.topic(topic)?;
        let mut log = self.open_log(&topic)?;
        let mut gone = Vec::new();
        let (published, counts): (Vec<_>, Vec<_>) = messages
            .iter()
            .map(|message| self.append(&topic, &mut log, message, Stamp::Local, &mut gone))
            .unzip();
        drop(log);
        self.settle_fan_out(&topic, &gone, &counts);
        Ok(published)
    }

    /// The topic's log, locked, if it may take a publish. Both checks are
    /// made under the lock: `delete_topic` and `stop_publishes` take it
    /// after flipping their flag, so a publish either completes its
    /// fan-out before them or is refused.
    fn open_log<'t>(&self, topic: &'t Topic) -> Result<MutexGuard<'t, Log>, BrokerError> {
        let log = lock(&topic.log);
        if log.deleted {
            return Err(BrokerError::TopicNotFound(topic.name.to_string()));
        }
        self.check_accepting_publishes()?;
        Ok(log)
    }

    /// Numbers one event, keeps it in the ring and queues it for every
    /// subscriber; a local publish whose id is in the topic's dedup window
    /// is answered with the original's `seq` instead, and no fan-out
    /// (`None`). Subscribers found closed or overflowing are added to `gone`.
    fn append(
        &self,
        topic: &Topic,
        log: &mut Log,
        message: &Message<'_>,
        stamp: Stamp,
        gone: &mut Vec<ConnectionId>,
    ) -> (Published, Option<FanOut>) {
        log.prefetch_eviction(&topic.options);
        // One reading of each clock serves the event's `ts`, the publisher's
        // ack, the dedup window and the fan-out's timing: at full ingress
        // rate every further reading showed.
        let started = Instant::now();
        let (seq, at, dedup_probe) = match stamp {
            Stamp::Local => {
                // (The backplane deduplicates what it delivers.)
                let probe = log
                    .dedup
                    .as_mut()
                    .and_then(|dedup| dedup.probe(message.id, started));
                (log.seq + 1, SystemTime::now(), probe)
            }
            Stamp::Backplane {
                seq,
                stored_at,
                catching_up,
            } => {
                // Events of this topic before this one may have been
                // discarded unread; `settle_history` tightens this.
                if catching_up {
                    log.lost_up_to = log.lost_up_to.max(seq - 1);
                }
                (seq, stored_at, None)
            }
        };
        // Encoded before the dedup check, while the probe's cache lines
        // load: a duplicate, which is rare, throws its encoding away.
        let event = EventFrame::new(reply::event(&topic.name, message, seq, Timestamp::at(at)));
        let duplicate_of = dedup_probe.and_then(|probe| {
            let dedup = log.dedup.as_mut().expect("probed");
            dedup.check(probe, seq)
        });
        if let Some(original) = duplicate_of {
            return (Published::duplicate(original, at), None);
        }
        log.seq = seq;
        // The ring and the fan-out share the one event: the fan-out runs
        // under the log's lock, so it can borrow the event from the ring.
        let unkept;
        let event = match log.keep(seq, event, at, &topic.options) {
            Ok(kept) => kept,
            Err(event) => {
                unkept = event;
                &unkept
            }
        };
        let mut counts = FanOut::default();
        let mut lagging = LaggingWriters::default();
        for Subscriber { id, outbox, .. } in topic.subscribers.load().iter() {
            match outbox.push_event(event) {
                Delivery::Queued => counts.delivered += 1,
                Delivery::QueuedWriterBehind => {
                    counts.delivered += 1;
                    lagging.push(outbox);
                }
                Delivery::QueuedDroppingOldest => {
                    counts.delivered += 1;
                    counts.dropped += 1;
                }
                Delivery::Dropped => counts.dropped += 1,
                Delivery::Overflowed(bound) => {
                    match bound {
                        QueueBound::Events => counts.overflowed_events += 1,
                        QueueBound::Bytes => counts.overflowed_bytes += 1,
                    }
                    gone.push(*id);
                }
                Delivery::Closed => gone.push(*id),
            }
        }
        counts.elapsed = started.elapsed();
        let published = Published {
            seq,
            at,
            lagging,
            duplicate: false,
        };
        (published, Some(counts))
    }

    /// Once the log is released: drops the subscribers the fan-out found
    /// gone, and counts what each append did (a duplicate is counted as
    /// such, not as a publish).
    fn settle_fan_out(&self, topic: &Topic, gone: &[ConnectionId], appended: &[Option<FanOut>]) {
        if !gone.is_empty() {
            topic.remove_subscribers(gone);
        }
        for fan_out in appended {
            match fan_out {
                Some(counts) => {
                    topic.messages.fetch_add(1, Ordering::Relaxed);
                    self.metrics.record_publish(counts);
                }
                None => self.metrics.record_duplicate(),
            }
        }
    }

    /// Stops accepting publishes (graceful shutdown). When this returns,
    /// every publish that was not refused has finished its fan-out: each
    /// topic's lock is taken once after the flag is down.
    pub fn stop_publishes(&self) {
        self.accepting_publishes.store(false, Ordering::Release);
        for topic in self.all_topics() {
            drop(lock(&topic.log));
        }
    }

    /// Cluster mode: `missed` events were lost before this node could fan
    /// them out, and which topics they were for is not known, so every
    /// subscriber is told as its slow-consumer policy says.
    pub fn subscribers_missed_events(&self, missed: u64) {
        let mut disconnected = 0;
        for topic in self.all_topics() {
            for subscriber in topic.subscribers.load().iter() {
                disconnected += u64::from(subscriber.outbox.missed_events());
            }
        }
        self.metrics.record_missed_events(missed, disconnected);
    }

    /// Cluster mode: this node may never have been handed some events with
    /// a `seq` below `seq` (it fell behind the stream, or is still reading
    /// it while the stream discards), and which topics they were for is not
    /// known: no topic's recovery may count on events before `seq`.
    pub fn history_may_be_incomplete(&self, seq: u64) {
        for topic in self.all_topics() {
            let mut log = lock(&topic.log);
            log.lost_up_to = log.lost_up_to.max(seq.saturating_sub(1));
        }
    }

    /// Cluster mode, once this node has read the whole stream: the tight
    /// bound on each topic's losses, replacing the one set while reading
    /// it. The stream keeps at most `per_subject` events of a topic, the
    /// newest, and this node has read every event the stream still holds
    /// (each was there when the reader passed its sequence). So an event
    /// discarded before this node read it is older than all of the newest
    /// `per_subject`, which are in the ring if it holds that many; and if
    /// the ring holds fewer, the stream never had more than it now does to
    /// discard, so nothing was discarded unread.
    pub fn settle_history(&self, per_subject: usize) {
        for topic in self.all_topics() {
            let mut log = lock(&topic.log);
            let discarded_unread = match log.ring.front() {
                Some(&(oldest, _)) if log.ring.len() >= per_subject => oldest - 1,
                _ => 0,
            };
            log.lost_up_to = log.evicted_up_to.max(discarded_unread);
        }
    }

    /// Every topic, collected so the map's shards are released before any
    /// topic lock is taken.
    fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Topics that exist now, without visiting them.
    pub fn topic_count(&self) -> usize {
        self.topic_count.load(Ordering::Acquire)
    }

    /// Every topic with its counts, sorted by name.
    pub fn summaries(&self) -> Vec<TopicSummary> {
        let mut summaries: Vec<_> = self
            .all_topics()
            .iter()
            .map(|topic| topic.summary())
            .collect();
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        summaries
    }

    /// Every subscription on this node with its topic's name, by topic
    /// name. Each topic's list is a snapshot read without a lock, so a
    /// subscription changing meanwhile is either wholly in or out.
    pub fn presence(&self) -> Vec<(Arc<str>, Vec<Presence>)> {
        let mut topics: Vec<_> = self
            .all_topics()
            .iter()
            .map(|topic| (topic.name.clone(), topic.presence()))
            .collect();
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowConsumerPolicy;
    use crate::send::event::Deflate;
    use crate::send::outbox::Outbox;
    use crate::send::{Pending, QueueLimits, Queued};
    use crate::wire::close::CloseReason;
    use crate::wire::permessage_deflate::Agreed;
    use crate::wire::request::Replay;

    const ID: &str = "550e8400-e29b-41d4-a716-446655440000";

    /// Queues the `subscribe` ack, as a WebSocket session does.
    fn ack(outbox: &Arc<Outbox>) -> impl FnOnce(Joined<'_>) + '_ {
        |joined| {
            outbox.push_reply(reply::subscribe_ack(
                None,
                joined.topic,
                joined.seq,
                joined.epoch,
                joined.recovered,
            ))
        }
    }

    fn broker(ring: usize) -> Broker {
        Broker::new(ring, 2, Arc::new(Metrics::default()))
    }

    fn message() -> Message<'static> {
        Message {
            id: ID,
            payload: b"1",
        }
    }

    fn limits(events: usize) -> QueueLimits {
        QueueLimits {
            events,
            bytes: usize::MAX,
        }
    }

    fn outbox(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            limits(capacity),
            SlowConsumerPolicy::Disconnect,
        ))
    }

    /// Everything queued, as the writer would take it.
    fn take_all(outbox: &Outbox, batch: &mut VecDeque<Queued>) -> Option<CloseReason> {
        outbox.settle(&Pending::default(), batch, usize::MAX).close
    }

    #[test]
    fn topic_names_follow_the_contract() {
        assert!(is_valid_topic_name("orders.eu-1:v2_x"));
        assert!(is_valid_topic_name(&"a".repeat(255)));
        for bad in ["", "a b", "a/b", "é", &"a".repeat(256)] {
            assert!(!is_valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_delete_and_duplicates() {
        let broker = broker(10);
        broker.create_topic("t", broker.default_options()).unwrap();
        assert_eq!(
            broker.create_topic("t", broker.default_options()),
            Err(BrokerError::TopicExists("t".into()))
        );
        assert_eq!(
            broker.create_topic("bad name", broker.default_options()),
            Err(BrokerError::InvalidTopicName)
        );
        broker.delete_topic("t").unwrap();
        assert_eq!(
            broker.delete_topic("t"),
            Err(BrokerError::TopicNotFound("t".into()))
        );
        assert!(broker.summaries().is_empty());
    }

    #[test]
    fn the_topic_limit_counts_deletions() {
        let broker = broker(1);
        broker.create_topic("a", broker.default_options()).unwrap();
        broker.create_topic("b", broker.default_options()).unwrap();
        assert_eq!(
            broker.create_topic("c", broker.default_options()),
            Err(BrokerError::TopicLimit(2))
        );
        assert_eq!(
            broker.create_topic("a", broker.default_options()),
            Err(BrokerError::TopicExists("a".into())),
            "a duplicate is still a duplicate at the limit"
        );
        broker.delete_topic("a").unwrap();
        broker.create_topic("c", broker.default_options()).unwrap();
    }

    #[test]
    fn cluster_incarnations_replace_and_retire_in_registry_order() {
        let broker = broker(10);
        broker.adopt_topic("t", 5, "e5", broker.default_options());
        broker.adopt_topic("t", 5, "e5", broker.default_options());
        let first = broker.topic("t").unwrap();
        let subscriber = outbox(8);
        assert!(first.subscribe(1, &subscriber, None, Replay::Last(0), ack(&subscriber)));
        broker.retire_topic("t", 4);
        assert!(
            !first.is_deleted(),
            "an older deletion leaves a newer topic alone"
        );
        assert_eq!(
            broker.adopt_topic("t", 7, "e7", broker.default_options()),
            Some(5)
        );
        assert!(
            first.is_deleted(),
            "a newer incarnation replaces the old one"
        );
        let mut told = VecDeque::new();
        take_all(&subscriber, &mut told);
        assert!(String::from_utf8_lossy(&told[1].frame).contains("topic_deleted"));
        assert_eq!(
            broker.adopt_topic("t", 6, "e6", broker.default_options()),
            None,
            "a stale create is ignored"
        );
        assert_eq!(broker.topic("t").unwrap().incarnation(), 7);
        broker.adopt_topic("u", 8, "e8", broker.default_options());
        broker.adopt_topic("v", 9, "e9", broker.default_options());
        assert_eq!(
            broker.summaries().len(),
            3,
            "the registry is not held to MAX_TOPICS"
        );
        assert_eq!(broker.retire_topic("t", 10), Some(7));
        assert!(broker.topic("t").is_err());
        assert_eq!(broker.at_topic_limit(), Err(BrokerError::TopicLimit(2)));
    }

    #[test]
    fn missed_events_disconnect_or_not_by_policy() {
        let broker = broker(10);
        broker.adopt_topic("t", 1, "e1", broker.default_options());
        let topic = broker.topic("t").unwrap();
        let strict = outbox(8);
        let lenient = Arc::new(Outbox::new(limits(8), SlowConsumerPolicy::DropOldest));
        assert!(topic.subscribe(1, &strict, None, Replay::Last(0), ack(&strict)));
        assert!(topic.subscribe(2, &lenient, None, Replay::Last(0), ack(&lenient)));
        broker.subscribers_missed_events(3);
        assert_eq!(strict.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(lenient.close_reason(), None);
        let snapshot = broker.metrics.snapshot();
        assert_eq!(snapshot.backplane_events_missed, 3);
        assert_eq!(snapshot.slow_consumer_disconnects, 1);
    }

    #[test]
    fn backplane_events_keep_their_sequence_and_store_time() {
        let broker = broker(10);
        broker.adopt_topic("t", 1, "e1", broker.default_options());
        let topic = broker.topic("t").unwrap();
        let stored_at =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let stamp = Stamp::Backplane {
            seq: 42,
            stored_at,
            catching_up: false,
        };
        assert_eq!(
            broker
                .deliver(&topic, &message(), stamp)
                .map(|published| published.seq),
            Ok(42)
        );
        let subscriber = outbox(8);
        assert!(topic.subscribe(1, &subscriber, None, Replay::Last(1), ack(&subscriber)));
        let mut replayed = VecDeque::new();
        take_all(&subscriber, &mut replayed);
        let event = String::from_utf8_lossy(&replayed[1].frame).into_owned();
        assert!(
            event.contains(r#""seq":42,"ts":"2023-11-14T22:13:20.123Z""#),
            "{event}"
        );
    }

    /// Recovery after `since`, as `GET /topics/{name}/messages` reports it.
    fn recovered_after(topic: &Topic, since: u64) -> Option<bool> {
        topic.history(Some(since), usize::MAX).recovered
    }

    #[test]
    fn a_cluster_node_counts_on_no_event_it_may_not_have_been_handed() {
        let broker = broker(3);
        broker.adopt_topic("t", 1, "e1", broker.default_options());
        let topic = broker.topic("t").unwrap();
        let deliver = |seq, catching_up| {
            let stamp = Stamp::Backplane {
                seq,
                stored_at: SystemTime::now(),
                catching_up,
            };
            broker.deliver(&topic, &message(), stamp).unwrap();
        };
        // Read while the stream discards: 20 and 40 never arrive.
        for seq in [10, 30, 50, 60] {
            deliver(seq, true);
        }
        assert_eq!(
            recovered_after(&topic, 58),
            Some(false),
            "while catching up"
        );
        assert_eq!(recovered_after(&topic, 59), Some(true));
        // Caught up with a full ring: anything before 30 may be lost.
        broker.settle_history(3);
        assert_eq!(
            recovered_after(&topic, 10),
            Some(false),
            "20 was never read"
        );
        assert_eq!(recovered_after(&topic, 29), Some(true));
        assert_eq!(recovered_after(&topic, 50), Some(true));
        // Live: an eviction is exact, however sparse the seqs.
        deliver(70, false);
        assert_eq!(recovered_after(&topic, 29), Some(false), "30 was evicted");
        assert_eq!(recovered_after(&topic, 30), Some(true));
        assert_eq!(
            recovered_after(&topic, 71),
            Some(false),
            "ahead of the topic"
        );
        // Fell behind the stream after catching up: 71..=89 may be lost.
        broker.history_may_be_incomplete(90);
        deliver(90, false);
        assert_eq!(recovered_after(&topic, 70), Some(false));
        assert_eq!(recovered_after(&topic, 89), Some(true));

        // A ring that is not full when caught up: the stream never had
        // more of the topic, so it discarded none.
        broker.adopt_topic("u", 2, "e2", broker.default_options());
        let other = broker.topic("u").unwrap();
        let stamp = Stamp::Backplane {
            seq: 100,
            stored_at: SystemTime::now(),
            catching_up: true,
        };
        broker.deliver(&other, &message(), stamp).unwrap();
        assert_eq!(recovered_after(&other, 0), Some(false));
        broker.settle_history(3);
        assert_eq!(recovered_after(&other, 0), Some(true));
    }

    #[test]
    fn a_compressed_replay_shares_each_event_deflated_once() {
        let metrics = Arc::new(Metrics::default());
        let broker = Broker::new(4, 2, metrics.clone());
        broker.create_topic("t", broker.default_options()).unwrap();
        let payload = format!("\"{}\"", "x".repeat(1000));
        let large = Message {
            id: ID,
            payload: payload.as_bytes(),
        };
        for _ in 0..3 {
            broker.publish("t", &large).unwrap();
        }
        let topic = broker.topic("t").unwrap();
        let deflate = Deflate {
            agreed: Agreed {
                server_max_window_bits: 15,
            },
            min_bytes: 256,
            metrics: metrics.clone(),
        };
        let outboxes = [Some(deflate.clone()), Some(deflate), None].map(|deflate| {
            Arc::new(Outbox::new(limits(16), SlowConsumerPolicy::Disconnect).deflating(deflate))
        });
        for (id, outbox) in (1..).zip(&outboxes) {
            assert!(topic.subscribe(id, outbox, None, Replay::Last(2), ack(outbox)));
        }
        assert_eq!(
            metrics.breakdown().events_deflated,
            2,
            "two events, once each"
        );
        let replays = outboxes.map(|outbox| {
            let mut batch = VecDeque::new();
            take_all(&outbox, &mut batch);
            batch
                .into_iter()
                .skip(1)
                .map(|queued| queued.frame)
                .collect::<Vec<_>>()
        });
        let [first, second, plain] = &replays;
        for (frame, shared) in first.iter().zip(second) {
            assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
            assert_eq!(frame.as_ptr(), shared.as_ptr(), "one compressed frame");
        }
        assert!(plain.iter().all(|frame| frame[0] == 0x81));
        assert_eq!(plain.len(), 2);
    }

    /// Event `seq` as stored by the backplane `minutes_ago`.
    fn stored(seq: u64, minutes_ago: u64) -> Stamp {
        Stamp::Backplane {
            seq,
            stored_at: SystemTime::now() - std::time::Duration::from_secs(60 * minutes_ago),
            catching_up: false,
        }
    }

    fn kept(topic: &Topic) -> Vec<u64> {
        let history = topic.history(None, usize::MAX);
        history.events.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn a_topic_keeps_the_history_its_options_say() {
        let broker = broker(10);
        let options = TopicOptions {
            history_size: 2,
            history_ttl: Some(std::time::Duration::from_secs(600)),
            presence_events: false,
        };
        broker.adopt_topic("t", 1, "e1", options);
        let topic = broker.topic("t").unwrap();
        for (seq, minutes_ago) in [(1, 7), (2, 6), (3, 5), (4, 1), (5, 0)] {
            broker
                .deliver(&topic, &message(), stored(seq, minutes_ago))
                .unwrap();
        }
        assert_eq!(kept(&topic), [4, 5], "two kept");
        assert_eq!(recovered_after(&topic, 3), Some(true));
        assert_eq!(recovered_after(&topic, 2), Some(false), "3 was evicted");

        // Only the events older than the TTL go.
        broker.adopt_topic("old", 2, "e2", options);
        let old = broker.topic("old").unwrap();
        for (seq, minutes_ago) in [(1, 20), (2, 11), (3, 9)] {
            broker
                .deliver(&old, &message(), stored(seq, minutes_ago))
                .unwrap();
        }
        assert_eq!(kept(&old), [3], "older than ten minutes: gone");
        assert_eq!(recovered_after(&old, 1), Some(false), "2 expired");
        assert_eq!(recovered_after(&old, 2), Some(true));

        broker.adopt_topic("none", 3, "e3", TopicOptions::with_history(0));
        assert_eq!(broker.publish("none", &message()).map(|p| p.seq), Ok(1));
        let none = broker.topic("none").unwrap();
        assert!(kept(&none).is_empty());
        assert_eq!(recovered_after(&none, 0), Some(false));
        assert_eq!(recovered_after(&none, 1), Some(true));
    }

    #[test]
    fn replay_then_live_in_order_and_ring_is_bounded() {
        let broker = broker(3);
        broker.create_topic("t", broker.default_options()).unwrap();
        for _ in 0..5 {
            broker.publish("t", &message()).unwrap();
        }
        let topic = broker.topic("t").unwrap();
        let outbox = outbox(16);
        assert!(topic.subscribe(1, &outbox, None, Replay::Last(10), ack(&outbox)));
        assert_eq!(
            broker
                .publish("t", &message())
                .map(|published| published.seq),
            Ok(6)
        );
        let mut batch = VecDeque::new();
        take_all(&outbox, &mut batch);
        let seqs: Vec<_> = batch
            .iter()
            .skip(1)
            .map(|queued| {
                let text = String::from_utf8_lossy(&queued.frame);
                text.split("\"seq\":")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .collect();
        assert!(String::from_utf8_lossy(&batch[0].frame).contains(r#""type":"ack""#));
        assert_eq!(seqs, [3, 4, 5, 6]);
        assert_eq!(topic.summary().messages, 6);
    }

    #[test]
    fn deletion_notifies_and_unsubscribes() {
        let broker = broker(3);
        broker.create_topic("t", broker.default_options()).unwrap();
        let topic = broker.topic("t").unwrap();
        let outbox = outbox(16);
        topic.subscribe(1, &outbox, None, Replay::Last(0), ack(&outbox));
        broker.delete_topic("t").unwrap();
        assert!(!topic.subscribe(2, &outbox, None, Replay::Last(0), ack(&outbox)));
        let mut batch = VecDeque::new();
        take_all(&outbox, &mut batch);
        assert_eq!(batch.len(), 2);
        assert!(String::from_utf8_lossy(&batch[1].frame).contains("topic_deleted"));
        assert_eq!(
            broker
                .publish("t", &message())
                .map(|published| published.seq),
            Err(BrokerError::TopicNotFound("t".into()))
        );
    }

    #[test]
    fn overflowing_subscriber_is_dropped_and_others_continue() {
        let broker = broker(0);
        broker.create_topic("t", broker.default_options()).unwrap();
        let topic = broker.topic("t").unwrap();
        let (slow, fast) = (outbox(1), outbox(100));
        topic.subscribe(1, &slow, None, Replay::Last(0), ack(&slow));
        topic.subscribe(2, &fast, None, Replay::Last(0), ack(&fast));
        let mut batch = VecDeque::new();
        take_all(&slow, &mut batch);
        for _ in 0..3 {
            broker.publish("t", &message()).unwrap();
        }
        assert_eq!(topic.summary().subscribers, 1);
        let mut fast_batch = VecDeque::new();
        assert_eq!(take_all(&fast, &mut fast_batch), None);
        assert_eq!(fast_batch.len(), 4, "ack and three events");
        broker.stop_publishes();
        assert_eq!(
            broker
                .publish("t", &message())
                .map(|published| published.seq),
            Err(BrokerError::ShuttingDown)
        );
    }

    #[test]
    fn unsubscribe_waits_for_a_fan_out_in_progress() {
        let broker = broker(0);
        broker.create_topic("t", broker.default_options()).unwrap();
        let topic = broker.topic("t").unwrap();
        topic.subscribe(1, &outbox(4), None, Replay::Last(0), |_| {});
        let unsubscribed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Holding the log stands for a publish that read the old list.
            let publishing = lock(&topic.log);
            scope.spawn(|| {
                topic.unsubscribe(1);
                unsubscribed.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!unsubscribed.load(Ordering::SeqCst), "returned mid fan-out");
            assert_eq!(topic.summary().subscribers, 0, "yet already off the list");
            drop(publishing);
        });
        assert!(unsubscribed.load(Ordering::SeqCst));
    }
}
