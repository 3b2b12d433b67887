//! Process-wide counters, reported by `GET /health`, `GET /stats` and
//! `GET /metrics` (rendered by `http::prometheus`).
//!
//! The fan-out adds its counts once per publish, not once per delivery, and
//! a connection's writer once per `writev`; each hot counter sits on its own
//! cache line so cores do not fight over it. Histograms are atomic bucket
//! arrays: an observation is one relaxed add to a bucket and one to the
//! sum, with no lock (the `prometheus-client` histogram takes a mutex).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::wire::error::ErrorCode;

pub struct Metrics {
    connections_open: CachePadded<AtomicU64>,
    connections_total: AtomicU64,
    http_connections_open: AtomicU64,
    subscriptions: CachePadded<AtomicU64>,
    published: CachePadded<AtomicU64>,
    delivered: CachePadded<AtomicU64>,
    dropped: AtomicU64,
    slow_consumer_disconnects: AtomicU64,
    /// Slow-consumer cuts by cause, indexed by `SlowConsumerCause`.
    slow_consumer_causes: [AtomicU64; SlowConsumerCause::ALL.len()],
    write_timeouts: AtomicU64,
    publisher_pauses: AtomicU64,
    /// Publishes answered as duplicates within `DEDUP_WINDOW`.
    duplicates: AtomicU64,
    /// Connections refused for a full limit, indexed by `ConnectionKind`.
    connections_refused: [AtomicU64; 2],
    /// Upgrades refused, indexed by `UpgradeRefusal`.
    upgrades_refused: [AtomicU64; UpgradeRefusal::ALL.len()],
    /// Publishes refused, indexed by `ErrorCode`.
    publish_errors: [AtomicU64; ErrorCode::ALL.len()],
    auth_failures: AtomicU64,
    /// Publishes refused by `PUBLISH_RATE_LIMIT`, indexed by `Transport`.
    rate_limited: [AtomicU64; Transport::ALL.len()],
    /// Requests a valid token did not permit, indexed by `Transport`.
    permission_denials: [AtomicU64; Transport::ALL.len()],
    /// Connections closed because their token expired.
    token_expiries: AtomicU64,
    panics: AtomicU64,
    backplane_events_missed: AtomicU64,
    events_deflated: AtomicU64,
    deflate_in_bytes: AtomicU64,
    deflate_out_bytes: AtomicU64,
    messages_inflated: AtomicU64,
    bytes_written: CachePadded<AtomicU64>,
    /// Frames finished per `writev`; its sum is every frame written.
    frames_per_write: Histogram<{ FRAMES_PER_WRITE_BOUNDS.len() }>,
    /// A subscriber's pending events each time its writer takes a batch.
    queue_depth: Histogram<{ QUEUE_DEPTH_BOUNDS.len() }>,
    /// Nanoseconds one publish took under its topic's lock: numbered,
    /// checked against the dedup window, encoded, kept and pushed into
    /// every outbox (one clock reading serves all of it).
    fan_out_nanos: Histogram<{ FAN_OUT_NANOS_BOUNDS.len() }>,
}

/// Upper bounds of the frames-per-write buckets; a write carries at most
/// `MAX_FRAMES_PER_WRITE` (256).
pub const FRAMES_PER_WRITE_BOUNDS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// Upper bounds of the queue-depth buckets, in events (the default bound is 1024).
pub const QUEUE_DEPTH_BOUNDS: [u64; 10] = [0, 1, 4, 16, 64, 128, 256, 512, 1024, 4096];
/// Upper bounds of the fan-out time buckets, in nanoseconds (1 µs to 100 ms).
pub const FAN_OUT_NANOS_BOUNDS: [u64; 11] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// Where a request came in, for the limits' and permissions' counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Rest,
}

impl Transport {
    pub const ALL: [Self; 2] = [Self::WebSocket, Self::Rest];

    pub fn label(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Rest => "rest",
        }
    }
}

/// Why a subscriber was cut as a slow consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumerCause {
    /// Its pending events reached `SUBSCRIBER_QUEUE_SIZE`.
    QueueEvents,
    /// Its pending bytes reached `SUBSCRIBER_QUEUE_BYTES`.
    QueueBytes,
    /// Its socket took no byte for `WRITE_TIMEOUT`.
    WriteTimeout,
    /// Cluster mode: its node fell behind the stream and events were lost.
    BackplaneGap,
}

