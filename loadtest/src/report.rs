//! Results: the JSON schema (also read back by `chart`) and the human summary.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
pub struct RunReport {
    pub target: String,
    pub scenario: String,
    pub topics: usize,
    pub subscribers_per_topic: usize,
    pub connections: usize,
    /// Servers the subscriber connections were spread over (`--url` given more than once).
    #[serde(default = "one_node")]
    pub nodes: usize,
    pub publishers: usize,
    pub payload_bytes: usize,
    /// Every publish in a WebSocket frame of its own, NATS included (chat).
    #[serde(default)]
    pub one_publish_per_frame: bool,
    /// NATS publishes went into a JetStream stream (`--jetstream`).
    #[serde(default)]
    pub jetstream: bool,
    /// Every connection negotiated `permessage-deflate` (`--compression`).
    #[serde(default)]
    pub compression: bool,
    /// Subscribers read server-sent events (`--sse`).
    #[serde(default)]
    pub sse: bool,
    /// The burst scenario's bursts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstReport>,
    pub steps: Vec<StepReport>,
    /// Delivered/s of the last sustained step; step mode only.
    pub max_sustained_deliveries_per_sec: Option<f64>,
    /// The highest offered deliveries/s at which that step and every step
    /// before it kept p99 under `--max-p99` and lost at most
    /// `SUSTAINED_MAX_LOSS` of the deliveries (see `sustained_offered`); step
    /// mode only.
    #[serde(default)]
    pub sustained_offered_deliveries_per_sec: Option<f64>,
    pub idle: Option<IdleReport>,
    /// The first disconnect or publish error seen, to explain a failure.
    #[serde(default)]
    pub first_problem: Option<String>,
}

fn one_node() -> usize {
    1
}

