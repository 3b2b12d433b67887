//! The soak: for a long time, at once, connection churn, stalled readers,
//! topic churn and steady publishing against one ringcast server; then
//! everything stops and the server's connection and subscription counts
//! must return to zero. Server RSS is read at the start, every second and at
//! the end. See loadtest/README.md.

mod counters;
mod publishers;
mod report;
mod server;
mod stalled;
mod subscribers;
mod topics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::SoakArgs;
use crate::http::HttpClient;
use crate::ws::WsUrl;
use crate::{payload, ringcast};
use counters::{Counters, Errors, StallTimes};
pub use report::SoakReport;
use report::{FinalCounts, Rss, Sample};
use serde::Serialize;
use server::{Health, Server};
use topics::TopicPool;

const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// How long the tasks may take to close their connections once stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Once the counts are zero, the server gets this long to release memory
/// before the last RSS reading.
const AFTER_SETTLE: Duration = Duration::from_secs(5);
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// What every soak task shares.
pub struct Shared {
    pub url: WsUrl,
    pub api_key: Option<String>,
    pub topics: TopicPool,
    pub counters: Counters,
    pub errors: Errors,
    pub stall_times: StallTimes,
    stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn rest(&self) -> HttpClient {
        HttpClient::new(&self.url, self.api_key.as_deref())
    }

    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.stop.clone())
    }
}

#[cfg(test)]
impl Shared {
    /// Shared state around `topics`, for tests that need no server.
    pub fn for_tests(topics: TopicPool) -> Shared {
        Shared {
            url: WsUrl::parse("ws://127.0.0.1:9/ws").expect("valid URL"),
            api_key: None,
            topics,
            counters: Counters::default(),
            errors: Errors::default(),
            stall_times: StallTimes::default(),
            stop: watch::channel(false).1,
        }
    }
}

/// Tells a task that the soak is over.
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub async fn stopped(&mut self) {
        // An error means the sender is gone: stopped as well.
        let _ = self.0.wait_for(|&stopped| stopped).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

pub async fn run(args: &SoakArgs) -> Result<SoakReport> {
    let load = Load::from_args(args)?;
    let url = WsUrl::parse(&args.url)?;
    let api_key = args.api_key.clone();
    let mut server = Server::new(&url, api_key.as_deref(), args.server_pid);
    // The baseline, before the soak's first topic or connection.
    let before = server
        .read()
        .await
        .with_context(|| format!("reading http://{}/health and /stats", url.authority()))?;
    let mut rest = HttpClient::new(&url, api_key.as_deref());
    let topics = TopicPool::create(&mut rest, args.topics, args.short_lived_topics).await?;
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        url,
        api_key,
        topics,
        counters: Counters::default(),
        errors: Errors::default(),
        stall_times: StallTimes::default(),
        stop: stop_rx,
    });

    let started = Instant::now();
    let mut tasks = spawn_load(&shared, args, &load);
    let mut timeline = Timeline::new(started, before.rss_kib);
    timeline
        .run_until(&mut server, &shared, started + args.duration)
        .await;

    eprintln!("stopping: closing every client connection");
    stop.send_replace(true);
    if tokio::time::timeout(STOP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        shared.errors.record(
            "stop",
            format!(
                "{} tasks still running {STOP_TIMEOUT:?} after the stop",
                tasks.len()
            ),
        );
        tasks.abort_all();
    }
    let elapsed = started.elapsed();

    let settled = settle(&mut server, &shared, args.settle_timeout).await;
    clean_up_topics(&mut rest, &shared).await;
    tokio::time::sleep(AFTER_SETTLE).await;
    let after = match server.read().await {
        Ok(reading) => Some(reading),
        Err(err) => {
            shared.errors.record("server_reading", format!("{err:#}"));
            None
        }
    };
    let rss_end = after
        .as_ref()
        .map_or(server.rss_kib(), |after| after.rss_kib);
    timeline.observe_rss(rss_end);

    let mut report = SoakReport {
        url: args.url.clone(),
        load,
        elapsed_secs: elapsed.as_secs_f64(),
        rss_kib: Rss {
            start: before.rss_kib,
            peak: timeline.rss_peak,
            end: rss_end,
        },
        final_counts: settled,
        health_at_end: after.as_ref().map(|after| after.health),
        totals: shared.counters.totals(),
        stalled_disconnect_time: shared.stall_times.spread(),
        server_totals: after.map(|after| after.totals.since(&before.totals)),
        unexpected_errors: shared.errors.tallies(),
        failures: Vec::new(),
        passed: false,
        samples: timeline.samples,
    };
    report.judge();
    Ok(report)
}