impl SlowConsumerCause {
    pub const ALL: [Self; 4] = [
        Self::QueueEvents,
        Self::QueueBytes,
        Self::WriteTimeout,
        Self::BackplaneGap,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueueEvents => "queue_events",
            Self::QueueBytes => "queue_bytes",
            Self::WriteTimeout => "write_timeout",
            Self::BackplaneGap => "backplane_gap",
        }
    }
}

/// Why a WebSocket upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeRefusal {
    Unauthorized,
    ForbiddenOrigin,
    ShuttingDown,
    /// `GET /ws` without the upgrade headers (426).
    NotAnUpgrade,
    /// `MAX_CONNECTIONS` were open.
    TooManyConnections,
    /// Upgrade headers the handshake could not accept.
    BadHandshake,
}

impl UpgradeRefusal {
    pub const ALL: [Self; 6] = [
        Self::Unauthorized,
        Self::ForbiddenOrigin,
        Self::ShuttingDown,
        Self::NotAnUpgrade,
        Self::TooManyConnections,
        Self::BadHandshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::ShuttingDown => "shutting_down",
            Self::NotAnUpgrade => "not_an_upgrade",
            Self::TooManyConnections => "too_many_connections",
            Self::BadHandshake => "bad_handshake",
        }
    }
}

/// What one publish's fan-out did, counted once for the whole fan-out.
#[derive(Clone, Copy, Debug, Default)]
pub struct FanOut {
    pub delivered: u64,
    pub dropped: u64,
    /// Subscribers cut for reaching `SUBSCRIBER_QUEUE_SIZE`.
    pub overflowed_events: u64,
    /// Subscribers cut for reaching `SUBSCRIBER_QUEUE_BYTES`.
    pub overflowed_bytes: u64,
    pub elapsed: Duration,
}

/// A histogram over `u64` observations with fixed upper bounds: one atomic
/// per bucket (not cumulative; summed when read), one more past the last
/// bound, and the sum.
pub struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    sum: AtomicU64,
}

/// A histogram read at one moment: each bucket's upper bound and count
/// (not cumulative), the count of every observation (those past the last
/// bound included) and their sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    pub sum: u64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: &'static [u64; N]) -> Self {
        Self {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .map_or(&self.overflow, |index| &self.buckets[index]);
        bucket.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, bucket)| (*bound, load(bucket)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum::<u64>() + load(&self.overflow);
        HistogramSnapshot {
            buckets,
            count,
            sum: load(&self.sum),
        }
    }
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

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_open: CachePadded::default(),
            connections_total: AtomicU64::default(),
            http_connections_open: AtomicU64::default(),
            subscriptions: CachePadded::default(),
            published: CachePadded::default(),
            delivered: CachePadded::default(),
            dropped: AtomicU64::default(),
            slow_consumer_disconnects: AtomicU64::default(),
            slow_consumer_causes: Default::default(),
            write_timeouts: AtomicU64::default(),
            publisher_pauses: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            connections_refused: Default::default(),
            upgrades_refused: Default::default(),
            publish_errors: Default::default(),
            auth_failures: AtomicU64::default(),
            rate_limited: Default::default(),
            permission_denials: Default::default(),
            token_expiries: AtomicU64::default(),
            panics: AtomicU64::default(),
            backplane_events_missed: AtomicU64::default(),
            events_deflated: AtomicU64::default(),
            deflate_in_bytes: AtomicU64::default(),
            deflate_out_bytes: AtomicU64::default(),
            messages_inflated: AtomicU64::default(),
            bytes_written: CachePadded::default(),
            frames_per_write: Histogram::new(&FRAMES_PER_WRITE_BOUNDS),
            queue_depth: Histogram::new(&QUEUE_DEPTH_BOUNDS),
            fan_out_nanos: Histogram::new(&FAN_OUT_NANOS_BOUNDS),
        }
    }
}