#[derive(Serialize, Deserialize, Debug)]
pub struct BurstReport {
    /// Events per burst across all publishers.
    pub events: u64,
    /// From one burst's start to the next's.
    pub interval_ms: f64,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct StepReport {
    /// Events published per second across publishers; null when unlimited.
    pub offered_rate: Option<f64>,
    /// `offered_rate` x subscribers per topic.
    pub offered_deliveries_per_sec: Option<f64>,
    pub published: u64,
    pub expected: u64,
    pub received: u64,
    /// `expected - received` after the drain (negative would mean duplicates).
    pub loss: i64,
    /// Events missing from subscribers' `seq` sequences (ringcast only).
    pub seq_gaps: Option<u64>,
    pub publish_errors: u64,
    /// Publishes neither acked nor refused by the end of the drain (ringcast
    /// only): in cluster mode an ack waits for the backplane to store the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered_publishes: Option<u64>,
    /// Connections closed by the server or by an error during the step.
    #[serde(default)]
    pub disconnects: u64,
    /// Of `disconnects`, the subscriber connections.
    #[serde(default)]
    pub subscribers_cut: u64,
    /// `SLOW_CONSUMER` errors (NATS: `-ERR 'Slow Consumer…'`) subscribers received.
    #[serde(default)]
    pub slow_consumer_errors: u64,
    /// Deliveries (publishes, for unlimited-rate ingress) in the measured window per second.
    pub delivered_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Summed over the nodes given with `--server-pid`.
    pub server_cpu_ns_per_delivery: Option<f64>,
    /// User-space and kernel parts of the server's CPU per delivery, from
    /// `/proc/PID/stat` (clock ticks), so their sum differs slightly from
    /// `server_cpu_ns_per_delivery` (schedstat).
    #[serde(default)]
    pub server_user_ns_per_delivery: Option<f64>,
    #[serde(default)]
    pub server_kernel_ns_per_delivery: Option<f64>,
    /// Bytes subscribers read from their sockets per delivery: WebSocket
    /// frames and protocol envelopes included, TCP/IP headers not.
    #[serde(default)]
    pub wire_bytes_per_delivery: Option<f64>,
    /// The same CPU time per event published in the window.
    #[serde(default)]
    pub server_cpu_ns_per_event: Option<f64>,
    /// The cluster backplane's (`--backplane-pid`) CPU per delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backplane_cpu_ns_per_delivery: Option<f64>,
    /// The load generator's own CPU per delivery: if it nears 1e9 / delivered_per_sec
    /// per client core, the client, not the server, is the limit.
    #[serde(default)]
    pub client_cpu_ns_per_delivery: Option<f64>,
    /// Length of the measured window.
    #[serde(default)]
    pub window_secs: f64,
    pub server_rss_kib_start: Option<u64>,
    pub server_rss_kib_end: Option<u64>,
    /// No loss, no gap, no error and p99 within the bound.
    pub sustained: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct IdleReport {
    pub connections: usize,
    pub rss_kib_before: Option<u64>,
    pub rss_kib_after: Option<u64>,
    pub rss_kib_per_connection: Option<f64>,
}

/// The share of expected deliveries a step may lose and still count towards
/// `sustained_offered`: 0.1%.
pub const SUSTAINED_MAX_LOSS: f64 = 0.001;

/// The highest offered deliveries/s of a run's steps (in rising order) up to
/// which every step had p99 under `max_p99_ms` and lost at most
/// `SUSTAINED_MAX_LOSS` of what it should have delivered. Unlike
/// `StepReport::sustained` it forgives a little loss; like it, the first
/// step over a bound ends the count, so a lucky step beyond it does not.
pub fn sustained_offered(steps: &[StepReport], max_p99_ms: f64) -> Option<f64> {
    steps
        .iter()
        .take_while(|step| {
            let lost = step.loss.max(0) as f64 / step.expected.max(1) as f64;
            step.p99_ms.is_some_and(|p99| p99 < max_p99_ms) && lost <= SUSTAINED_MAX_LOSS
        })
        .filter_map(|step| step.offered_deliveries_per_sec)
        .last()
}

impl RunReport {
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let nodes = if self.nodes > 1 {
            format!(" over {} nodes", self.nodes)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{} {}: {} topics x {} subscribers = {} connections{nodes}, {} publishers, {}-byte payloads",
            self.target,
            self.scenario,
            self.topics,
            self.subscribers_per_topic,
            self.connections,
            self.publishers,
            self.payload_bytes
        );
        if let Some(burst) = &self.burst {
            let _ = writeln!(
                out,
                "bursts of {} events every {:.0} ms, each as fast as the sockets take it",
                burst.events, burst.interval_ms
            );
        }
        if self.one_publish_per_frame {
            out.push_str("one publish per WebSocket frame\n");
        }
        if self.jetstream {
            out.push_str("publishes into a JetStream stream, each with its id and a PubAck\n");
        }
        if self.compression {
            out.push_str("permessage-deflate negotiated on every connection\n");
        }
        if self.sse {
            out.push_str("subscribers read server-sent events (GET /sse)\n");
        }
        if !self.steps.is_empty() {
            out.push_str(&table_row(COLUMNS.map(|(title, _)| title.to_string())));
            for step in &self.steps {
                out.push_str(&table_row([
                    float_or(step.offered_rate, "max"),
                    float_or(step.offered_deliveries_per_sec, "-"),
                    format!("{:.0}", step.delivered_per_sec),
                    step.received.to_string(),
                    step.loss.to_string(),
                    step.seq_gaps
                        .map_or("-".to_string(), |gaps| gaps.to_string()),
                    // The counters are read apart: a cut may show in one only.
                    (step.publish_errors + step.disconnects.saturating_sub(step.subscribers_cut))
                        .to_string(),
                    step.subscribers_cut.to_string(),
                    ms(step.p50_ms),
                    ms(step.p99_ms),
                    ms(step.p999_ms),
                    ms(step.max_ms),
                    float_or(step.server_cpu_ns_per_delivery, "-"),
                    float_or(step.server_user_ns_per_delivery, "-"),
                    float_or(step.server_kernel_ns_per_delivery, "-"),
                    float_or(step.client_cpu_ns_per_delivery, "-"),
                    float_or(step.wire_bytes_per_delivery, "-"),
                    match (step.server_rss_kib_start, step.server_rss_kib_end) {
                        (Some(start), Some(end)) => format!("{start}->{end}"),
                        _ => "-".to_string(),
                    },
                    (if step.sustained { "yes" } else { "NO" }).to_string(),
                ]));
            }
        }
        let slow_consumer: Vec<u64> = self
            .steps
            .iter()
            .map(|step| step.slow_consumer_errors)
            .collect();
        if slow_consumer.iter().any(|&count| count > 0) {
            let _ = writeln!(
                out,
                "slow-consumer errors received by subscribers, by step: {}",
                joined(slow_consumer.iter().map(u64::to_string))
            );
        }
        let unanswered: Vec<u64> = self
            .steps
            .iter()
            .filter_map(|step| step.unanswered_publishes)
            .collect();
        if unanswered.iter().any(|&count| count > 0) {
            let _ = writeln!(
                out,
                "publishes unanswered after the drain, by step: {}",
                joined(unanswered.iter().map(u64::to_string))
            );
        }
        let backplane: Vec<f64> = self
            .steps
            .iter()
            .filter_map(|step| step.backplane_cpu_ns_per_delivery)
            .collect();
        if !backplane.is_empty() {
            let _ = writeln!(
                out,
                "backplane CPU ns/delivery by step: {}",
                joined(backplane.iter().map(|ns| format!("{ns:.0}")))
            );
        }
        if let Some(max) = self.max_sustained_deliveries_per_sec {
            let _ = writeln!(out, "max sustained: {max:.0} deliveries/s");
        }
        if let Some(offered) = self.sustained_offered_deliveries_per_sec {
            let _ = writeln!(
                out,
                "p99 under the bound and loss <= {}% up to {offered:.0} offered deliveries/s",
                SUSTAINED_MAX_LOSS * 100.0
            );
        }
        if let Some(idle) = &self.idle {
            let _ = writeln!(
                out,
                "idle: {} connections, server RSS {} -> {} KiB, {} KiB per connection",
                idle.connections,
                idle.rss_kib_before
                    .map_or("?".into(), |kib| kib.to_string()),
                idle.rss_kib_after.map_or("?".into(), |kib| kib.to_string()),
                idle.rss_kib_per_connection
                    .map_or("?".into(), |kib| format!("{kib:.2}")),
            );
        }
        if let Some(problem) = &self.first_problem {
            let _ = writeln!(out, "first problem: {problem}");
        }
        out
    }
}

/// Summary table columns: title and width. `usr`/`sys` split the server's CPU
/// per delivery, `wire B/d` is bytes read per delivery. `errs` counts publish errors and
/// publisher disconnects, `cut` subscriber connections the server closed.
const COLUMNS: [(&str, usize); 19] = [
    ("offer ev/s", 10),
    ("offer del/s", 11),
    ("deliv/s", 11),
    ("received", 10),
    ("loss", 6),
    ("gaps", 5),
    ("errs", 5),
    ("cut", 5),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("p999 ms", 8),
    ("max ms", 8),
    ("srv ns/d", 8),
    ("usr ns/d", 8),
    ("sys ns/d", 8),
    ("cli ns/d", 8),
    ("wire B/d", 8),
    ("rss KiB", 15),
    ("ok", 3),
];

fn table_row(cells: [String; COLUMNS.len()]) -> String {
    let mut row = String::new();
    for (cell, (_, width)) in cells.iter().zip(COLUMNS) {
        let _ = write!(row, "{cell:>width$} ");
    }
    row.truncate(row.trim_end().len());
    row.push('\n');
    row
}

fn joined(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(" ")
}

fn float_or(value: Option<f64>, missing: &str) -> String {
    value.map_or(missing.to_string(), |value| format!("{value:.0}"))
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |ms| format!("{ms:.3}"))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A hand-made fan-out sweep of each server, as `run --json` writes them.
    pub const SWEEPS: [&str; 2] = [
        include_str!("../fixtures/fanout-sweep-ringcast.json"),
        include_str!("../fixtures/fanout-sweep-nats.json"),
    ];

