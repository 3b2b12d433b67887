//! `Node`: this server's broker as its transports see it, and the one place
//! where a single node and a cluster differ. On a single node a topic
//! change or a publish goes straight to the [`Broker`]; in cluster mode it
//! goes through the [`Cluster`] backplane, which every node's broker
//! follows. WebSocket sessions and REST handlers call only these methods.
//!
//! The node also owns what every connection shares: the configuration,
//! the counters, credentials and allowed origins, connection ids, and the
//! [`Shutdown`] that every connection task is tracked by.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper::Request;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Origins};
use crate::broker::{
    Broker, BrokerError, ConnectionId, Published, Receipt, Topic, TopicOptions, TopicSummary,
};
use crate::cluster::{BackplaneState, Cluster, PendingPublish};
use crate::config::Config;
use crate::connections::{Command, Connections, Reach};
use crate::metrics::Metrics;
use crate::presence::{self, Answer, Query};
use crate::rate_limit::Limit;
use crate::shutdown::Shutdown;
use crate::wire::request::Message;

/// The random part of a cluster node's connection ids: 20 bits, shifted
/// above 32 bits of count.
const CLUSTER_ID_PREFIXES: u64 = (1 << 20) - 1;

pub struct Node {
    config: Config,
    broker: Arc<Broker>,
    /// Set in cluster mode: topic changes and publishes go through it.
    cluster: Option<Arc<Cluster>>,
    metrics: Arc<Metrics>,
    auth: Authenticator,
    /// `ALLOWED_ORIGINS`, for REST and the upgrade alike.
    allowed_origins: Origins,
    /// `PUBLISH_RATE_LIMIT` and `PUBLISH_BURST`, when set: every
    /// connection's and every REST credential's bucket is held to it.
    publish_limit: Option<Limit>,
    started: Instant,
    next_connection_id: AtomicU64,
    /// This node's open connections, for the server API.
    connections: Arc<Connections>,
    shutdown: Shutdown,
    /// Set when the node had to stop because it could not start.
    startup_failure: StartupFailure,
    /// Cancelled partway into the drain: publishes still waiting on the
    /// backplane then get an error, in time to be written before the
    /// connections close (see `drain`).
    stop_waiting_on_backplane: CancellationToken,
}

/// The share of `SHUTDOWN_TIMEOUT` after which a publish still waiting on
/// the backplane is answered with an error: the rest is for writing the
/// answers and closing.
const BACKPLANE_WAIT_SHARE: u32 = 2;

/// Why the node stopped on its own at start, if it did: then the process
/// exits non-zero.
#[derive(Clone, Debug, Default)]
pub struct StartupFailure(Arc<OnceLock<String>>);

