//! The state every task shares, in one `Arc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ApiKeys;
use crate::broker::{Broker, ConnectionId};
use crate::config::Config;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Config,
    pub broker: Broker,
    pub metrics: Arc<Metrics>,
    pub api_keys: ApiKeys,
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

impl AppState {
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            broker: Broker::new(config.ring_buffer_size as usize, metrics.clone()),
            api_keys: ApiKeys::new(&config.api_key),
            metrics,
            config,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
        }
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}
