//! Cluster mode (`CLUSTER_NATS_URL`): nodes behind a load balancer share
//! topics and events through NATS JetStream, so each behaves like one
//! broker.
//!
//! - **Events.** One stream holds every topic's events, one subject per
//!   topic incarnation, at most `RING_BUFFER_SIZE` per subject. A publish is
//!   acknowledged once JetStream has stored it. Every node follows the whole
//!   stream in order and hands each event to [`Broker::deliver`], the entry
//!   point local publishes use, stamped with the stream sequence and store
//!   time, so every subscriber on every node sees the same `seq`, `ts` and
//!   order. A node that starts replays the stream into its rings before it
//!   reports healthy.
//! - **Topics.** A key-value bucket is the registry: create is an atomic
//!   "create if absent", delete removes the key. Every node follows the
//!   bucket and mirrors it into its [`Broker`]. A key's revision names the
//!   topic's incarnation, so events of a deleted topic never reach a topic
//!   created later with its name.
//! - **Purges.** A deleted incarnation's events are purged from the stream
//!   `CLUSTER_PURGE_DELAY` after the delete (see [`Purge`]). The registry's
//!   delete is the durable record of a purge owed: every node that mirrors
//!   a delete purges it when due, and a node that starts purges what the
//!   registry says is dead yet still stored, so a purge is not lost with
//!   the node that would have made it.
//! - **Recovery.** A topic's epoch is its incarnation (the registry
//!   revision) with the identity of the streams (their creation times), so
//!   every node reports the same one, a restart keeps it, and a topic or a
//!   stream created again changes it. See [`Broker::settle_history`] for
//!   how a node knows which events it may have lost.
//! - **Presence.** `GET /subscriptions` and `GET /topics/{name}/subscribers`
//!   gather every node's rows over core NATS; a key-value bucket lists the
//!   live nodes, so a node that does not answer is named (see [`presence`]).
//! - **Faults.** While NATS is unreachable, publishes and topic changes fail
//!   at once with `BackplaneUnavailable`, `/health` says so with 503, and
//!   the client reconnects by itself; the followers resume where they left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::broker::{is_valid_topic_name, Broker, BrokerError, Stamp, Topic};
use crate::wire::request::Message;

mod presence;

/// The stream holding every topic's events.
const EVENT_STREAM: &str = "RINGCAST";
/// Event subjects: `ringcast.events.<encoded topic>.<incarnation>`.
const EVENT_SUBJECT_PREFIX: &str = "ringcast.events.";
/// The topic registry's key-value bucket.
const REGISTRY_BUCKET: &str = "ringcast-topics";
/// A message id republished to the same topic incarnation within this window
/// is stored once, so a client retrying a failed publish cannot duplicate
/// it (see [`scoped_message_id`]).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Deadline of every JetStream request, publish acknowledgements included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a publish waits, after JetStream stored it, for this node to
/// have fanned it out, so the publisher's own node has it before the ack.
const LOCAL_FAN_OUT_WAIT: Duration = Duration::from_secs(1);
/// Pause before setting up or following again after a failure.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// How often the client pings NATS; a dead server is noticed within two.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// What `/health` reports about the backplane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackplaneState {
    /// Not yet connected, or still replaying the registry and the stream.
    Starting,
    /// Connected and caught up: the node serves.
    Connected,
    /// Lost NATS after having served; reconnecting.
    Disconnected,
}

/// The JetStream objects, once they exist.
struct Backplane {
    events: stream::Stream,
    registry: kv::Store,
    /// The live nodes, one key each (see [`presence`]).
    nodes: kv::Store,
    /// Names the streams' lifetime: their creation times, in hex.
    history_id: String,
}

impl Backplane {
    /// The epoch of topic incarnation `revision`.
    fn epoch(&self, revision: u64) -> String {
        format!("{}-{revision}", self.history_id)
    }
}

