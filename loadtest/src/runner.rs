//! Runs a plan: sets up subscribers and publishers, drives the publishing
//! phases (one, rising steps, or a sweep's listed steps), drains, and
//! measures each phase.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::cli::{Rate, Target};
use crate::http::HttpClient;
use crate::procfs::CpuSplit;
use crate::publisher::{self, Phase, PublisherSpec};
use crate::report::{self, BurstReport, IdleReport, RunReport, StepReport};
use crate::scenario::{Plan, StepRates};
use crate::schedule::Offer;
use crate::stats::{Snapshot, Stats};
use crate::subscriber::{self, Subscription};
use crate::{jetstream, pacer, payload, procfs, ringcast};

/// Handshakes in flight at once, so the server's accept backlog never overflows.
const CONNECT_CONCURRENCY: usize = 200;
/// How long deliveries may trail the last publish before the rest counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long publishers may take to send what was due when a phase ended.
const PUBLISHER_FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Lets an idle server finish settling before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// Time for publishers to see a new phase before it starts.
const PHASE_LEAD: Duration = Duration::from_millis(20);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(plan: &Plan, workers: usize) -> Result<RunReport> {
    let stats = Arc::new(Stats::new(workers));
    let topics = plan.topic_names();
    if plan.target == Target::Ringcast {
        let mut rest = HttpClient::new(plan.publisher_url(), plan.api_key.as_deref());
        ringcast::create_topics(&mut rest, &topics).await?;
    }
    if plan.jetstream {
        jetstream::create_stream(plan.publisher_url(), &topics).await?;
    }
    let rss_before = procfs::summed(&plan.server_pids, procfs::rss_kib);
    connect_subscribers(plan, &topics, &stats).await?;

    let mut report = RunReport {
        target: plan.target.name().to_string(),
        scenario: plan.scenario.name().to_string(),
        topics: plan.topics,
        subscribers_per_topic: plan.subscribers_per_topic,
        connections: plan.connections(),
        nodes: plan.urls.len(),
        publishers: if plan.is_idle() { 0 } else { plan.publishers },
        payload_bytes: plan.payload_bytes,
        one_publish_per_frame: plan.one_publish_per_frame,
        jetstream: plan.jetstream,
        compression: plan.compression,
        sse: plan.sse,
        burst: plan.bursts.map(|bursts| BurstReport {
            events: bursts.events,
            interval_ms: bursts.interval.as_secs_f64() * 1000.0,
        }),
        steps: Vec::new(),
        max_sustained_deliveries_per_sec: None,
        sustained_offered_deliveries_per_sec: None,
        idle: None,
        first_problem: None,
    };
    // Publishers run until the driver is dropped, at the end: each then
    // closes its connection, and the server's answer to that close is not
    // a problem of the run's, so the problems are read first.
    let mut publishers = None;
    if plan.is_idle() {
        tokio::time::sleep(IDLE_SETTLE).await;
        let rss_after = procfs::summed(&plan.server_pids, procfs::rss_kib);
        report.idle = Some(IdleReport {
            connections: plan.connections(),
            rss_kib_before: rss_before,
            rss_kib_after: rss_after,
            rss_kib_per_connection: rss_before
                .zip(rss_after)
                .map(|(before, after)| (after as f64 - before as f64) / plan.connections() as f64),
        });
    } else {
        let phases = start_publishers(plan, &topics, &stats).await?;
        let driver = publishers.insert(Driver {
            plan,
            stats: &stats,
            phases,
            last_phase_id: 0,
            started: Instant::now(),
        });
        report.steps = driver.run_steps().await?;
        if plan.step.is_some() {
            report.max_sustained_deliveries_per_sec = report
                .steps
                .iter()
                .take_while(|step| step.sustained)
                .last()
                .map(|step| step.delivered_per_sec);
            report.sustained_offered_deliveries_per_sec =
                report::sustained_offered(&report.steps, plan.max_p99.as_secs_f64() * 1000.0);
        }
    }
    report.first_problem = stats.first_problem();
    Ok(report)
}

