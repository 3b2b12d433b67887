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

use crate::broker::Broker;
use crate::cluster::{BackplaneState, Cluster};
use crate::metrics::{
    HistogramSnapshot, Metrics, SlowConsumerCause, Transport, UpgradeRefusal, PUBLISH_ERROR_CODES,
};

/// Every metric name starts with this, then `_`.
const PREFIX: &str = "ringcast";
/// `Content-Type` of a scrape (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const NANOS_PER_SECOND: f64 = 1e9;

/// The registry `/metrics` encodes: one collector reading the process's
/// counters, the broker and, in cluster mode, the backplane.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(
        metrics: Arc<Metrics>,
        broker: Arc<Broker>,
        cluster: Option<Arc<Cluster>>,
        per_topic: bool,
    ) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(Sources {
            metrics,
            broker,
            cluster,
            per_topic,
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
    metrics: Arc<Metrics>,
    broker: Arc<Broker>,
    cluster: Option<Arc<Cluster>>,
    /// `METRICS_PER_TOPIC`: a series per topic (topics can number 100k).
    per_topic: bool,
    started: SystemTime,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("per_topic", &self.per_topic)
            .field("cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let out = &mut encoder;
        let totals = self.metrics.snapshot();
        let breakdown = self.metrics.breakdown();

        gauge(
            out,
            "connections",
            "Open WebSocket connections.",
            totals.connections,
        )?;
        gauge(
            out,
            "subscriptions",
            "Open subscriptions, over all topics and connections.",
            totals.subscriptions,
        )?;
        gauge(
            out,
            "topics",
            "Topics that exist.",
            self.broker.topic_count() as u64,
        )?;
        gauge(
            out,
            "http_connections",
            "Open HTTP connections: REST clients, and upgrades in progress.",
            totals.http_connections,
        )?;
        gauge(
            out,
            "start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
            unix_seconds(self.started),
        )?;
        labelled(
            out,
            "build_info",
            "The running version (always 1).",
            MetricType::Gauge,
            "version",
            [(env!("CARGO_PKG_VERSION"), 1)],
        )?;

        counter(
            out,
            "events_published",
            "Events published (fanned out on this node).",
            totals.published,
        )?;
        counter(
            out,
            "events_delivered",
            "Events queued to subscribers: one per subscriber per event.",
            totals.delivered,
        )?;
        counter(
            out,
            "events_dropped",
            "Events dropped for subscribers at a bound under drop_oldest.",
            totals.dropped,
        )?;
        counter(
            out,
            "slow_consumer_disconnects",
            "Subscribers cut as slow consumers, for any cause.",
            totals.slow_consumer_disconnects,
        )?;
        labelled(
            out,
            "slow_consumer_disconnects_by_cause",
            "Subscribers cut as slow consumers, by cause: queue_events (SUBSCRIBER_QUEUE_SIZE), queue_bytes (SUBSCRIBER_QUEUE_BYTES), write_timeout (WRITE_TIMEOUT), backplane_gap (cluster: events lost before this node read them).",
            MetricType::Counter,
            "cause",
            SlowConsumerCause::ALL.map(SlowConsumerCause::label).into_iter().zip(breakdown.slow_consumer_causes),
        )?;
        labelled(
            out,
            "publish_errors",
            "Publishes refused (REST and WebSocket), by error code.",
            MetricType::Counter,
            "code",
            PUBLISH_ERROR_CODES
                .into_iter()
                .zip(breakdown.publish_errors),
        )?;
        counter(
            out,
            "publisher_pauses",
            "Times a publisher waited for subscriber writers that were behind.",
            totals.publisher_pauses,
        )?;
        counter(
            out,
            "connections_opened",
            "WebSocket connections accepted.",
            totals.connections_total,
        )?;
        labelled(
            out,
            "websocket_upgrades_refused",
            "WebSocket upgrades refused before upgrading, by reason.",
            MetricType::Counter,
            "reason",
            UpgradeRefusal::ALL
                .map(UpgradeRefusal::label)
                .into_iter()
                .zip(breakdown.upgrades_refused),
        )?;
        counter(
            out,
            "http_connections_refused",
            "HTTP connections refused because MAX_HTTP_CONNECTIONS were open.",
            breakdown.http_connections_refused,
        )?;
        counter(
            out,
            "auth_failures",
            "REST requests and upgrades refused for a missing or wrong credential.",
            totals.auth_failures,
        )?;
        labelled(
            out,
            "publishes_rate_limited",
            "Publishes refused by PUBLISH_RATE_LIMIT (RATE_LIMITED), by transport.",
            MetricType::Counter,
            "transport",
            Transport::ALL
                .map(Transport::label)
                .into_iter()
                .zip(breakdown.rate_limited),
        )?;
        labelled(
            out,
            "permission_denials",
            "Subscribes, publishes and requests a valid access token did not permit, by transport.",
            MetricType::Counter,
            "transport",
            Transport::ALL
                .map(Transport::label)
                .into_iter()
                .zip(breakdown.permission_denials),
        )?;
        counter(
            out,
            "token_expiries",
            "WebSocket connections closed because their access token expired.",
            breakdown.token_expiries,
        )?;
        counter(
            out,
            "panics",
            "Connection tasks that panicked (contained).",
            totals.panics,
        )?;

        counter(
            out,
            "events_deflated",
            "Events deflated for permessage-deflate subscribers (each at most once, shared by all of them).",
            breakdown.events_deflated,
        )?;
        counter(
            out,
            "deflate_in_bytes",
            "JSON bytes of the events deflated.",
            breakdown.deflate_in_bytes,
        )?;
        counter(
            out,
            "deflate_out_bytes",
            "Frame bytes those events went out as to compressed subscribers (plain when deflating did not shrink them).",
            breakdown.deflate_out_bytes,
        )?;
        counter(
            out,
            "messages_inflated",
            "Compressed client messages inflated.",
            breakdown.messages_inflated,
        )?;
        counter(
            out,
            "frames_written",
            "WebSocket frames written to sockets.",
            breakdown.frames_per_write.sum,
        )?;
        counter(
            out,
            "bytes_written",
            "Bytes written to WebSocket sockets.",
            breakdown.bytes_written,
        )?;
        histogram(
            out,
            "frames_per_write",
            "Frames finished per vectored write (how well writes batch; at most 64).",
            1.0,
            &breakdown.frames_per_write,
        )?;
        histogram(
            out,
            "subscriber_queue_depth",
            "A subscriber's pending events each time its writer takes a batch.",
            1.0,
            &breakdown.queue_depth,
        )?;
        histogram(
            out,
            "fan_out_duration_seconds",
            "Time one publish took to queue its event for every subscriber.",
            NANOS_PER_SECOND,
            &breakdown.fan_out_nanos,
        )?;

        if let Some(cluster) = &self.cluster {
            let state = cluster.state();
            labelled(
                out,
                "cluster_backplane_state",
                "Cluster mode: the backplane's state (1 for the current one).",
                MetricType::Gauge,
                "state",
                BACKPLANE_STATES.map(|(candidate, label)| (label, u64::from(candidate == state))),
            )?;
            gauge(out, "cluster_follower_lag_events", "Cluster mode: events stored in the stream that this node had not applied, as of its last one.", cluster.follower_lag())?;
            gauge(
                out,
                "cluster_events_applied",
                "Cluster mode: the last stream sequence this node fanned out.",
                cluster.events_applied(),
            )?;
            counter(
                out,
                "cluster_events_missed",
                "Cluster mode: events the stream discarded before this node read them.",
                totals.backplane_events_missed,
            )?;
        }

        if self.per_topic {
            let topics = self.broker.summaries();
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

const BACKPLANE_STATES: [(BackplaneState, &str); 3] = [
    (BackplaneState::Starting, "starting"),
    (BackplaneState::Connected, "connected"),
    (BackplaneState::Disconnected, "disconnected"),
];

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
