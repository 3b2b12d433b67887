//! The state every task shares, in one `Arc`.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AllowedOrigins, Authenticator};
use crate::broker::{Broker, BrokerError, ConnectionId, Published, Topic};
use crate::cluster::{Cluster, PendingPublish};
use crate::config::Config;
use crate::cors::CorsOrigins;
use crate::metrics::Metrics;
use crate::prometheus::Exposition;
use crate::rate_limit::{Limit, RestLimits};
use crate::wire::request::Message;

pub struct AppState {
    pub config: Config,
    pub broker: Arc<Broker>,
    /// Set in cluster mode: topic changes and publishes go through it.
    pub cluster: Option<Arc<Cluster>>,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    /// `PUBLISH_RATE_LIMIT` for each WebSocket connection's bucket.
    pub publish_limit: Option<Limit>,
    /// The same limit's REST buckets, per credential or peer.
    pub rest_publish_limits: Option<RestLimits>,
    pub allowed_origins: AllowedOrigins,
    pub cors_origins: CorsOrigins,
    /// What `GET /metrics` renders.
    pub exposition: Exposition,
    pub started: Instant,
    /// Cancelled on SIGTERM/SIGINT: stop accepting connections and requests.
    pub shutdown: CancellationToken,
    /// Cancelled once publishes have stopped: connections flush what is
    /// queued and close with 1001.
    pub draining: CancellationToken,
    /// Every connection task, so shutdown can wait for them to flush.
    pub tasks: TaskTracker,
    next_connection_id: AtomicU64,
}

/// A publish that was accepted.
pub enum Publication {
    /// Fanned out on this node.
    Done(Published),
    /// Sent to the cluster backplane, in order; resolves once stored.
    Pending(PendingPublish),
}

impl Publication {
    /// The publish's `seq`, once it is acknowledged and any subscriber
    /// writer it found behind has caught up (the publisher's pushback).
    pub async fn acknowledged(self) -> Result<u64, BrokerError> {
        match self {
            Self::Done(published) => {
                published.lagging.wait().await;
                Ok(published.seq)
            }
            Self::Pending(stored) => stored.await,
        }
    }
}

impl AppState {
    pub fn new(config: Config, cluster: Option<Arc<Cluster>>, auth: Authenticator) -> Self {
        let publish_limit = Limit::from_config(&config);
        let metrics = Arc::new(Metrics::default());
        let broker = Arc::new(Broker::new(
            config.ring_buffer_size as usize,
            config.max_topics as usize,
            metrics.clone(),
        ));
        Self {
            exposition: Exposition::new(
                metrics.clone(),
                broker.clone(),
                cluster.clone(),
                config.metrics_per_topic,
            ),
            broker,
            cluster,
            auth,
            publish_limit,
            rest_publish_limits: publish_limit.map(RestLimits::new),
            allowed_origins: AllowedOrigins::new(&config.allowed_origins),
            cors_origins: CorsOrigins::new(&config.cors_allowed_origins),
            metrics,
            config,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
        }
    }

    /// A topic, by name; in cluster mode one created on another node a
    /// moment ago is found too.
    pub async fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match &self.cluster {
            Some(cluster) => cluster.topic(&self.broker, name).await,
            None => self.broker.topic(name),
        }
    }

    pub async fn create_topic(&self, name: &str) -> Result<(), BrokerError> {
        match &self.cluster {
            Some(cluster) => cluster.create_topic(&self.broker, name).await,
            None => self.broker.create_topic(name),
        }
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
                let topic = cluster.topic(&self.broker, name).await?;
                Ok(Publication::Pending(
                    cluster.publish(&topic, message).await?,
                ))
            }
            None => self.broker.publish(name, message).map(Publication::Done),
        }
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Spawns a connection task that shutdown waits for, with any panic in
    /// it contained.
    pub fn spawn_connection(
        self: &Arc<Self>,
        what: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(self.contain_panic(what, task).map(drop));
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
        let state = self.clone();
        AssertUnwindSafe(task)
            .catch_unwind()
            .map(move |outcome| match outcome {
                Ok(output) => Some(output),
                Err(panic) => {
                    state.metrics.record_panic();
                    tracing::error!(
                        task = what,
                        panic = panic_message(&*panic),
                        "task panicked; contained"
                    );
                    None
                }
            })
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
        let auth = Authenticator::new(&config).unwrap();
        let state = Arc::new(AppState::new(config, None, auth));
        let panicked: Option<()> = state.contain_panic("test", async { panic!("boom") }).await;
        assert_eq!(panicked, None);
        assert_eq!(state.contain_panic("test", async { 7 }).await, Some(7));
        state.spawn_connection("test", async { panic!("{}", String::from("boom")) });
        state.tasks.close();
        state.tasks.wait().await;
        assert_eq!(state.metrics.snapshot().panics, 2);
    }
}