/// Opens every subscriber connection (subscriber `i` on topic `i / S`, on
/// node `i mod nodes`) and waits until all are subscribed.
async fn connect_subscribers(plan: &Plan, topics: &[String], stats: &Arc<Stats>) -> Result<()> {
    let total = plan.connections();
    let slots = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (setup_tx, setup_rx) = mpsc::unbounded_channel();
    for i in 0..total {
        let topic = i / plan.subscribers_per_topic;
        let subscription = Subscription {
            target: plan.target,
            url: plan.subscriber_url(i).clone(),
            api_key: plan.api_key.clone(),
            topic: topics[topic].clone(),
            counter_stride: plan.counter_stride(topic),
            compression: plan.compression,
            sse: plan.sse,
        };
        tokio::spawn(subscriber::run(
            subscription,
            stats.clone(),
            slots.clone(),
            setup_tx.clone(),
        ));
    }
    await_setup("subscribers", total, setup_rx).await
}

async fn start_publishers(
    plan: &Plan,
    topics: &[String],
    stats: &Arc<Stats>,
) -> Result<watch::Sender<Option<Phase>>> {
    let (phases_tx, phases_rx) = watch::channel(None);
    let (setup_tx, setup_rx) = mpsc::unbounded_channel();
    for index in 0..plan.publishers {
        let spec = PublisherSpec {
            target: plan.target,
            url: plan.publisher_url().clone(),
            api_key: plan.api_key.clone(),
            index: index as u32,
            publishers: plan.publishers as u32,
            topics: plan
                .topics_of_publisher(index)
                .into_iter()
                .map(|topic| topics[topic].clone())
                .collect(),
            payload_bytes: plan.payload_bytes,
            one_publish_per_frame: plan.one_publish_per_frame,
            pub_ack_inbox: plan.jetstream.then(|| jetstream::inbox(index as u32)),
            pacing_quantum_ns: plan.pacing_quantum.as_nanos() as u64,
            compression: plan.compression,
        };
        tokio::spawn(publisher::run(
            spec,
            stats.clone(),
            phases_rx.clone(),
            setup_tx.clone(),
        ));
    }
    await_setup("publishers", plan.publishers, setup_rx).await?;
    Ok(phases_tx)
}

/// Reports a connection's setup outcome to `await_setup`, handing back the
/// connection when it succeeded.
pub fn report_setup<T>(setup: Result<T>, done: &mpsc::UnboundedSender<Result<()>>) -> Option<T> {
    let (outcome, connection) = match setup {
        Ok(connection) => (Ok(()), Some(connection)),
        Err(err) => (Err(err), None),
    };
    // The runner may have given up already; nothing else to tell.
    let _ = done.send(outcome);
    connection
}