impl StartupFailure {
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// A publish that was accepted.
pub enum Publication {
    /// Fanned out on this node.
    Done(Published),
    /// Sent to the cluster backplane, in order; resolves once stored.
    Pending(PendingPublish),
}

impl Publication {
    /// The publish's `seq` (the original's for a duplicate), once it is
    /// acknowledged and any subscriber writer it found behind has caught up
    /// (the publisher's pushback).
    pub async fn acknowledged(self) -> Result<Receipt, BrokerError> {
        match self {
            Self::Done(published) => {
                let receipt = published.receipt();
                published.lagging.wait().await;
                Ok(receipt)
            }
            Self::Pending(stored) => stored.await,
        }
    }
}

impl Node {
    /// A node for `config`. In cluster mode it starts connecting to NATS
    /// without waiting for it; a malformed address or bad credentials
    /// settings fail here.
    pub async fn start(config: Config) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let auth = Authenticator::new(&config).map_err(|err| invalid(err.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let broker = Broker::new(
            config.ring_buffer_size as usize,
            config.max_topics as usize,
            metrics.clone(),
        );
        // In cluster mode the backplane deduplicates, across nodes.
        let broker = Arc::new(match config.cluster_nats_url {
            Some(_) => broker,
            None => broker.with_dedup_window(config.dedup_window),
        });
        let connections = Arc::<Connections>::default();
        let cluster = match &config.cluster_nats_url {
            Some(url) => Some(
                Cluster::connect(url, &config, broker.clone(), connections.clone())
                    .await
                    .map_err(|err| invalid(format!("CLUSTER_NATS_URL: {err}")))?,
            ),
            None => None,
        };
        // In a cluster, a server-API command naming a connection id goes
        // to every node: each node's ids start at a random multiple of
        // 2^32, below 2^53 so JavaScript reads them exactly, which makes
        // two nodes' ids meet with odds of one in a million per pair.
        let first_connection_id = match cluster {
            Some(_) => {
                (RandomState::new().hash_one(std::process::id()) & CLUSTER_ID_PREFIXES) << 32 | 1
            }
            None => 1,
        };
        Ok(Self {
            allowed_origins: Origins::new(&config.allowed_origins),
            publish_limit: Limit::from_config(&config),
            config,
            broker,
            cluster,
            metrics,
            auth,
            started: Instant::now(),
            next_connection_id: AtomicU64::new(first_connection_id),
            connections,
            shutdown: Shutdown::default(),
            startup_failure: StartupFailure::default(),
            stop_waiting_on_backplane: CancellationToken::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    pub fn startup_failure(&self) -> &StartupFailure {
        &self.startup_failure
    }

    /// Whether `ALLOWED_ORIGINS` lets this request (REST or the upgrade)
    /// proceed.
    pub fn origin_allowed<B>(&self, request: &Request<B>) -> bool {
        self.allowed_origins.admit(request)
    }

    pub fn publish_limit(&self) -> Option<Limit> {
        self.publish_limit
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A topic, by name; in cluster mode one created on another node a
    /// moment ago is found too.
    pub async fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match &self.cluster {
            // Boxed, like every backplane call a connection makes: a task
            // is as large as the largest future it may await, and these
            // are kilobytes that an idle connection would otherwise carry.
            Some(cluster) => Box::pin(cluster.topic(name)).await,
            None => self.broker.topic(name),
        }
    }

    pub async fn create_topic(&self, name: &str, options: TopicOptions) -> Result<(), BrokerError> {
        match &self.cluster {
            Some(cluster) => cluster.create_topic(name, options).await,
            None => self.broker.create_topic(name, options),
        }
    }

    /// What a topic is created with when its creation names no option.
    pub fn default_topic_options(&self) -> TopicOptions {
        self.broker.default_options()
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        match &self.cluster {
            Some(cluster) => cluster.delete_topic(name).await,
            None => self.broker.delete_topic(name),
        }
    }

    /// Publishes to topic `name`: on a single node at once; in cluster mode
    /// by sending it to the backplane, which every node fans out from.
    pub async fn publish(
        &self,
        name: &str,
        message: &Message<'_>,
    ) -> Result<Publication, BrokerError> {
        match &self.cluster {
            Some(cluster) => {
                self.broker.check_accepting_publishes()?;
                // Boxed for the size of every connection's task (see `topic`).
                let stored = Box::pin(async {
                    let topic = cluster.topic(name).await?;
                    cluster.publish(&topic, message).await
                })
                .await?;
                let stop_waiting = self.stop_waiting_on_backplane.clone();
                Ok(Publication::Pending(
                    async move {
                        tokio::select! {
                            stored = stored => stored,
                            () = stop_waiting.cancelled() => Err(BrokerError::BackplaneUnavailable(
                                "this node shut down before NATS answered; the publish may have been stored: send it again with the same id".into(),
                            )),
                        }
                    }
                    .boxed(),
                ))
            }
            None => self.broker.publish(name, message).map(Publication::Done),
        }
    }

    /// Publishes `messages` to topic `name` in order. On a single node all
    /// or none, under one hold of the topic's log. In cluster mode each is
    /// sent to the backplane in turn, so a backplane failure part way
    /// leaves those before it published: a retry of the batch (same ids)
    /// gets them answered as duplicates.
    pub async fn publish_batch(
        &self,
        name: &str,
        messages: &[Message<'_>],
    ) -> Result<Vec<Publication>, BrokerError> {
        match &self.cluster {
            Some(cluster) => {
                self.broker.check_accepting_publishes()?;
                let topic = cluster.topic(name).await?;
                let mut sent = Vec::with_capacity(messages.len());
                for message in messages {
                    sent.push(Publication::Pending(
                        cluster.publish(&topic, message).await?,
                    ));
                }
                Ok(sent)
            }
            None => Ok(self
                .broker
                .publish_batch(name, messages)?
                .into_iter()
                .map(Publication::Done)
                .collect()),
        }
    }

    /// Who is subscribed to what: this node's rows, or in cluster mode
    /// every node's.
    pub async fn presence(&self, query: &Query) -> Result<Answer, BrokerError> {
        match &self.cluster {
            Some(cluster) => cluster.presence(query).await,
            None => Ok(Answer {
                rows: presence::local_rows(self.broker.clone(), query.clone(), None, usize::MAX)
                    .await,
                missing_nodes: Vec::new(),
            }),
        }
    }

    /// Topics that exist (in cluster mode, those this node mirrors: all).
    pub fn topic_count(&self) -> usize {
        self.broker.topic_count()
    }

    /// Every topic's name, subscribers on this node and events published.
    pub fn summaries(&self) -> Vec<TopicSummary> {
        self.broker.summaries()
    }

    /// In cluster mode, the backplane's state; `None` on a single node.
    pub fn backplane(&self) -> Option<BackplaneState> {
        self.cluster.as_ref().map(|cluster| cluster.state())
    }

    /// In cluster mode, how far this node's follower is: the events it
    /// has applied and those stored after them.
    pub fn follower_progress(&self) -> Option<(u64, u64)> {
        self.cluster
            .as_ref()
            .map(|cluster| (cluster.events_applied(), cluster.follower_lag()))
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// `POST /disconnect` and `POST /unsubscribe`: carries `command` out
    /// on this node, or in cluster mode on every node. An unsubscribe
    /// from an unknown topic is `TopicNotFound`.
    pub async fn command(&self, command: Command) -> Result<Reach, BrokerError> {
        if let Command::Unsubscribe { topic, .. } = &command {
            self.topic(topic).await?;
        }
        match &self.cluster {
            Some(cluster) => cluster.command(&command).await,
            None => Ok(Reach {
                count: command.apply(&self.connections, &self.broker),
                missing_nodes: Vec::new(),
            }),
        }
    }

    /// In cluster mode, starts following the backplane until the drain. A
    /// backplane that cannot be set up as configured shuts the node down,
    /// recording why.
    pub fn follow_backplane(self: &Arc<Self>) {
        if let Some(cluster) = &self.cluster {
            let (node, cluster) = (self.clone(), cluster.clone());
            let follow = async move {
                let draining = node.shutdown.clone();
                let outcome = cluster
                    .follow(async move { draining.draining().await })
                    .await;
                if let Err(err) = outcome {
                    tracing::error!(error = %err, "cannot join the cluster; stopping");
                    let _ = node.startup_failure.0.set(err.to_string());
                    node.shutdown.begin();
                }
            };
            tokio::spawn(self.contain_panic("cluster follower", follow));
        }
    }

    /// Spawns a connection task that the drain waits for, with any panic
    /// in it contained.
    pub fn spawn_connection(
        self: &Arc<Self>,
        what: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.shutdown
            .track(self.contain_panic(what, task).map(drop));
    }

    /// Runs `task`; a panic in it is logged and counted instead of taking
    /// anything else down, and gives `None`. A combinator rather than an
    /// async block, so the task is stored once, not twice, in every
    /// connection's future.
    pub fn contain_panic<F: Future>(
        self: &Arc<Self>,
        what: &'static str,
        task: F,
    ) -> impl Future<Output = Option<F::Output>> {
        let metrics = self.metrics.clone();
        AssertUnwindSafe(task)
            .catch_unwind()
            .map(move |outcome| match outcome {
                Ok(output) => Some(output),
                Err(panic) => {
                    metrics.record_panic();
                    tracing::error!(
                        task = what,
                        panic = panic_message(&*panic),
                        "task panicked; contained"
                    );
                    None
                }
            })
    }

    /// The second half of a shutdown, once the listener has stopped:
    /// publishes stop before connections drain, so every publish that was
    /// acknowledged is in the queues being flushed; the node leaves the
    /// cluster's node list at once, so presence stops expecting its
    /// answers, while the connections flush and close within
    /// `SHUTDOWN_TIMEOUT`. Publishes still waiting on the backplane half
    /// way through get an error, so that even a short `SHUTDOWN_TIMEOUT`
    /// (shorter than the backplane's own deadlines) answers every one.
    pub async fn drain(&self) {
        self.broker.stop_publishes();
        tracing::info!(
            connections = self.metrics.snapshot().connections,
            "shutting down"
        );
        let timeout = self.config.shutdown_timeout;
        // Within `SHUTDOWN_TIMEOUT` too: a NATS that does not answer must
        // not hold the node past it.
        let leave = async {
            if let Some(cluster) = &self.cluster {
                if tokio::time::timeout(timeout, cluster.leave())
                    .await
                    .is_err()
                {
                    tracing::warn!("cannot leave the node list within the shutdown timeout");
                }
            }
        };
        let drained = async {
            let drained = self.shutdown.drain(timeout);
            tokio::pin!(drained);
            tokio::select! {
                drained = &mut drained => drained,
                () = tokio::time::sleep(timeout / BACKPLANE_WAIT_SHARE) => {
                    self.stop_waiting_on_backplane.cancel();
                    drained.await
                }
            }
        };
        if !tokio::join!(leave, drained).1 {
            tracing::warn!(
                connections = self.metrics.snapshot().connections,
                "shutdown timeout reached; dropping remaining connections"
            );
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_contained_and_counted() {
        let config = Config::from_args(Vec::<String>::new()).unwrap();
        let node = Arc::new(Node::start(config).await.unwrap());
        let panicked: Option<()> = node.contain_panic("test", async { panic!("boom") }).await;
        assert_eq!(panicked, None);
        assert_eq!(node.contain_panic("test", async { 7 }).await, Some(7));
        node.spawn_connection("test", async { panic!("{}", String::from("boom")) });
        assert!(node.shutdown.drain(Duration::from_secs(5)).await);
        assert_eq!(node.metrics.snapshot().panics, 2);
    }
}
