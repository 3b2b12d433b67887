//! `GET /metrics`: the counters of [`crate::metrics`] (the source of truth,
//! which `/stats` reads too) in the Prometheus text format, encoded by
//! `prometheus-client` at scrape time. Nothing here runs per publish or per
//! delivery: a scrape reads the atomics once.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cluster::BackplaneState;
use crate::metrics::{
    Breakdown, HistogramSnapshot, SlowConsumerCause, Snapshot, Transport, UpgradeRefusal,
};
use crate::node::Node;
use crate::wire::error::ErrorCode;

/// Every metric name starts with this, then `_`.
const PREFIX: &str = "ringcast";
/// `Content-Type` of a scrape (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const NANOS_PER_SECOND: f64 = 1e9;

/// The registry `/metrics` encodes: one collector reading the node.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(node: Arc<Node>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(Sources {
            node,
            started: SystemTime::now(),
        }));
        Self { registry }
    }

    /// One scrape, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// What a scrape reads.
struct Sources {
    node: Arc<Node>,
    started: SystemTime,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// Everything one scrape reports, read once.
struct Scrape {
    totals: Snapshot,
    breakdown: Breakdown,
    topics: u64,
    started: u64,
    /// Cluster mode: the backplane's state, and the follower's applied
    /// events and lag.
    cluster: Option<(BackplaneState, u64, u64)>,
}

/// How a family's value is read from a scrape.
enum Reading {
    Counter(fn(&Scrape) -> u64),
    Gauge(fn(&Scrape) -> u64),
    /// A series per value of `label`.
    Labelled {
        kind: MetricType,
        label: &'static str,
        series: fn(&Scrape) -> Vec<(&'static str, u64)>,
    },
    /// The snapshot holds integers; `scale` turns them into the unit the
    /// name says (nanoseconds into seconds).
    Histogram {
        scale: f64,
        snapshot: fn(&Scrape) -> &HistogramSnapshot,
    },
}

/// One metric family: its name (after the prefix), help and reading.
struct Family {
    name: &'static str,
    help: &'static str,
    reading: Reading,
}

const fn family(name: &'static str, help: &'static str, reading: Reading) -> Family {
    Family {
        name,
        help,
        reading,
    }
}

use Reading::{Counter, Gauge, Histogram, Labelled};

/// Every family a scrape reports, in order.
const FAMILIES: &[Family] = &[
    family("connections", "Open WebSocket connections.", Gauge(|s| s.totals.connections)),
    family(
        "subscriptions",
        "Open subscriptions, over all topics and connections.",
        Gauge(|s| s.totals.subscriptions),
    ),
    family("topics", "Topics that exist.", Gauge(|s| s.topics)),
    family(
        "http_connections",
        "Open HTTP connections: REST clients, and upgrades in progress.",
        Gauge(|s| s.totals.http_connections),
    ),
    family(
        "start_time_seconds",
        "When the process started, in seconds since the Unix epoch.",
        Gauge(|s| s.started),
    ),
    family(
        "build_info",
        "The running version (always 1).",
        Labelled {
            kind: MetricType::Gauge,
            label: "version",
            series: |_| vec![(env!("CARGO_PKG_VERSION"), 1)],
        },
    ),
    family(
        "events_published",
        "Events published (fanned out on this node).",
        Counter(|s| s.totals.published),
    ),
    family(
        "events_delivered",
        "Events queued to subscribers: one per subscriber per event.",
        Counter(|s| s.totals.delivered),
    ),
    family(
        "events_dropped",
        "Events dropped for subscribers at a bound under drop_oldest.",
        Counter(|s| s.totals.dropped),
    ),
    family(
        "slow_consumer_disconnects",
        "Subscribers cut as slow consumers, for any cause.",
        Counter(|s| s.totals.slow_consumer_disconnects),
    ),
    family(
        "slow_consumer_disconnects_by_cause",
        "Subscribers cut as slow consumers, by cause: queue_events (SUBSCRIBER_QUEUE_SIZE), queue_bytes (SUBSCRIBER_QUEUE_BYTES), write_timeout (WRITE_TIMEOUT), backplane_gap (cluster: events lost before this node read them).",
        Labelled {
            kind: MetricType::Counter,
            label: "cause",
            series: |s| {
                let labels = SlowConsumerCause::ALL.map(SlowConsumerCause::label);
                labels.into_iter().zip(s.breakdown.slow_consumer_causes).collect()
            },
        },
    ),
    family(
        "publish_errors",
        "Publishes refused (REST and WebSocket), by error code.",
        Labelled {
            kind: MetricType::Counter,
            label: "code",
            series: |s| {
                let codes = ErrorCode::ALL.map(ErrorCode::as_str);
                codes.into_iter().zip(s.breakdown.publish_errors).collect()
            },
        },
    ),
    family(
        "publishes_deduplicated",
        "Publishes answered with the original's seq because their message id was published to the topic within DEDUP_WINDOW (on the node that took the publish).",
        Counter(|s| s.breakdown.duplicates),
    ),
    family(
        "publisher_pauses",
        "Times a publisher waited for subscriber writers that were behind.",
        Counter(|s| s.totals.publisher_pauses),
    ),
    family(
        "connections_opened",
        "WebSocket connections accepted.",
        Counter(|s| s.totals.connections_total),
    ),
    family(
        "websocket_upgrades_refused",
        "WebSocket upgrades refused before upgrading, by reason.",
        Labelled {
            kind: MetricType::Counter,
            label: "reason",
            series: |s| {
                let reasons = UpgradeRefusal::ALL.map(UpgradeRefusal::label);
                reasons.into_iter().zip(s.breakdown.upgrades_refused).collect()
            },
        },
    ),
    family(
        "http_connections_refused",
        "HTTP connections refused because MAX_HTTP_CONNECTIONS were open.",
        Counter(|s| s.breakdown.http_connections_refused),
    ),
    family(
        "auth_failures",
        "REST requests and upgrades refused for a missing or wrong credential.",
        Counter(|s| s.totals.auth_failures),
    ),
    family(
        "publishes_rate_limited",
        "Publishes refused by PUBLISH_RATE_LIMIT (RATE_LIMITED), by transport.",
        Labelled {
            kind: MetricType::Counter,
            label: "transport",
            series: |s| by_transport(s.breakdown.rate_limited),
        },
    ),
    family(
        "permission_denials",
        "Subscribes, publishes and requests a valid access token did not permit, by transport.",
        Labelled {
            kind: MetricType::Counter,
            label: "transport",
            series: |s| by_transport(s.breakdown.permission_denials),
        },
    ),
    family(
        "token_expiries",
        "WebSocket connections closed because their access token expired.",
        Counter(|s| s.breakdown.token_expiries),
    ),
    family(
        "panics",
        "Connection tasks that panicked (contained).",
        Counter(|s| s.totals.panics),
    ),
    family(
        "events_deflated",
        "Events deflated for permessage-deflate subscribers (each at most once, shared by all of them).",
        Counter(|s| s.breakdown.events_deflated),
    ),
    family(
        "deflate_in_bytes",
        "JSON bytes of the events deflated.",
        Counter(|s| s.breakdown.deflate_in_bytes),
    ),
    family(
        "deflate_out_bytes",
        "Frame bytes those events went out as to compressed subscribers (plain when deflating did not shrink them).",
        Counter(|s| s.breakdown.deflate_out_bytes),
    ),
    family(
        "messages_inflated",
        "Compressed client messages inflated.",
        Counter(|s| s.breakdown.messages_inflated),
    ),
    family(
        "frames_written",
        "WebSocket frames written to sockets.",
        Counter(|s| s.breakdown.frames_per_write.sum),
    ),
    family(
        "bytes_written",
        "Bytes written to WebSocket sockets.",
        Counter(|s| s.breakdown.bytes_written),
    ),
    family(
        "frames_per_write",
        "Frames finished per vectored write (how well writes batch; at most 64).",
        Histogram {
            scale: 1.0,
            snapshot: |s| &s.breakdown.frames_per_write,
        },
    ),
    family(
        "subscriber_queue_depth",
        "A subscriber's pending events each time its writer takes a batch.",
        Histogram {
            scale: 1.0,
            snapshot: |s| &s.breakdown.queue_depth,
        },
    ),
    family(
        "fan_out_duration_seconds",
        "Time one publish took to number, encode and keep its event and queue it for every subscriber.",
        Histogram {
            scale: NANOS_PER_SECOND,
            snapshot: |s| &s.breakdown.fan_out_nanos,
        },
    ),
];

/// The families a cluster node adds.
const CLUSTER_FAMILIES: &[Family] = &[
    family(
        "cluster_backplane_state",
        "Cluster mode: the backplane's state (1 for the current one).",
        Labelled {
            kind: MetricType::Gauge,
            label: "state",
            series: |s| {
                let current = s.cluster.map(|(state, ..)| state);
                BACKPLANE_STATES
                    .map(|(state, label)| (label, u64::from(current == Some(state))))
                    .to_vec()
            },
        },
    ),
    family(
        "cluster_follower_lag_events",
        "Cluster mode: events stored in the stream that this node had not applied, as of its last one.",
        Gauge(|s| s.cluster.map_or(0, |(_, _, lag)| lag)),
    ),
    family(
        "cluster_events_applied",
        "Cluster mode: the last stream sequence this node fanned out.",
        Gauge(|s| s.cluster.map_or(0, |(_, applied, _)| applied)),
    ),
    family(
        "cluster_events_missed",
        "Cluster mode: events the stream discarded before this node read them.",
        Counter(|s| s.totals.backplane_events_missed),
    ),
];

const BACKPLANE_STATES: [(BackplaneState, &str); 3] = [
    (BackplaneState::Starting, "starting"),
    (BackplaneState::Connected, "connected"),
    (BackplaneState::Disconnected, "disconnected"),
];

fn by_transport(counts: [u64; Transport::ALL.len()]) -> Vec<(&'static str, u64)> {
    Transport::ALL
        .map(Transport::label)
        .into_iter()
        .zip(counts)
        .collect()
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let out = &mut encoder;
        let node = &self.node;
        let metrics = node.metrics();
        let scrape = Scrape {
            totals: metrics.snapshot(),
            breakdown: metrics.breakdown(),
            topics: node.topic_count() as u64,
            started: unix_seconds(self.started),
            cluster: node
                .backplane()
                .zip(node.follower_progress())
                .map(|(state, (applied, lag))| (state, applied, lag)),
        };
        let cluster_families = if scrape.cluster.is_some() {
            CLUSTER_FAMILIES
        } else {
            &[]
        };
        for family in FAMILIES.iter().chain(cluster_families) {
            encode_family(out, family, &scrape)?;
        }
        // `METRICS_PER_TOPIC`: a series per topic (topics can number 100k).
        if node.config().metrics_per_topic {
            let topics = node.summaries();
            labelled(
                out,
                "topic_subscribers",
                "Subscribers per topic (METRICS_PER_TOPIC).",
                MetricType::Gauge,
                "topic",
                topics
                    .iter()
                    .map(|topic| (&*topic.name, topic.subscribers as u64)),
            )?;
            labelled(
                out,
                "topic_events_published",
                "Events published per topic (METRICS_PER_TOPIC).",
                MetricType::Counter,
                "topic",
                topics.iter().map(|topic| (&*topic.name, topic.messages)),
            )?;
        }
        Ok(())
    }
}

fn encode_family(out: &mut DescriptorEncoder, family: &Family, scrape: &Scrape) -> fmt::Result {
    let Family { name, help, .. } = *family;
    match &family.reading {
        Counter(read) => counter(out, name, help, read(scrape)),
        Gauge(read) => gauge(out, name, help, read(scrape)),
        Labelled {
            kind,
            label,
            series,
        } => labelled(out, name, help, *kind, label, series(scrape)),
        Histogram { scale, snapshot } => histogram(out, name, help, *scale, snapshot(scrape)),
    }
}

fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(out.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let gauge = ConstGauge::new(as_gauge(value));
    gauge.encode(out.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// One metric with a series per value of `label`.
fn labelled<'a>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, kind)?;
    for (value, count) in series {
        let labels = [(label, value)];
        let metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(count).encode(metric)?,
            _ => ConstGauge::new(as_gauge(count)).encode(metric)?,
        }
    }
    Ok(())
}

/// `snapshot` holds integers; `scale` turns them into the unit the name
/// says (nanoseconds into seconds).
fn histogram(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    scale: f64,
    snapshot: &HistogramSnapshot,
) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = snapshot
        .buckets
        .iter()
        .map(|(bound, count)| (*bound as f64 / scale, *count))
        .collect();
    out.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(snapshot.sum as f64 / scale, snapshot.count, &buckets, None)
}

/// Gauges are signed; no count here comes near `i64::MAX`.
fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