/// Starts every load task; they run until the stop signal.
fn spawn_load(shared: &Arc<Shared>, args: &SoakArgs, load: &Load) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if args.short_lived_topics > 0 {
        tasks.spawn(topics::churn(
            shared.clone(),
            args.topic_churn_interval,
            args.short_lived_topics,
        ));
    }
    let ws_rate = load.rate - load.rest_rate;
    for index in (0..args.publishers).filter(|_| ws_rate > 0.0) {
        tasks.spawn(publishers::publish_over_ws(
            shared.clone(),
            publishers::WsPublisher {
                index: index as u32,
                rate: ws_rate / args.publishers as f64,
                busy_share: load.busy_rate / ws_rate,
                payload_bytes: args.payload_bytes,
            },
        ));
    }
    if load.rest_rate > 0.0 {
        tasks.spawn(publishers::publish_over_rest(
            shared.clone(),
            args.publishers as u32,
            load.rest_rate,
            args.payload_bytes,
        ));
    }
    let churn = subscribers::Churn {
        min_lifetime: args.min_lifetime,
        max_lifetime: args.max_lifetime,
        max_subscriptions: args.max_subscriptions,
    };
    for slot in 0..args.subscribers {
        tasks.spawn(subscribers::run_slot(
            shared.clone(),
            churn,
            slot,
            args.subscribers,
        ));
    }
    let stall = stalled::Stall {
        receive_buffer: args.stalled_receive_buffer,
        timeout: args.stall_timeout,
    };
    for _ in 0..args.stalled_readers {
        tasks.spawn(stalled::run_slot(shared.clone(), stall));
    }
    tasks
}

/// The server readings over the run, and progress on stderr.
struct Timeline {
    started: Instant,
    samples: Vec<Sample>,
    rss_peak: Option<u64>,
}

impl Timeline {
    fn new(started: Instant, rss_start: Option<u64>) -> Timeline {
        Timeline {
            started,
            samples: Vec::new(),
            rss_peak: rss_start,
        }
    }

    fn observe_rss(&mut self, rss_kib: Option<u64>) {
        self.rss_peak = self.rss_peak.max(rss_kib);
    }

    /// Samples the server every second until `deadline`.
    async fn run_until(&mut self, server: &mut Server, shared: &Shared, deadline: Instant) {
        let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_progress = self.started + PROGRESS_INTERVAL;
        let mut last_progress = (self.started, shared.counters.totals());
        while Instant::now() < deadline {
            ticker.tick().await;
            match server.read().await {
                Ok(reading) => {
                    self.observe_rss(reading.rss_kib);
                    self.samples.push(Sample {
                        t_secs: self.started.elapsed().as_secs_f64(),
                        rss_kib: reading.rss_kib,
                        health: reading.health,
                    });
                }
                Err(err) => shared.errors.record("server_reading", format!("{err:#}")),
            }
            if Instant::now() >= next_progress {
                next_progress += PROGRESS_INTERVAL;
                last_progress = self.progress(shared, last_progress);
            }
        }
    }

    fn progress(
        &self,
        shared: &Shared,
        (last_at, last): (Instant, counters::Totals),
    ) -> (Instant, counters::Totals) {
        let now = (Instant::now(), shared.counters.totals());
        let totals = &now.1;
        let per_sec =
            |count: u64, last: u64| (count - last) as f64 / last_at.elapsed().as_secs_f64();
        let server = self
            .samples
            .last()
            .map_or("server: no reading".to_string(), |sample| {
                format!(
                    "server: rss {} (peak {}), {} connections, {} subscribers, {} topics",
                    report::mib(sample.rss_kib),
                    report::mib(self.rss_peak),
                    sample.health.connections,
                    sample.health.subscribers,
                    sample.health.topics
                )
            });
        eprintln!(
            "[{:5.0}s] {server} | published {:.0}/s, received {:.0}/s | churn {} opened | \
             stalled readers cut {} | unexpected errors {}",
            self.started.elapsed().as_secs_f64(),
            per_sec(
                totals.published_ws + totals.published_rest,
                last.published_ws + last.published_rest
            ),
            per_sec(totals.received, last.received),
            totals.connections_opened,
            totals.stalled_readers_disconnected,
            shared.errors.total(),
        );
        now
    }
}

