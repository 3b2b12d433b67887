//! Process-wide counters, reported by `GET /health` and `GET /stats`.
//!
//! The fan-out adds its counts once per publish, not once per delivery, and
//! each hot counter sits on its own cache line so cores do not fight over it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use serde::Serialize;

#[derive(Default)]
pub struct Metrics {
    connections_open: CachePadded<AtomicU64>,
    connections_total: AtomicU64,
    http_connections_open: AtomicU64,
    subscriptions: CachePadded<AtomicU64>,
    published: CachePadded<AtomicU64>,
    delivered: CachePadded<AtomicU64>,
    dropped: AtomicU64,
    slow_consumer_disconnects: AtomicU64,
    write_timeouts: AtomicU64,
    publisher_pauses: AtomicU64,
    connections_refused: AtomicU64,
    auth_failures: AtomicU64,
    panics: AtomicU64,
    backplane_events_missed: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub connections: u64,
    pub connections_total: u64,
    /// HTTP connections open now: REST clients, and upgrades in progress.
    pub http_connections: u64,
    /// Subscriptions open now, over all topics and connections.
    pub subscriptions: u64,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Subscribers cut, for either bound or for `WRITE_TIMEOUT`.
    pub slow_consumer_disconnects: u64,
    /// Of those, cut because their socket took no byte for `WRITE_TIMEOUT`.
    pub write_timeouts: u64,
    /// Times a publishing connection waited for subscribers' writers that
    /// were behind (the server pushing back instead of cutting them).
    pub publisher_pauses: u64,
    /// Upgrades refused because `MAX_CONNECTIONS` were open, and HTTP
    /// connections refused because `MAX_HTTP_CONNECTIONS` were.
    pub connections_refused: u64,
    /// REST requests and upgrades refused for a missing or wrong API key.
    pub auth_failures: u64,
    /// Connection tasks that panicked (and were contained).
    pub panics: u64,
    /// Cluster mode: events the stream discarded before this node read them.
    pub backplane_events_missed: u64,
}

impl Metrics {
    /// Counts one publish and what its fan-out did.
    pub fn record_publish(&self, delivered: u64, dropped: u64, overflowed: u64) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if delivered > 0 {
            self.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if overflowed > 0 {
            self.slow_consumer_disconnects
                .fetch_add(overflowed, Ordering::Relaxed);
        }
    }

    /// Takes one of `max` WebSocket connection slots, counted as open
    /// until the guard is dropped; `None` when all are taken.
    pub fn try_open_connection(self: &Arc<Self>, max: u64) -> Option<ConnectionGuard> {
        let guard = self.try_take_slot(ConnectionKind::WebSocket, max)?;
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Some(guard)
    }

    /// Takes one of `max` slots for HTTP connections (REST clients, and
    /// upgrades until they are done); `None` when all are taken.
    pub fn try_open_http_connection(self: &Arc<Self>, max: u64) -> Option<ConnectionGuard> {
        self.try_take_slot(ConnectionKind::Http, max)
    }

    fn try_take_slot(self: &Arc<Self>, kind: ConnectionKind, max: u64) -> Option<ConnectionGuard> {
        let open = self.open_gauge(kind);
        if open.fetch_add(1, Ordering::AcqRel) >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            self.connections_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionGuard {
            metrics: self.clone(),
            kind,
        })
    }

    fn open_gauge(&self, kind: ConnectionKind) -> &AtomicU64 {
        match kind {
            ConnectionKind::WebSocket => &self.connections_open,
            ConnectionKind::Http => &self.http_connections_open,
        }
    }

    /// A request or upgrade refused for a missing or wrong credential.
    pub fn record_auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn subscription_started(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn subscriptions_ended(&self, count: usize) {
        if count > 0 {
            self.subscriptions
                .fetch_sub(count as u64, Ordering::Relaxed);
        }
    }

    /// A connection cut because its socket took no byte for `WRITE_TIMEOUT`.
    pub fn record_write_timeout(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
        self.slow_consumer_disconnects
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A publisher waited for lagging subscriber writers.
    pub fn record_publisher_pause(&self) {
        self.publisher_pauses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Cluster mode: `missed` events never reached this node, and
    /// `disconnected` subscribers were closed as slow consumers for it.
    pub fn record_missed_events(&self, missed: u64, disconnected: u64) {
        self.backplane_events_missed
            .fetch_add(missed, Ordering::Relaxed);
        self.slow_consumer_disconnects
            .fetch_add(disconnected, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections: self.connections_open.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            http_connections: self.http_connections_open.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            slow_consumer_disconnects: self.slow_consumer_disconnects.load(Ordering::Relaxed),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
            publisher_pauses: self.publisher_pauses.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            backplane_events_missed: self.backplane_events_missed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum ConnectionKind {
    WebSocket,
    Http,
}

/// An open connection's slot, given back when dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    kind: ConnectionKind,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics
            .open_gauge(self.kind)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_publishes_and_connections() {
        let metrics = Arc::new(Metrics::default());
        metrics.record_publish(3, 1, 2);
        let guard = metrics.try_open_connection(1).unwrap();
        assert_eq!(metrics.snapshot().connections, 1);
        assert!(
            metrics.try_open_connection(1).is_none(),
            "the one slot is taken"
        );
        let http = metrics.try_open_http_connection(1).unwrap();
        assert_eq!(metrics.snapshot().http_connections, 1);
        assert!(metrics.try_open_http_connection(1).is_none());
        drop((guard, http));
        metrics.subscription_started();
        metrics.subscription_started();
        metrics.subscriptions_ended(1);
        metrics.record_auth_failure();
        metrics.record_panic();
        metrics.record_missed_events(5, 1);
        metrics.record_write_timeout();
        metrics.record_publisher_pause();
        let snapshot = metrics.snapshot();
        assert_eq!(
            snapshot,
            Snapshot {
                connections: 0,
                connections_total: 1,
                http_connections: 0,
                subscriptions: 1,
                published: 1,
                delivered: 3,
                dropped: 1,
                slow_consumer_disconnects: 4,
                write_timeouts: 1,
                publisher_pauses: 1,
                connections_refused: 2,
                auth_failures: 1,
                panics: 1,
                backplane_events_missed: 5,
            }
        );
        assert!(
            metrics.try_open_connection(1).is_some(),
            "the slot is free again"
        );
    }
}