pub struct Cluster {
    client: async_nats::Client,
    /// Names this node in presence answers; random per process.
    node_id: Arc<str>,
    /// `CLUSTER_PRESENCE_TIMEOUT`.
    presence_timeout: Duration,
    jetstream: jetstream::Context,
    ring_capacity: usize,
    /// `CLUSTER_PURGE_DELAY`.
    purge_delay: Duration,
    backplane: OnceLock<Backplane>,
    /// Set once this node has replayed the registry and the stream.
    caught_up: AtomicBool,
    /// The last registry revision mirrored into the broker.
    registry_applied: watch::Sender<u64>,
    /// Raised when the registry follower missed a change it should have
    /// had by now: it then watches again from the last one it applied.
    registry_stalled: Notify,
    /// The last stream sequence handed to the fan-out.
    events_applied: watch::Sender<u64>,
    /// Events stored in the stream after the last one this node applied,
    /// as JetStream reported with it: how far the follower lags.
    follower_lag: AtomicU64,
}

/// A publish sent to JetStream: resolves to its `seq` once stored.
pub type PendingPublish = BoxFuture<'static, Result<u64, BrokerError>>;

/// A deleted topic incarnation's events, to purge from the stream once
/// `due`: `CLUSTER_PURGE_DELAY` after the delete, when every node has surely
/// read them (a node that finds events missing takes it for having fallen
/// behind). Purging is idempotent, so every node makes each purge.
struct Purge {
    subject: String,
    due: SystemTime,
}