/// The counts `/metrics` adds to the snapshot: breakdowns and histograms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breakdown {
    /// Per `SlowConsumerCause::ALL`.
    pub slow_consumer_causes: [u64; SlowConsumerCause::ALL.len()],
    /// Per `UpgradeRefusal::ALL`.
    pub upgrades_refused: [u64; UpgradeRefusal::ALL.len()],
    /// Per `ErrorCode::ALL`.
    pub publish_errors: [u64; ErrorCode::ALL.len()],
    /// HTTP connections refused because `MAX_HTTP_CONNECTIONS` were open.
    pub http_connections_refused: u64,
    /// Per `Transport::ALL`.
    pub rate_limited: [u64; Transport::ALL.len()],
    /// Per `Transport::ALL`.
    pub permission_denials: [u64; Transport::ALL.len()],
    pub token_expiries: u64,
    /// Publishes answered as duplicates within `DEDUP_WINDOW`.
    pub duplicates: u64,
    /// `permessage-deflate`: events deflated (each at most once), the JSON
    /// bytes they had and the frame bytes their compressed subscribers get.
    pub events_deflated: u64,
    pub deflate_in_bytes: u64,
    pub deflate_out_bytes: u64,
    /// Compressed client messages inflated.
    pub messages_inflated: u64,
    pub bytes_written: u64,
    pub frames_per_write: HistogramSnapshot,
    pub queue_depth: HistogramSnapshot,
    pub fan_out_nanos: HistogramSnapshot,
}