/// Polls `/health` until no connection and no subscriber is left, or the
/// timeout; returns the last counts and how long it took.
async fn settle(server: &mut Server, shared: &Shared, timeout: Duration) -> FinalCounts {
    let started = Instant::now();
    let mut last: Option<Health> = None;
    loop {
        match server.health().await {
            Ok(health) if health.connections == 0 && health.subscribers == 0 => {
                return FinalCounts::settled(health, started.elapsed());
            }
            Ok(health) => last = Some(health),
            Err(err) => shared.errors.record("server_reading", format!("{err:#}")),
        }
        if started.elapsed() >= timeout {
            return FinalCounts::unsettled(last);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Deletes the soak's topics, so the last RSS reading compares with the
/// first and a later soak starts from the same state.
async fn clean_up_topics(rest: &mut HttpClient, shared: &Shared) {
    for topic in shared.topics.all() {
        match ringcast::delete_topic(rest, &topic).await {
            Ok(200) => {}
            Ok(status) => shared.errors.record(
                "topic_delete",
                format!("clean-up of {topic}: status {status}"),
            ),
            Err(err) => shared
                .errors
                .record("topic_delete", format!("clean-up: {err:#}")),
        }
    }
}

/// The soak's settings, checked, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    pub duration_secs: f64,
    pub rate: f64,
    pub rest_rate: f64,
    pub busy_rate: f64,
    pub publishers: usize,
    pub payload_bytes: usize,
    pub topics: usize,
    pub short_lived_topics: usize,
    pub topic_churn_interval_secs: f64,
    pub subscribers: usize,
    pub lifetime_secs: [f64; 2],
    pub max_subscriptions: usize,
    pub stalled_readers: usize,
    pub stalled_receive_buffer: u32,
}

impl Load {
    fn from_args(args: &SoakArgs) -> Result<Load> {
        if !(args.rate > 0.0 && args.rate.is_finite()) {
            bail!("--rate must be a number of events per second above 0");
        }
        if args.rest_rate < 0.0
            || args.busy_rate < 0.0
            || args.rest_rate + args.busy_rate > args.rate
        {
            bail!("--rest-rate and --busy-rate are shares of --rate: each at least 0, together at most --rate");
        }
        if args.rest_rate < args.rate && args.publishers == 0 {
            bail!("--publishers must be at least 1 unless --rest-rate is all of --rate");
        }
        if args.stalled_readers > 0 && args.busy_rate == 0.0 {
            bail!("stalled readers need --busy-rate above 0 to be overrun");
        }
        if args.payload_bytes < payload::MIN_PAYLOAD_BYTES {
            bail!(
                "--payload-bytes must be at least {}",
                payload::MIN_PAYLOAD_BYTES
            );
        }
        if args.min_lifetime > args.max_lifetime {
            bail!("--min-lifetime must not exceed --max-lifetime");
        }
        if args.max_subscriptions == 0 {
            bail!("--max-subscriptions must be at least 1");
        }
        Ok(Load {
            duration_secs: args.duration.as_secs_f64(),
            rate: args.rate,
            rest_rate: args.rest_rate,
            busy_rate: args.busy_rate,
            publishers: args.publishers,
            payload_bytes: args.payload_bytes,
            topics: args.topics,
            short_lived_topics: args.short_lived_topics,
            topic_churn_interval_secs: args.topic_churn_interval.as_secs_f64(),
            subscribers: args.subscribers,
            lifetime_secs: [
                args.min_lifetime.as_secs_f64(),
                args.max_lifetime.as_secs_f64(),
            ],
            max_subscriptions: args.max_subscriptions,
            stalled_readers: args.stalled_readers,
            stalled_receive_buffer: args.stalled_receive_buffer,
        })
    }
}