impl Cluster {
    /// Starts connecting to `url` in the background (this returns at once;
    /// an unreachable server is retried for ever). Fails only on a
    /// malformed address.
    pub async fn connect(
        url: &str,
        ring_capacity: usize,
        purge_delay: Duration,
        presence_timeout: Duration,
    ) -> Result<Arc<Self>, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("ringcast")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(REQUEST_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(100) * attempts as u32).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(|event| async move {
                tracing::info!(%event, "cluster backplane");
            })
            .connect(url)
            .await?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let node_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string()[..12].into();
        tracing::info!(node = %node_id, "cluster node id");
        Ok(Arc::new(Self {
            client,
            node_id,
            presence_timeout,
            jetstream,
            ring_capacity,
            purge_delay,
            backplane: OnceLock::new(),
            caught_up: AtomicBool::new(false),
            registry_applied: watch::Sender::new(0),
            registry_stalled: Notify::new(),
            events_applied: watch::Sender::new(0),
            follower_lag: AtomicU64::new(0),
        }))
    }

    pub fn state(&self) -> BackplaneState {
        match self.client.connection_state() {
            ConnectionState::Connected if self.caught_up.load(Ordering::Acquire) => {
                BackplaneState::Connected
            }
            ConnectionState::Disconnected if self.caught_up.load(Ordering::Acquire) => {
                BackplaneState::Disconnected
            }
            _ => BackplaneState::Starting,
        }
    }

    /// Events stored in the stream that this node has not applied yet, as
    /// of the last one it applied.
    pub fn follower_lag(&self) -> u64 {
        self.follower_lag.load(Ordering::Relaxed)
    }

    /// The last stream sequence this node fanned out.
    pub fn events_applied(&self) -> u64 {
        *self.events_applied.borrow()
    }

    /// The backplane, if this node may use it now.
    fn available(&self) -> Result<&Backplane, BrokerError> {
        match (self.state(), self.backplane.get()) {
            (BackplaneState::Connected, Some(backplane)) => Ok(backplane),
            (BackplaneState::Starting, _) => Err(BrokerError::BackplaneUnavailable(
                "this node is still joining the cluster".into(),
            )),
            _ => Err(BrokerError::BackplaneUnavailable(
                "NATS is unreachable; reconnecting".into(),
            )),
        }
    }

    /// Sends a publish to JetStream. Awaiting this only hands the message
    /// to the connection, in call order, so one connection's publishes keep
    /// their order; the returned future resolves once JetStream stored it.
    /// A duplicate resolves to the original's `seq`: JetStream acknowledges
    /// it with the original's stream sequence, which is the event's `seq`,
    /// and the scoped id makes the original an event of this same topic.
    pub async fn publish(
        self: &Arc<Self>,
        topic: &Topic,
        message: &Message<'_>,
    ) -> Result<PendingPublish, BrokerError> {
        self.available()?;
        let stored = self
            .jetstream
            .send_publish(
                event_subject(topic.name(), topic.incarnation()),
                jetstream::message::PublishMessage::build()
                    .payload(Bytes::copy_from_slice(message.payload))
                    .message_id(scoped_message_id(topic, message.id)),
            )
            .await
            .map_err(unavailable)?;
        let cluster = self.clone();
        Ok(async move {
            let seq = stored.await.map_err(unavailable)?.sequence;
            let fanned_out = cluster.events_applied.subscribe();
            let _ = wait_until_applied(fanned_out, seq, LOCAL_FAN_OUT_WAIT).await;
            Ok(seq)
        }
        .boxed())
    }

    /// Creates a topic in the registry; returns once this node has it.
    pub async fn create_topic(&self, broker: &Broker, name: &str) -> Result<(), BrokerError> {
        if !is_valid_topic_name(name) {
            return Err(BrokerError::InvalidTopicName);
        }
        let registry = &self.available()?.registry;
        broker.at_topic_limit()?;
        match registry
            .create(encode_topic(name), Bytes::copy_from_slice(name.as_bytes()))
            .await
        {
            Ok(revision) => {
                self.wait_for_registry(revision).await;
                Ok(())
            }
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(BrokerError::TopicExists(name.to_owned()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Deletes a topic from the registry; returns once this node has
    /// deleted it (other nodes follow within moments). Its events are
    /// purged later, by every node (see [`Purge`]).
    /// Once the registry has the delete it succeeded, whatever follows: an
    /// error then would make the client retry into a 404.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let backplane = self.available()?;
        let key = encode_topic(name);
        let not_found = || BrokerError::TopicNotFound(name.to_owned());
        // Only the incarnation read is deleted: a concurrent delete and
        // create in between makes this one try again.
        loop {
            let entry = backplane
                .registry
                .entry(key.as_str())
                .await
                .map_err(unavailable)?
                .filter(|entry| entry.operation == kv::Operation::Put)
                .ok_or_else(not_found)?;
            match backplane
                .registry
                .delete_expect_revision(&key, Some(entry.revision))
                .await
            {
                Ok(()) => {
                    if let Err(err) = self.sync_registry().await {
                        tracing::warn!(
                            topic = name,
                            error = %err,
                            "topic deleted; this node mirrors it once it can read the registry again"
                        );
                    }
                    return Ok(());
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(unavailable(err)),
            }
        }
    }

    /// The topic, asking the registry before answering "not found": a topic
    /// created on another node a moment ago may not have reached this one.
    pub async fn topic(&self, broker: &Broker, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match broker.topic(name) {
            Err(BrokerError::TopicNotFound(_)) if self.available().is_ok() => {
                self.sync_registry().await?;
                broker.topic(name)
            }
            found => found,
        }
    }

    /// Waits until this node has mirrored every registry change made so far.
    async fn sync_registry(&self) -> Result<(), BrokerError> {
        self.available()?;
        let last_revision = self.registry_revision().await.map_err(unavailable)?;
        self.wait_for_registry(last_revision).await;
        Ok(())
    }

    /// The registry's latest revision, asked of NATS (the bucket's own
    /// `status` answers from what it cached when it was opened).
    async fn registry_revision(&self) -> Result<u64, async_nats::Error> {
        let stream = self.jetstream.get_stream(registry_stream_name()).await?;
        Ok(stream.cached_info().state.last_sequence)
    }

    async fn wait_for_registry(&self, revision: u64) {
        if !wait_until_applied(self.registry_applied.subscribe(), revision, REQUEST_TIMEOUT).await {
            tracing::warn!(
                revision,
                "registry follower is behind; answering from what it has"
            );
            self.registry_stalled.notify_one();
        }
    }

    /// Sets up the JetStream objects, then mirrors the registry, fans out
    /// the stream and purges deleted topics' events until `stop` is
    /// cancelled. Retries whatever fails.
    pub async fn follow(self: Arc<Self>, broker: Arc<Broker>, stop: CancellationToken) {
        let work = async {
            let backplane = loop {
                match self.set_up().await {
                    Ok(backplane) => break self.backplane.get_or_init(|| backplane),
                    Err(err) => {
                        tracing::warn!(error = %err, "cluster backplane not ready; retrying");
                        tokio::time::sleep(RETRY_DELAY).await;
                    }
                }
            };
            let (purges, owed) = mpsc::unbounded_channel();
            tokio::join!(
                self.answer_presence(&broker),
                self.stay_listed(&backplane.nodes),
                self.follow_registry(&broker, backplane, &purges),
                async {
                    self.await_registry_snapshot().await;
                    tokio::join!(
                        self.follow_events(&broker, &backplane.events),
                        self.find_unpurged(&broker, backplane, &purges),
                    )
                },
                run_purges(&backplane.events, owed),
            );
        };
        tokio::select! {
            () = work => {}
            () = stop.cancelled() => {}
        }
    }

    async fn set_up(&self) -> Result<Backplane, async_nats::Error> {
        let config = stream::Config {
            name: EVENT_STREAM.into(),
            subjects: vec![format!("{EVENT_SUBJECT_PREFIX}>")],
            max_messages_per_subject: self.ring_capacity.max(1) as i64,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let per_subject = config.max_messages_per_subject;
        let events = self.jetstream.get_or_create_stream(config.clone()).await?;
        // Updated only when the ring size changed: nats-server 2.9.10 can
        // crash when several nodes update one stream at the same moment.
        if events.cached_info().config.max_messages_per_subject != per_subject {
            self.jetstream.update_stream(config).await?;
        }
        let registry_stream = self
            .jetstream
            .get_or_create_stream(bucket_stream(REGISTRY_BUCKET))
            .await?;
        let registry = self.jetstream.get_key_value(REGISTRY_BUCKET).await?;
        // Heartbeats need not survive a NATS restart: nodes put them again.
        self.jetstream
            .get_or_create_stream(stream::Config {
                max_age: presence::NODE_TTL,
                // JetStream wants it no longer than `max_age`; puts carry
                // no message id anyway.
                duplicate_window: presence::NODE_TTL,
                storage: stream::StorageType::Memory,
                ..bucket_stream(presence::NODES_BUCKET)
            })
            .await?;
        let nodes = self.jetstream.get_key_value(presence::NODES_BUCKET).await?;
        let history_id = format!(
            "{:x}{:x}",
            events.cached_info().created.unix_timestamp_nanos(),
            registry_stream.cached_info().created.unix_timestamp_nanos()
        );
        Ok(Backplane {
            events,
            registry,
            nodes,
            history_id,
        })
    }

    /// Waits until the registry as it was on joining is mirrored, so a node
    /// that reports caught up (which the event follower decides) has every
    /// topic.
    async fn await_registry_snapshot(&self) {
        let last_revision = loop {
            match self.registry_revision().await {
                Ok(revision) => break revision,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the topic registry; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        };
        let mut mirrored = self.registry_applied.subscribe();
        let _ = mirrored.wait_for(|applied| *applied >= last_revision).await;
    }

    /// Mirrors the registry into the broker, in revision order, for ever;
    /// each incarnation it deletes is handed to `purges`.
    async fn follow_registry(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        purges: &mpsc::UnboundedSender<Purge>,
    ) {
        let registry = &backplane.registry;
        loop {
            let from = *self.registry_applied.borrow() + 1;
            let watch = if from == 1 {
                registry.watch_with_history(">").await
            } else {
                registry.watch_from_revision(">", from).await
            };
            match watch {
                Ok(mut entries) => loop {
                    tokio::select! {
                        entry = entries.next() => match entry {
                            Some(Ok(entry)) => self.apply_registry_entry(broker, backplane, &entry, purges),
                            Some(Err(err)) => tracing::warn!(error = %err, "registry watch"),
                            None => break,
                        },
                        () = self.registry_stalled.notified() => {
                            tracing::warn!("registry watch fell silent; watching again");
                            break;
                        }
                    }
                },
                Err(err) => tracing::warn!(error = %err, "cannot watch the topic registry"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    fn apply_registry_entry(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        entry: &kv::Entry,
        purges: &mpsc::UnboundedSender<Purge>,
    ) {
        if entry.revision <= *self.registry_applied.borrow() {
            return;
        }
        match decode_topic(&entry.key) {
            Some(name) => {
                let retired = match entry.operation {
                    kv::Operation::Put => {
                        broker.adopt_topic(&name, entry.revision, &backplane.epoch(entry.revision))
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        broker.retire_topic(&name, entry.revision)
                    }
                };
                if let Some(incarnation) = retired {
                    self.owe_purge(purges, event_subject(&name, incarnation), entry);
                }
            }
            None => tracing::warn!(key = entry.key, "registry key is not a topic; ignored"),
        }
        self.registry_applied.send_replace(entry.revision);
    }

    /// Hands `purges` the purge of `subject`, an incarnation that registry
    /// `entry` (its delete, or its successor's creation) ended.
    fn owe_purge(&self, purges: &mpsc::UnboundedSender<Purge>, subject: String, entry: &kv::Entry) {
        let ended_at = system_time(entry.created.unix_timestamp_nanos());
        // Fails only once `follow` is ending, and the purger with it.
        let _ = purges.send(Purge {
            subject,
            due: ended_at + self.purge_delay,
        });
    }

    /// Once, on joining: hands `purges` every incarnation whose events the
    /// stream still holds though the registry has ended it. Nodes that
    /// stopped within `CLUSTER_PURGE_DELAY` of a delete left those; the
    /// registry keeps only the latest entry per topic, so they are found in
    /// the stream. Retried until it could look at every subject.
    async fn find_unpurged(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        purges: &mpsc::UnboundedSender<Purge>,
    ) {
        while let Err(err) = self.try_find_unpurged(broker, backplane, purges).await {
            tracing::warn!(error = %err, "cannot look for deleted topics' events; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    async fn try_find_unpurged(
        &self,
        broker: &Broker,
        backplane: &Backplane,
        purges: &mpsc::UnboundedSender<Purge>,
    ) -> Result<(), async_nats::Error> {
        let mut subjects = backplane
            .events
            .info_with_subjects(format!("{EVENT_SUBJECT_PREFIX}>"))
            .await?;
        while let Some((subject, _)) = subjects.next().await.transpose()? {
            let Some((name, incarnation)) = parse_event_subject(&subject) else {
                continue;
            };
            if broker
                .topic(&name)
                .is_ok_and(|topic| topic.incarnation() == incarnation)
            {
                continue;
            }
            // Ended only if the registry has a later entry for the name: a
            // subject it does not know is not ringcast's to purge.
            let latest = backplane.registry.entry(encode_topic(&name)).await?;
            if let Some(entry) = latest.filter(|entry| entry.revision > incarnation) {
                self.owe_purge(purges, subject, &entry);
            }
        }
        Ok(())
    }

    /// Fans out every stored event, in stream order, for ever.
    async fn follow_events(&self, broker: &Broker, events: &stream::Stream) {
        loop {
            let deliver_policy = match *self.events_applied.borrow() {
                0 => consumer::DeliverPolicy::All,
                applied => consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: applied + 1,
                },
            };
            let consumer = events
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    deliver_policy,
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(consumer) => {
                    if consumer.cached_info().num_pending == 0 {
                        self.mark_caught_up(broker, events);
                    }
                    consumer.messages().await
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot follow the event stream");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            match messages {
                Ok(mut messages) => {
                    // Errors here (missed heartbeats, a reconnect) are
                    // recovered by the ordered consumer itself.
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(message) => self.apply_event(broker, events, &message).await,
                            Err(err) => tracing::debug!(error = %err, "event stream"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot follow the event stream"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    async fn apply_event(
        &self,
        broker: &Broker,
        events: &stream::Stream,
        message: &jetstream::Message,
    ) {
        let Ok(info) = message.info() else {
            tracing::warn!(subject = %message.subject, "event without stream metadata; ignored");
            return;
        };
        let seq = info.stream_sequence;
        let applied = *self.events_applied.borrow();
        // A consumer recreated after a reconnect may start over.
        if seq <= applied {
            return;
        }
        let caught_up = self.caught_up.load(Ordering::Acquire);
        let missed = discarded_unread(applied, seq, caught_up);
        if missed > 0 {
            tracing::warn!(
                missed,
                "fell behind the event stream: events were discarded before this node read them"
            );
            broker.subscribers_missed_events(missed);
            broker.history_may_be_incomplete(seq);
        }
        let stored_at = system_time(info.published.unix_timestamp_nanos());
        match parse_event_subject(&message.subject) {
            Some((name, incarnation)) if self.mirror_incarnation(incarnation).await => {
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                    .map_or("", |id| client_message_id(id.as_str()));
                if let Ok(topic) = broker.topic(&name) {
                    if topic.incarnation() == incarnation {
                        let event = Message {
                            id,
                            payload: &message.payload,
                        };
                        // Refused only when the topic was deleted or the
                        // node is shutting down: nobody is left to get it.
                        // The follower serves every topic, so it does not wait for a
                        // lagging writer: the subscribers' bounds decide.
                        let stamp = Stamp::Backplane {
                            seq,
                            stored_at,
                            catching_up: !caught_up,
                        };
                        let _ = broker.deliver(&topic, &event, stamp);
                    }
                }
            }
            Some(_) => tracing::warn!(
                subject = %message.subject,
                "event of a topic incarnation the registry never had; ignored"
            ),
            None => {
                tracing::warn!(subject = %message.subject, "event subject not understood; ignored")
            }
        }
        self.events_applied.send_replace(seq);
        self.follower_lag.store(info.pending, Ordering::Relaxed);
        if info.pending == 0 {
            self.mark_caught_up(broker, events);
        }
    }

    /// Whether registry revision `incarnation` exists, once this node has
    /// mirrored it. Registry and events are separate streams, so a topic's
    /// creation may not be mirrored yet when its first events arrive, and
    /// the follower waits for it. A revision the registry has not reached
    /// names no topic (another NATS client wrote the subject): waiting for
    /// it would hold up every topic's events, so it is not waited for.
    async fn mirror_incarnation(&self, incarnation: u64) -> bool {
        if incarnation <= *self.registry_applied.borrow() {
            return true;
        }
        match self.registry_revision().await {
            Ok(last_revision) if incarnation > last_revision => false,
            // Not known to be foreign: waited for, as long as any lag.
            _ => {
                self.wait_for_registry(incarnation).await;
                true
            }
        }
    }

    /// Settles every topic's history (see [`Broker::settle_history`]) as
    /// the node starts to serve, by the stream's own limit per topic, which
    /// a node with another `RING_BUFFER_SIZE` may have set.
    fn mark_caught_up(&self, broker: &Broker, events: &stream::Stream) {
        if !self.caught_up.load(Ordering::Acquire) {
            let per_subject = events.cached_info().config.max_messages_per_subject;
            broker.settle_history(usize::try_from(per_subject).unwrap_or(usize::MAX));
        }
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                topics = *self.registry_applied.borrow(),
                events = *self.events_applied.borrow(),
                "caught up with the cluster"
            );
        }
    }
}

/// How many events the stream discarded before this node read them, seeing
/// event `seq` after `applied`. Once caught up, the follower reads every
/// event as it is stored, and deleted topics' events are purged only
/// `CLUSTER_PURGE_DELAY` after, so a skipped sequence is an event discarded
/// unread: the node fell more than a topic's `RING_BUFFER_SIZE` behind, or
/// was cut off from NATS while others published. While catching up, skips
/// are the history the stream had already discarded, and the first event
/// read has nothing before it to compare.
fn discarded_unread(applied: u64, seq: u64, caught_up: bool) -> u64 {
    if applied == 0 || !caught_up {
        return 0;
    }
    seq.saturating_sub(applied + 1)
}

/// Makes the purges owed, in the order they were handed over, each once
/// due (never earlier); one that fails is retried, as a purge is idempotent.
async fn run_purges(events: &stream::Stream, mut owed: mpsc::UnboundedReceiver<Purge>) {
    while let Some(Purge { subject, due }) = owed.recv().await {
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        while let Err(err) = events.purge().filter(&subject).await {
            tracing::warn!(subject, error = %err, "cannot purge a deleted topic's events; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// A JetStream timestamp, in nanoseconds since the Unix epoch.
fn system_time(unix_nanos: i128) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_nanos.max(0) as u64)
}

/// Waits until `applied` reaches `target`; false if `timeout` passed first.
async fn wait_until_applied(
    mut applied: watch::Receiver<u64>,
    target: u64,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= target))
        .await
        .is_ok_and(|waited| waited.is_ok())
}

fn unavailable(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::BackplaneUnavailable(err.to_string())
}

/// The stream behind the registry bucket.
fn registry_stream_name() -> String {
    bucket_stream_name(REGISTRY_BUCKET)
}

/// The stream behind a key-value bucket, named as JetStream names it.
fn bucket_stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The stream behind key-value bucket `bucket`, one value per key, created
/// by hand as the crate would: its own bucket creation fails against
/// nats-server 2.9.
fn bucket_stream(bucket: &str) -> stream::Config {
    stream::Config {
        name: bucket_stream_name(bucket),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

fn event_subject(topic: &str, incarnation: u64) -> String {
    format!(
        "{EVENT_SUBJECT_PREFIX}{}.{incarnation}",
        encode_topic(topic)
    )
}

/// The `Nats-Msg-Id` of a publish: JetStream deduplicates ids across the
/// whole stream, so the client's id is scoped to the topic incarnation
/// (`<encoded topic>.<incarnation>.<id>`), or the same id sent to another
/// topic, or to a topic deleted and created again, would be dropped.
fn scoped_message_id(topic: &Topic, id: &str) -> String {
    format!(
        "{}.{}.{id}",
        encode_topic(topic.name()),
        topic.incarnation()
    )
}

/// The client's message id in a scoped `Nats-Msg-Id`: what follows the last
/// `.`, which a UUID never contains. An id without one (another NATS
/// client's publish) is taken whole.
fn client_message_id(scoped: &str) -> &str {
    scoped.rsplit_once('.').map_or(scoped, |(_, id)| id)
}

/// The topic and incarnation of an event subject.
fn parse_event_subject(subject: &str) -> Option<(String, u64)> {
    let (topic, incarnation) = subject
        .strip_prefix(EVENT_SUBJECT_PREFIX)?
        .rsplit_once('.')?;
    Some((decode_topic(topic)?, incarnation.parse().ok()?))
}

/// A topic name as one subject token and registry key: of the characters
/// topic names allow, `.` separates tokens and `:` is not allowed in keys.
fn encode_topic(name: &str) -> String {
    name.replace('.', "=2E").replace(':', "=3A")
}

fn decode_topic(encoded: &str) -> Option<String> {
    let name = encoded.replace("=2E", ".").replace("=3A", ":");
    (is_valid_topic_name(&name) && encode_topic(&name) == encoded).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip_through_subjects_and_keys() {
        for name in ["orders", "orders.eu-1:v2_x", "a..b", ":", "=x"] {
            let subject = event_subject(name, 42);
            let token = subject.strip_prefix(EVENT_SUBJECT_PREFIX).unwrap();
            assert_eq!(token.split('.').count(), 2, "{subject}");
            if is_valid_topic_name(name) {
                assert_eq!(parse_event_subject(&subject), Some((name.to_owned(), 42)));
            }
        }
        assert_eq!(encode_topic("a.b:c"), "a=2Eb=3Ac");
    }

    #[test]
    fn message_ids_are_scoped_to_the_topic_incarnation_and_back() {
        let id = "550e8400-e29b-41d4-a716-446655440000";
        let broker = Broker::new(1, 2, Default::default());
        broker.adopt_topic("orders.eu:1", 7, "e7");
        let scoped = scoped_message_id(&broker.topic("orders.eu:1").unwrap(), id);
        assert_eq!(scoped, format!("orders=2Eeu=3A1.7.{id}"));
        assert_eq!(client_message_id(&scoped), id);
        assert_eq!(client_message_id(id), id, "an unscoped id is kept whole");
    }

    #[test]
    fn only_a_skip_after_catching_up_is_an_event_missed() {
        assert_eq!(discarded_unread(10, 11, true), 0);
        assert_eq!(discarded_unread(10, 14, true), 3);
        assert_eq!(discarded_unread(10, 14, false), 0, "history has holes");
        assert_eq!(discarded_unread(0, 500, true), 0, "nothing read yet");
    }

    #[test]
    fn foreign_subjects_and_keys_are_refused() {
        for subject in [
            "ringcast.events.orders",
            "ringcast.events.orders.x",
            "other.orders.1",
            "ringcast.events.a=41.1",
        ] {
            assert_eq!(parse_event_subject(subject), None, "{subject}");
        }
        assert_eq!(decode_topic("=2"), None);
    }
}