impl Metrics {
    /// Counts one publish and what its fan-out did.
    pub fn record_publish(&self, fan_out: &FanOut) {
        self.published.fetch_add(1, Ordering::Relaxed);
        add_if_any(&self.delivered, fan_out.delivered);
        add_if_any(&self.dropped, fan_out.dropped);
        for (cause, count) in [
            (SlowConsumerCause::QueueEvents, fan_out.overflowed_events),
            (SlowConsumerCause::QueueBytes, fan_out.overflowed_bytes),
        ] {
            self.record_slow_consumers(cause, count);
        }
        let nanos = u64::try_from(fan_out.elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.fan_out_nanos.observe(nanos);
    }

    fn record_slow_consumers(&self, cause: SlowConsumerCause, count: u64) {
        if count > 0 {
            self.slow_consumer_disconnects
                .fetch_add(count, Ordering::Relaxed);
            self.slow_consumer_causes[cause as usize].fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Counts one `writev`: the frames it finished and the bytes it wrote.
    pub fn record_write(&self, frames: usize, bytes: usize) {
        self.frames_per_write.observe(frames as u64);
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// One event deflated: `json` bytes in, a frame of `sent` bytes out
    /// (its plain frame when deflating did not shrink it).
    pub fn record_deflate(&self, json: usize, sent: usize) {
        self.events_deflated.fetch_add(1, Ordering::Relaxed);
        self.deflate_in_bytes
            .fetch_add(json as u64, Ordering::Relaxed);
        self.deflate_out_bytes
            .fetch_add(sent as u64, Ordering::Relaxed);
    }

    /// One compressed client message inflated.
    pub fn record_inflate(&self) {
        self.messages_inflated.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscriber's pending events as its writer takes the next batch.
    pub fn record_queue_depth(&self, pending_events: usize) {
        self.queue_depth.observe(pending_events as u64);
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
            self.connections_refused[kind as usize].fetch_add(1, Ordering::Relaxed);
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

    /// A publish refused by `PUBLISH_RATE_LIMIT`.
    pub fn record_rate_limited(&self, transport: Transport) {
        self.rate_limited[transport as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused because the token does not permit it.
    pub fn record_permission_denied(&self, transport: Transport) {
        self.permission_denials[transport as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed because its token expired.
    pub fn record_token_expired(&self) {
        self.token_expiries.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket upgrade refused before upgrading.
    pub fn record_upgrade_refused(&self, why: UpgradeRefusal) {
        self.upgrades_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A publish refused with the error `code` (REST or WebSocket).
    pub fn record_publish_error(&self, code: ErrorCode) {
        self.publish_errors[code as usize].fetch_add(1, Ordering::Relaxed);
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
        self.record_slow_consumers(SlowConsumerCause::WriteTimeout, 1);
    }

    /// A publish answered as a duplicate of one within `DEDUP_WINDOW`.
    pub fn record_duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
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
        self.record_slow_consumers(SlowConsumerCause::BackplaneGap, disconnected);
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
            connections_refused: self.connections_refused.iter().map(load).sum(),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            backplane_events_missed: self.backplane_events_missed.load(Ordering::Relaxed),
        }
    }

    pub fn breakdown(&self) -> Breakdown {
        Breakdown {
            slow_consumer_causes: self.slow_consumer_causes.each_ref().map(load),
            upgrades_refused: self.upgrades_refused.each_ref().map(load),
            publish_errors: self.publish_errors.each_ref().map(load),
            http_connections_refused: load(
                &self.connections_refused[ConnectionKind::Http as usize],
            ),
            rate_limited: self.rate_limited.each_ref().map(load),
            permission_denials: self.permission_denials.each_ref().map(load),
            token_expiries: load(&self.token_expiries),
            duplicates: load(&self.duplicates),
            events_deflated: load(&self.events_deflated),
            deflate_in_bytes: load(&self.deflate_in_bytes),
            deflate_out_bytes: load(&self.deflate_out_bytes),
            messages_inflated: load(&self.messages_inflated),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            frames_per_write: self.frames_per_write.snapshot(),
            queue_depth: self.queue_depth.snapshot(),
            fan_out_nanos: self.fan_out_nanos.snapshot(),
        }
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Skips the shared cache line when there is nothing to add.
fn add_if_any(counter: &AtomicU64, count: u64) {
    if count > 0 {
        counter.fetch_add(count, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug)]
enum ConnectionKind {
    WebSocket = 0,
    Http = 1,
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
        metrics.record_publish(&FanOut {
            delivered: 3,
            dropped: 1,
            overflowed_events: 1,
            overflowed_bytes: 1,
            elapsed: Duration::from_micros(3),
        });
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

    #[test]
    fn breaks_counts_down_by_cause_and_fills_histograms() {
        let metrics = Arc::new(Metrics::default());
        metrics.record_publish(&FanOut {
            overflowed_bytes: 2,
            elapsed: Duration::from_millis(2),
            ..FanOut::default()
        });
        metrics.record_write_timeout();
        metrics.record_missed_events(1, 1);
        metrics.record_upgrade_refused(UpgradeRefusal::ForbiddenOrigin);
        metrics.record_publish_error(ErrorCode::TopicNotFound);
        metrics.record_publish_error(ErrorCode::ShuttingDown);
        let _http = metrics.try_open_http_connection(1).unwrap();
        assert!(metrics.try_open_http_connection(1).is_none());
        for (frames, bytes) in [(1, 100), (3, 300), (64, 6400), (0, 10)] {
            metrics.record_write(frames, bytes);
        }
        metrics.record_queue_depth(5000);
        let breakdown = metrics.breakdown();
        assert_eq!(breakdown.slow_consumer_causes, [0, 2, 1, 1]);
        assert_eq!(metrics.snapshot().slow_consumer_disconnects, 4);
        assert_eq!(breakdown.upgrades_refused, [0, 1, 0, 0, 0, 0]);
        for code in ErrorCode::ALL {
            let expected = matches!(code, ErrorCode::TopicNotFound | ErrorCode::ShuttingDown);
            assert_eq!(breakdown.publish_errors[code as usize], u64::from(expected));
        }
        assert_eq!(breakdown.http_connections_refused, 1);
        assert_eq!(breakdown.bytes_written, 6810);
        let writes = &breakdown.frames_per_write;
        assert_eq!((writes.count, writes.sum), (4, 68));
        assert_eq!(writes.buckets[0], (1, 2), "0 and 1 frame are at most 1");
        assert_eq!(writes.buckets[2], (4, 1));
        assert_eq!(writes.buckets[6], (64, 1));
        assert_eq!(*writes.buckets.last().unwrap(), (256, 0));
        let depth = &breakdown.queue_depth;
        assert_eq!(depth.count, 1);
        assert!(
            depth.buckets.iter().all(|(_, count)| *count == 0),
            "past the last bound"
        );
        let fan_out = &breakdown.fan_out_nanos;
        assert_eq!((fan_out.count, fan_out.sum), (1, 2_000_000));
        assert_eq!(fan_out.buckets[7], (5_000_000, 1));
    }
}