    pub fn sweep(target: usize) -> RunReport {
        serde_json::from_str(SWEEPS[target]).unwrap()
    }

    #[test]
    fn sustained_offered_stops_at_the_first_step_over_a_bound() {
        // ringcast: 1M/s loses 0.01% (forgiven); 2M/s has p99 140 ms; 3.15M/s
        // is under both bounds again but comes after it.
        assert_eq!(sustained_offered(&sweep(0).steps, 50.0), Some(1e6));
        // nats: 0.5M/s loses 1%.
        assert_eq!(sustained_offered(&sweep(1).steps, 50.0), Some(200e3));
        // The p99 bound is strict, and a run whose first step misses it has none.
        assert_eq!(sustained_offered(&sweep(0).steps, 31.0), Some(500e3));
        assert_eq!(sustained_offered(&sweep(1).steps, 1.5), None);
    }

    #[test]
    fn the_summary_names_the_sustained_rate() {
        let mut report = sweep(0);
        report.sustained_offered_deliveries_per_sec = sustained_offered(&report.steps, 50.0);
        assert!(report
            .summary()
            .contains("loss <= 0.1% up to 1000000 offered deliveries/s"));
        let round_trip: RunReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(round_trip.sustained_offered_deliveries_per_sec, Some(1e6));
    }
}