/// Collects `total` setup outcomes, failing on the first error.
async fn await_setup(
    what: &str,
    total: usize,
    mut outcomes: mpsc::UnboundedReceiver<Result<()>>,
) -> Result<()> {
    let started = Instant::now();
    let mut last_report = started;
    for done in 1..=total {
        let outcome = outcomes
            .recv()
            .await
            .ok_or_else(|| anyhow!("{what}: setup tasks ended early"))?;
        outcome.map_err(|err| err.context(format!("setting up {what} ({done} of {total})")))?;
        if last_report.elapsed() >= PROGRESS_INTERVAL || done == total {
            last_report = Instant::now();
            eprintln!(
                "{what}: {done}/{total} ready ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Server readings at one instant of a phase.
struct Sample {
    at: Instant,
    counters: Snapshot,
    /// Summed over the nodes.
    cpu_ns: Option<u64>,
    cpu_split: Option<CpuSplit>,
    rss_kib: Option<u64>,
    backplane_cpu_ns: Option<u64>,
    /// This process's CPU time, to tell when the client is the bottleneck.
    client_cpu_ns: Option<u64>,
}

struct Driver<'a> {
    plan: &'a Plan,
    stats: &'a Stats,
    phases: watch::Sender<Option<Phase>>,
    last_phase_id: u64,
    started: Instant,
}

impl Driver<'_> {
    async fn run_steps(&mut self) -> Result<Vec<StepReport>> {
        let plan = self.plan;
        let Some(step) = &plan.step else {
            return Ok(vec![self.run_phase(plan.offer(), plan.duration).await?]);
        };
        let mut reports = Vec::new();
        match step.rates {
            StepRates::Listed(ref rates) => {
                for &rate in rates {
                    let report = self.run_phase(Offer::Paced(rate), step.duration).await?;
                    // Past a cut the fan-out is no longer the one offered.
                    let cut = report.disconnects > 0;
                    reports.push(report);
                    if cut {
                        break;
                    }
                }
            }
            StepRates::Rising { factor, max_rate } => {
                let Rate::PerSecond(mut rate) = plan.rate else {
                    unreachable!("the plan rejects --step without a finite rate");
                };
                loop {
                    let report = self.run_phase(Offer::Paced(rate), step.duration).await?;
                    let sustained = report.sustained;
                    reports.push(report);
                    let at_max = max_rate.is_some_and(|max| rate >= max);
                    if !sustained || at_max {
                        break;
                    }
                    rate *= factor;
                    if let Some(max) = max_rate {
                        rate = rate.min(max);
                    }
                }
            }
        }
        Ok(reports)
    }

    /// Publishes `offer` for the warmup plus `duration`, measuring only the latter.
    async fn run_phase(&mut self, offer: Offer, duration: Duration) -> Result<StepReport> {
        let before = self.stats.snapshot();
        // On a pacer tick, so the window's bounds are ticks too (for whole-ms
        // warmups and durations).
        let start = payload::instant_at(pacer::ceil(
            payload::ns_at(Instant::now() + PHASE_LEAD),
            pacer::TICK.as_nanos() as u64,
        ));
        let window_start = start + self.plan.warmup;
        let end = window_start + duration;
        self.stats
            .start_latency_window(payload::ns_at(window_start));
        self.last_phase_id += 1;
        self.phases.send_replace(Some(Phase {
            id: self.last_phase_id,
            start,
            end,
            offer,
        }));
        self.wait_with_progress(window_start, offer).await;
        let window_open = self.sample();
        self.wait_with_progress(end, offer).await;
        let window_closed = self.sample();
        self.drain(before).await;
        let after = self.stats.snapshot();
        Ok(self.step_report(offer, before, &window_open, &window_closed, after))
    }

    fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            counters: self.stats.snapshot(),
            cpu_ns: procfs::summed(&self.plan.server_pids, procfs::cpu_ns),
            cpu_split: procfs::summed(&self.plan.server_pids, procfs::cpu_split),
            rss_kib: procfs::summed(&self.plan.server_pids, procfs::rss_kib),
            backplane_cpu_ns: self.plan.backplane_pid.and_then(procfs::cpu_ns),
            client_cpu_ns: procfs::cpu_ns(std::process::id()),
        }
    }

    /// Waits for publishers to finish the phase, then for deliveries to catch up.
    async fn drain(&self, before: Snapshot) {
        let publishers_done = self.last_phase_id * self.plan.publishers as u64;
        let finish_deadline = Instant::now() + PUBLISHER_FINISH_TIMEOUT;
        while self.stats.phases_done.load(Relaxed) < publishers_done {
            if Instant::now() >= finish_deadline {
                eprintln!("warning: publishers did not finish the phase in time");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
        let subscribers = self.plan.subscribers_per_topic as u64;
        while Instant::now() < drain_deadline {
            let now = self.stats.snapshot();
            let expected = (now.published - before.published) * subscribers;
            let acked = !self.plan.acknowledged() || now.acks >= now.published;
            if now.received - before.received >= expected && acked {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_with_progress(&self, deadline: Instant, offer: Offer) {
        let mut last = (Instant::now(), self.stats.snapshot().received);
        loop {
            let next = (last.0 + PROGRESS_INTERVAL).min(deadline);
            tokio::time::sleep_until(next.into()).await;
            if next == deadline {
                return;
            }
            let now = self.stats.snapshot();
            let per_sec = (now.received - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let missing = (now.published * self.plan.subscribers_per_topic as u64)
                .saturating_sub(now.received);
            let p99 = self.stats.latency_us();
            let p99 = if p99.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}ms", p99.value_at_quantile(0.99) as f64 / 1000.0)
            };
            eprintln!(
                "[{:6.1}s] offered {offer}  delivered {per_sec:.0}/s  not yet received {missing}  \
                 seq gaps {}  disconnects {} (subscribers cut {})  p99 {p99}",
                self.started.elapsed().as_secs_f64(),
                now.seq_gaps,
                now.disconnects,
                now.subscribers_cut,
            );
            last = (Instant::now(), now.received);
        }
    }

    fn step_report(
        &self,
        offer: Offer,
        before: Snapshot,
        window_open: &Sample,
        window_closed: &Sample,
        after: Snapshot,
    ) -> StepReport {
        let subscribers = self.plan.subscribers_per_topic as u64;
        let published = after.published - before.published;
        let expected = published * subscribers;
        let received = after.received - before.received;
        let window_secs = (window_closed.at - window_open.at).as_secs_f64();
        // Unlimited-rate ingress counts publishes (each topic has one
        // subscriber), and into JetStream the publishes it stored: NATS
        // delivers a publish to subscribers before the stream has it.
        let published_in_window = window_closed.counters.published - window_open.counters.published;
        let counted = match offer {
            Offer::Unlimited if self.plan.jetstream => {
                window_closed.counters.acks - window_open.counters.acks
            }
            Offer::Unlimited => published_in_window,
            Offer::Paced(_) | Offer::Bursts(_) => {
                window_closed.counters.received - window_open.counters.received
            }
        };
        let per = |count: u64, open: Option<u64>, closed: Option<u64>| {
            open.zip(closed)
                .filter(|_| count > 0)
                .map(|(open, closed)| closed.saturating_sub(open) as f64 / count as f64)
        };
        let per_delivery = |open, closed| per(counted, open, closed);
        let split = |part: fn(CpuSplit) -> u64| {
            per_delivery(
                window_open.cpu_split.map(part),
                window_closed.cpu_split.map(part),
            )
        };
        let latency = self.stats.latency_us();
        let quantile_ms =
            |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1000.0);
        let loss = expected as i64 - received as i64;
        let seq_gaps = after.seq_gaps - before.seq_gaps;
        let publish_errors = after.publish_errors - before.publish_errors;
        let answered = after.acks - before.acks + publish_errors;
        let disconnects = after.disconnects - before.disconnects;
        let p99_ms = quantile_ms(0.99);
        let offered_rate = offer.events_per_sec();
        StepReport {
            offered_rate,
            offered_deliveries_per_sec: offered_rate.map(|rate| rate * subscribers as f64),
            published,
            expected,
            received,
            loss,
            seq_gaps: (self.plan.target == Target::Ringcast).then_some(seq_gaps),
            publish_errors,
            unanswered_publishes: self
                .plan
                .acknowledged()
                .then(|| published.saturating_sub(answered)),
            disconnects,
            subscribers_cut: after.subscribers_cut - before.subscribers_cut,
            slow_consumer_errors: after.slow_consumer_errors - before.slow_consumer_errors,
            delivered_per_sec: counted as f64 / window_secs,
            p50_ms: quantile_ms(0.50),
            p99_ms,
            p999_ms: quantile_ms(0.999),
            max_ms: (!latency.is_empty()).then(|| latency.max() as f64 / 1000.0),
            server_cpu_ns_per_delivery: per_delivery(window_open.cpu_ns, window_closed.cpu_ns),
            server_user_ns_per_delivery: split(|split| split.user_ns),
            server_kernel_ns_per_delivery: split(|split| split.kernel_ns),
            wire_bytes_per_delivery: per_delivery(
                Some(window_open.counters.wire_bytes),
                Some(window_closed.counters.wire_bytes),
            ),
            server_cpu_ns_per_event: per(
                published_in_window,
                window_open.cpu_ns,
                window_closed.cpu_ns,
            ),
            backplane_cpu_ns_per_delivery: per_delivery(
                window_open.backplane_cpu_ns,
                window_closed.backplane_cpu_ns,
            ),
            client_cpu_ns_per_delivery: per_delivery(
                window_open.client_cpu_ns,
                window_closed.client_cpu_ns,
            ),
            window_secs,
            server_rss_kib_start: window_open.rss_kib,
            server_rss_kib_end: window_closed.rss_kib,
            sustained: loss == 0
                && seq_gaps == 0
                && publish_errors == 0
                && disconnects == 0
                && p99_ms.is_some_and(|p99| p99 <= self.plan.max_p99.as_secs_f64() * 1000.0),
        }
    }
}
