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
//!   `CLUSTER_PURGE_DELAY` after the delete (see `Purge`). The registry's
//!   delete is the durable record of a purge owed: every node that mirrors
//!   a delete purges it when due, and a node that starts purges what the
//!   registry says is dead yet still stored, so a purge is not lost with
//!   the node that would have made it.
//! - **Recovery.** A topic's epoch is its incarnation (the registry
//!   revision) with the identity of the streams (an id each stream's
//!   replicated configuration carries, see `identity`), so
//!   every node reports the same one, a restart keeps it, and a topic or a
//!   stream created again changes it. See [`Broker::settle_history`] for
//!   how a node knows which events it may have lost.
//! - **Presence.** `GET /subscriptions` and `GET /topics/{name}/subscribers`
//!   gather every node's rows over core NATS; a key-value bucket lists the
//!   live nodes, so a node that does not answer is named (see `presence`).
//! - **Join and leave.** On topics with `presence_events`, each node sends
//!   its subscribers' joins and leaves to the others over core NATS (see
//!   `membership`).
//! - **Server API.** `POST /disconnect` and `POST /unsubscribe` reach
//!   every node over core NATS and count every node's matches (see
//!   `commands`).
//! - **Faults.** While NATS is unreachable, publishes and topic changes fail
//!   at once with `BackplaneUnavailable`, `/health` says so with 503, and
//!   the client reconnects by itself; the followers resume where they left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::{self, kv, stream};
use futures_util::future::BoxFuture;

use tokio::sync::{mpsc, watch, Notify};

use crate::broker::{Broker, BrokerError, MembershipChange, Receipt};
use crate::cluster::identity::identity;
use crate::cluster::names::{bucket_stream, EVENT_STREAM, EVENT_SUBJECT_PREFIX, REGISTRY_BUCKET};
use crate::config::Config;
use crate::connections::Connections;
use crate::sync::lock;

mod commands;
mod events;
mod identity;
mod membership;
mod names;
mod presence;
mod purge;
mod registry;
mod replicas;
mod set_up_error;
mod watchdog;

pub use set_up_error::ReplicasUnplaceable;
use set_up_error::SetUpError;

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
    /// The live nodes, one key each (see `presence`).
    nodes: kv::Store,
    /// Names the streams' lifetime: their identities (see `identity`).
    history_id: String,
}

impl Backplane {
    /// The epoch of topic incarnation `revision`.
    fn epoch(&self, revision: u64) -> String {
        format!("{}-{revision}", self.history_id)
    }
}

pub struct Cluster {
    /// The node's broker, into which the registry is mirrored and the
    /// stream fanned out.
    broker: Arc<Broker>,
    /// The node's connections, which the server API's commands act on.
    connections: Arc<Connections>,
    /// The broker's joins and leaves, until the follower takes them to
    /// send to the other nodes.
    membership_changes: Mutex<Option<mpsc::UnboundedReceiver<MembershipChange>>>,
    client: async_nats::Client,
    /// Names this node in presence answers; random per process.
    node_id: Arc<str>,
    /// `CLUSTER_PRESENCE_TIMEOUT`.
    presence_timeout: Duration,
    jetstream: jetstream::Context,
    ring_capacity: usize,
    /// `CLUSTER_PURGE_DELAY`.
    purge_delay: Duration,
    /// `CLUSTER_STREAM_REPLICAS`.
    replicas: usize,
    /// `DEDUP_WINDOW`, the event stream's duplicate window; `None` (off):
    /// publishes carry no `Nats-Msg-Id`.
    dedup_window: Option<Duration>,
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

/// A publish sent to JetStream: resolves to its `seq` once stored (the
/// original's, for a duplicate).
pub type PendingPublish = BoxFuture<'static, Result<Receipt, BrokerError>>;

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
    /// an unreachable server is retried for ever), with the cluster
    /// settings of `config`. Fails only on a malformed address.
    pub async fn connect(
        url: &str,
        config: &Config,
        broker: Arc<Broker>,
        connections: Arc<Connections>,
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
            .connect(server_list(url))
            .await?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let node_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string()[..12].into();
        tracing::info!(node = %node_id, "cluster node id");
        let (changes, membership_changes) = mpsc::unbounded_channel();
        broker.share_membership_changes(changes);
        Ok(Arc::new(Self {
            broker,
            connections,
            membership_changes: Mutex::new(Some(membership_changes)),
            client,
            node_id,
            presence_timeout: config.cluster_presence_timeout,
            jetstream,
            ring_capacity: config.ring_buffer_size as usize,
            purge_delay: config.cluster_purge_delay,
            replicas: config.cluster_stream_replicas.into(),
            dedup_window: (!config.dedup_window.is_zero()).then_some(config.dedup_window),
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

    /// Sets up the JetStream objects, then mirrors the registry, fans out
    /// the stream and purges deleted topics' events until `stop` is
    /// cancelled. Retries whatever fails, except a replica count NATS
    /// cannot place, which ends it with the error.
    pub async fn follow(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ReplicasUnplaceable> {
        let broker = self.broker.clone();
        let work = async {
            let backplane = loop {
                match self.set_up().await {
                    Ok(backplane) => break self.backplane.get_or_init(|| backplane),
                    Err(SetUpError::Fatal(err)) => return Err(err),
                    Err(SetUpError::Transient(err)) => {
                        tracing::warn!(error = %err, "cluster backplane not ready; retrying");
                        tokio::time::sleep(RETRY_DELAY).await;
                    }
                }
            };
            let (purges, owed) = mpsc::unbounded_channel();
            let membership_changes = lock(&self.membership_changes).take();
            tokio::join!(
                self.answer_presence(&broker),
                self.answer_commands(),
                self.hear_membership(),
                async {
                    if let Some(changes) = membership_changes {
                        self.share_membership(changes).await;
                    }
                },
                self.stay_listed(&backplane.nodes),
                self.follow_registry(&broker, backplane, &purges),
                async {
                    self.await_registry_snapshot().await;
                    tokio::join!(
                        self.follow_events(&broker, &backplane.events),
                        self.find_unpurged(&broker, backplane, &purges),
                    )
                },
                self.run_purges(&backplane.events, owed),
            );
            Ok(())
        };
        tokio::select! {
            outcome = work => outcome,
            () = stop => Ok(()),
        }
    }

    async fn set_up(&self) -> Result<Backplane, SetUpError> {
        let config = stream::Config {
            name: EVENT_STREAM.into(),
            subjects: vec![format!("{EVENT_SUBJECT_PREFIX}>")],
            max_messages_per_subject: self.ring_capacity.max(1) as i64,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            // Zero with dedup off: the stream keeps the window it has.
            duplicate_window: self.dedup_window.unwrap_or_default(),
            ..Default::default()
        };
        let events = self.replicated_stream(config).await?;
        let registry_stream = self
            .replicated_stream(bucket_stream(REGISTRY_BUCKET))
            .await?;
        let registry = self
            .jetstream
            .get_key_value(REGISTRY_BUCKET)
            .await
            .map_err(async_nats::Error::from)?;
        let nodes = self.node_list().await?;
        let history_id = format!(
            "{}{}",
            identity(events.cached_info()),
            identity(registry_stream.cached_info())
        );
        Ok(Backplane {
            events,
            registry,
            nodes,
            history_id,
        })
    }
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

/// `CLUSTER_NATS_URL` as the client takes it: one address, or several
/// separated by commas (the client tries them in turn and reconnects to
/// any of them).
fn server_list(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

fn unavailable(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::BackplaneUnavailable(err.to_string())
}
