//! The soak's results: the JSON schema, the verdict and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::counters::{ErrorTally, Spread, Totals};
use super::server::{Health, ServerTotals};
use super::Load;

#[derive(Serialize)]
pub struct SoakReport {
    pub url: String,
    pub load: Load,
    /// From the start of the load to the moment every task had stopped.
    pub elapsed_secs: f64,
    pub rss_kib: Rss,
    /// The server's counts once the clients were gone: both must be 0.
    pub final_counts: FinalCounts,
    /// `GET /health` at the very end, after the soak deleted its topics.
    pub health_at_end: Option<Health>,
    pub totals: Totals,
    /// Time from a stalled reader's subscription to the failure of its
    /// first probe after the server closed it.
    pub stalled_disconnect_time: Option<Spread>,
    /// How the server's `/stats` counters grew over the soak.
    pub server_totals: Option<ServerTotals>,
    pub unexpected_errors: BTreeMap<&'static str, ErrorTally>,
    /// Why the soak failed; empty when it passed.
    pub failures: Vec<String>,
    pub passed: bool,
    /// One server reading per second during the load.
    pub samples: Vec<Sample>,
}

/// Server RSS in KiB: before the first client, the highest reading, and
/// after the clients and the soak's topics were gone.
#[derive(Serialize)]
pub struct Rss {
    pub start: Option<u64>,
    pub peak: Option<u64>,
    pub end: Option<u64>,
}

#[derive(Serialize)]
pub struct FinalCounts {
    /// Null when `/health` could not be read.
    pub connections: Option<u64>,
    pub subscribers: Option<u64>,
    /// How long after the stop both reached 0; null if they did not.
    pub settled_after_secs: Option<f64>,
}

impl FinalCounts {
    pub fn settled(health: Health, after: Duration) -> FinalCounts {
        FinalCounts {
            connections: Some(health.connections),
            subscribers: Some(health.subscribers),
            settled_after_secs: Some(after.as_secs_f64()),
        }
    }

    pub fn unsettled(last: Option<Health>) -> FinalCounts {
        FinalCounts {
            connections: last.map(|health| health.connections),
            subscribers: last.map(|health| health.subscribers),
            settled_after_secs: None,
        }
    }
}

#[derive(Serialize)]
pub struct Sample {
    pub t_secs: f64,
    pub rss_kib: Option<u64>,
    #[serde(flatten)]
    pub health: Health,
}

impl SoakReport {
    /// Fills in `failures` and `passed`.
    pub fn judge(&mut self) {
        let mut failures = Vec::new();
        let counts = &self.final_counts;
        if counts.settled_after_secs.is_none() {
            failures.push(format!(
                "the server still reports {} connections and {} subscribers",
                count(counts.connections),
                count(counts.subscribers)
            ));
        }
        let errors: u64 = self.unexpected_errors.values().map(|e| e.count).sum();
        if errors > 0 {
            failures.push(format!("{errors} unexpected errors"));
        }
        if let Some(panics) = self.server_totals.map(|totals| totals.panics) {
            if panics > 0 {
                failures.push(format!("the server contained {panics} panics"));
            }
        }
        if self.load.stalled_readers > 0 && self.totals.stalled_readers_disconnected == 0 {
            failures.push("no stalled reader was disconnected by the server".to_string());
        }
        self.passed = failures.is_empty();
        self.failures = failures;
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let load = &self.load;
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "ringcast soak of {}: {:.0}s of load, {verdict}",
            self.url, self.elapsed_secs
        );
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<22}{value}");
        };
        row(
            "load",
            format!(
                "{:.0} events/s ({:.0} over REST, {:.0} to the busy topic), {} churning subscribers \
                 living {:.0}-{:.0}s, {} stalled readers, {}+{} topics",
                load.rate,
                load.rest_rate,
                load.busy_rate,
                load.subscribers,
                load.lifetime_secs[0],
                load.lifetime_secs[1],
                load.stalled_readers,
                load.topics + 1,
                load.short_lived_topics
            ),
        );
        row(
            "server RSS",
            format!(
                "start {}, peak {}, end {}",
                mib(self.rss_kib.start),
                mib(self.rss_kib.peak),
                mib(self.rss_kib.end)
            ),
        );
        let counts = &self.final_counts;
        row(
            "final counts",
            format!(
                "connections {}, subscribers {} ({})",
                count(counts.connections),
                count(counts.subscribers),
                counts
                    .settled_after_secs
                    .map_or("not settled".to_string(), |secs| {
                        format!("zero {secs:.1}s after the stop")
                    })
            ),
        );
        row(
            "connections",
            format!(
                "{} opened; {} closed cleanly, {} dropped ({} mid-frame)",
                t.connections_opened, t.clean_closes, t.dropped, t.dropped_mid_frame
            ),
        );
        row(
            "subscriptions",
            format!(
                "{} acked ({} with last_n); {} topic_deleted notices, then {} resubscribed \
                 and {} left; {} subscribes found the topic gone",
                t.subscriptions,
                t.subscriptions_with_last_n,
                t.topic_deleted_notices,
                t.resubscribed,
                t.left_after_notice,
                t.subscribe_topic_gone
            ),
        );
        row(
            "stalled readers",
            format!(
                "{} opened, {} disconnected by the server{}, {} still stalling at the stop",
                t.stalled_readers_opened,
                t.stalled_readers_disconnected,
                self.stalled_disconnect_time
                    .map_or(String::new(), |spread| format!(
                        " after {}/{}/{} ms (min/median/max)",
                        spread.min_ms, spread.median_ms, spread.max_ms
                    )),
                t.stalled_readers_open_at_end
            ),
        );
        row(
            "topics",
            format!(
                "{} created, {} deleted during the load",
                t.topics_created, t.topics_deleted
            ),
        );
        row(
            "events",
            format!(
                "{} published ({} WebSocket, {} REST), {} acked, {} found the topic gone; \
                 {} received",
                t.published_ws + t.published_rest,
                t.published_ws,
                t.published_rest,
                t.acked,
                t.publish_topic_gone,
                t.received
            ),
        );
        if let Some(server) = &self.server_totals {
            row(
                "server /stats growth",
                format!(
                    "{} connections, {} published, {} delivered, {} dropped, \
                     {} slow-consumer disconnects, {} panics",
                    server.connections_total,
                    server.published,
                    server.delivered,
                    server.dropped,
                    server.slow_consumer_disconnects,
                    server.panics
                ),
            );
        }
        if let Some(health) = &self.health_at_end {
            row(
                "server at the end",
                format!(
                    "{} connections, {} subscribers, {} topics",
                    health.connections, health.subscribers, health.topics
                ),
            );
        }
        if self.unexpected_errors.is_empty() {
            row("unexpected errors", "none".to_string());
        }
        for (kind, tally) in &self.unexpected_errors {
            row(
                "unexpected error",
                format!("{kind} x{}, first: {}", tally.count, tally.first),
            );
        }
        for failure in &self.failures {
            row("FAILURE", failure.clone());
        }
        out
    }
}

/// KiB as MiB with one decimal, or `?`.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".to_string(), |kib| {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    })
}

fn count(value: Option<u64>) -> String {
    value.map_or("?".to_string(), |value| value.to_string())
}
