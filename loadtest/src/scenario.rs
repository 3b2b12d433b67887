//! Scenario presets and the resolved plan of a run.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::{Rate, RunArgs, ScenarioKind, Target};
use crate::schedule::{Bursts, Offer};
use crate::ws::WsUrl;
use crate::{pacer, payload};

/// Everything a run needs, presets resolved and overrides applied.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    /// The nodes subscribers are spread over; publishers and REST use the first.
    pub urls: Vec<WsUrl>,
    pub api_key: Option<String>,
    pub scenario: ScenarioKind,
    pub topics: usize,
    pub subscribers_per_topic: usize,
    pub publishers: usize,
    pub payload_bytes: usize,
    pub rate: Rate,
    /// Bursts instead of a rate (burst scenario).
    pub bursts: Option<Bursts>,
    /// Every publish in a WebSocket frame of its own, NATS included (chat,
    /// `--one-publish-per-frame`); otherwise a NATS publisher packs each
    /// write's PUBs into one frame.
    pub one_publish_per_frame: bool,
    /// NATS publishes into a JetStream stream (`--jetstream`).
    pub jetstream: bool,
    /// Every connection offers `permessage-deflate` (`--compression`).
    pub compression: bool,
    /// Subscribers read `GET /sse` instead of `/ws` (`--sse`).
    pub sse: bool,
    /// Publishers' schedules are rounded up to this (see `pacer`): zero for
    /// chat, where each event goes out alone at its own time, else 1 ms.
    pub pacing_quantum: Duration,
    pub duration: Duration,
    pub warmup: Duration,
    pub step: Option<StepPlan>,
    pub max_p99: Duration,
    pub server_pids: Vec<u32>,
    pub backplane_pid: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct StepPlan {
    pub duration: Duration,
    pub rates: StepRates,
}

/// The events/s of a run's steps.
#[derive(Clone, Debug)]
pub enum StepRates {
    /// From `--rate`, times `factor` after each sustained step, up to `max_rate` (`--step`).
    Rising { factor: f64, max_rate: Option<f64> },
    /// Each in turn, sustained or not, until a connection is cut (`--sweep`).
    Listed(Vec<f64>),
}

struct Preset {
    topics: usize,
    subscribers_per_topic: usize,
    publishers: usize,
    rate: Rate,
    payload_bytes: usize,
}

fn preset(kind: ScenarioKind) -> Preset {
    match kind {
        ScenarioKind::Fanout => Preset {
            topics: 1,
            subscribers_per_topic: 1000,
            publishers: 1,
            rate: Rate::PerSecond(200.0),
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        },
        ScenarioKind::Topics => Preset {
            topics: 1000,
            subscribers_per_topic: 10,
            publishers: 10,
            rate: Rate::PerSecond(20_000.0),
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        },
        ScenarioKind::Ingress => Preset {
            topics: 100,
            subscribers_per_topic: 1,
            publishers: 10,
            rate: Rate::Unlimited,
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        },
        ScenarioKind::Idle => Preset {
            topics: 100,
            subscribers_per_topic: 100,
            publishers: 0,
            rate: Rate::Unlimited,
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        },
        ScenarioKind::Chat => Preset {
            topics: 100,
            subscribers_per_topic: 1,
            publishers: 10,
            rate: Rate::PerSecond(10_000.0),
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
        },
        // The rate is not used: bursts set the pace.
        ScenarioKind::Burst => Preset {
            topics: 1,
            subscribers_per_topic: 10,
            publishers: 1,
            rate: Rate::Unlimited,
            payload_bytes: 1024,
        },
    }
}

const DEFAULT_PAYLOAD_BYTES: usize = 128;

/// `--step` or `--sweep`, if either was given.
fn step_rates(args: &RunArgs) -> Option<StepRates> {
    if !args.sweep.is_empty() {
        Some(StepRates::Listed(args.sweep.clone()))
    } else {
        args.step.then_some(StepRates::Rising {
            factor: args.step_factor,
            max_rate: args.max_rate,
        })
    }
}
/// Twice the server's default `SUBSCRIBER_QUEUE_SIZE` (1024).
const DEFAULT_BURST_EVENTS: u64 = 2048;
const DEFAULT_BURST_INTERVAL: Duration = Duration::from_millis(500);

impl Plan {
    pub fn from_args(args: &RunArgs) -> Result<Plan> {
        let preset = preset(args.scenario);
        let urls = if args.url.is_empty() {
            vec![WsUrl::parse(args.target.default_url())?]
        } else {
            args.url
                .iter()
                .map(|url| WsUrl::parse(url))
                .collect::<Result<_>>()?
        };
        let is_burst = args.scenario == ScenarioKind::Burst;
        if !is_burst && (args.burst_events.is_some() || args.burst_interval.is_some()) {
            bail!("--burst-events and --burst-interval apply to the burst scenario only");
        }
        if is_burst && args.rate.is_some() {
            bail!("the burst scenario's pace is set by --burst-events and --burst-interval, not --rate");
        }
        let plan = Plan {
            target: args.target,
            urls,
            api_key: args.api_key.clone(),
            scenario: args.scenario,
            topics: args.topics.unwrap_or(preset.topics),
            subscribers_per_topic: args
                .subscribers_per_topic
                .unwrap_or(preset.subscribers_per_topic),
            publishers: args.publishers.unwrap_or(preset.publishers),
            payload_bytes: args.payload_bytes.unwrap_or(preset.payload_bytes),
            rate: args.rate.unwrap_or(preset.rate),
            bursts: is_burst.then(|| Bursts {
                events: args.burst_events.unwrap_or(DEFAULT_BURST_EVENTS),
                interval: args.burst_interval.unwrap_or(DEFAULT_BURST_INTERVAL),
            }),
            one_publish_per_frame: args.one_publish_per_frame
                || args.scenario == ScenarioKind::Chat,
            jetstream: args.jetstream,
            compression: args.compression,
            sse: args.sse,
            pacing_quantum: if args.scenario == ScenarioKind::Chat {
                Duration::ZERO
            } else {
                pacer::TICK
            },
            duration: args.duration,
            warmup: args.warmup,
            step: step_rates(args).map(|rates| StepPlan {
                duration: args.step_duration,
                rates,
            }),
            max_p99: args.max_p99,
            server_pids: args.server_pid.clone(),
            backplane_pid: args.backplane_pid,
        };
        plan.validate()?;
        Ok(plan)
    }

    fn validate(&self) -> Result<()> {
        if self.topics == 0 || self.subscribers_per_topic == 0 {
            bail!("--topics and --subscribers-per-topic must be at least 1");
        }
        if self.sse && (self.target != Target::Ringcast || self.compression) {
            bail!("--sse is for ringcast, without --compression");
        }
        if self.jetstream && self.target != Target::Nats {
            bail!("--jetstream is for nats: every ringcast publish is kept and acknowledged");
        }
        if self.is_idle() {
            if self.step.is_some() {
                bail!("--step and --sweep do not apply to the idle scenario");
            }
            return Ok(());
        }
        if self.payload_bytes < payload::MIN_PAYLOAD_BYTES {
            bail!(
                "--payload-bytes must be at least {}",
                payload::MIN_PAYLOAD_BYTES
            );
        }
        if self.publishers == 0 {
            bail!("--publishers must be at least 1");
        }
        if let Some(bursts) = self.bursts {
            if bursts.events == 0 || bursts.interval.is_zero() {
                bail!("--burst-events and --burst-interval must be greater than 0");
            }
            if self.step.is_some() {
                bail!("--step and --sweep do not apply to the burst scenario");
            }
        }
        if let Some(step) = &self.step {
            match &step.rates {
                StepRates::Rising { factor, .. } => {
                    if self.rate == Rate::Unlimited {
                        bail!("--step needs a finite --rate to start from");
                    }
                    if *factor <= 1.0 {
                        bail!("--step-factor must be greater than 1");
                    }
                }
                StepRates::Listed(rates) => {
                    if !rates.is_sorted() {
                        bail!("--sweep's rates must be in rising order");
                    }
                }
            }
        }
        Ok(())
    }

    pub fn is_idle(&self) -> bool {
        self.scenario == ScenarioKind::Idle
    }

    /// The load of a run's single phase (step mode starts from `rate` instead).
    pub fn offer(&self) -> Offer {
        match self.bursts {
            Some(bursts) => Offer::Bursts(bursts),
            None => Offer::from_rate(self.rate),
        }
    }

    /// Whether the server answers each publish: ringcast always, NATS
    /// with `--jetstream` (its PubAck).
    pub fn acknowledged(&self) -> bool {
        self.target == Target::Ringcast || self.jetstream
    }

    pub fn connections(&self) -> usize {
        self.topics * self.subscribers_per_topic
    }

    /// Where publishers connect and topics are created.
    pub fn publisher_url(&self) -> &WsUrl {
        &self.urls[0]
    }

    /// The node of subscriber connection `index`: round-robin, so every node
    /// gets an even share of every topic's subscribers.
    pub fn subscriber_url(&self, index: usize) -> &WsUrl {
        &self.urls[index % self.urls.len()]
    }

    pub fn topic_names(&self) -> Vec<String> {
        (0..self.topics).map(|i| format!("load-{i}")).collect()
    }

    /// Topics publisher `index` publishes to, round-robin. With more publishers
    /// than topics, several publishers share a topic.
    pub fn topics_of_publisher(&self, index: usize) -> Vec<usize> {
        if self.publishers > self.topics {
            return vec![index % self.topics];
        }
        (index..self.topics).step_by(self.publishers).collect()
    }

    /// How far apart the counters `n` of consecutive events on `topic` from
    /// one publisher are: a publisher numbers all its events and sends them
    /// round-robin over its topics.
    pub fn counter_stride(&self, topic: usize) -> u64 {
        // Idle runs have no publishers, hence no counters to follow.
        let Some(publisher) = topic.checked_rem(self.publishers) else {
            return 1;
        };
        self.topics_of_publisher(publisher).len() as u64
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn try_plan(args: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(["ringcast-load", "run"].iter().chain(args)).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!("parsed a run");
        };
        Plan::from_args(&args)
    }

    fn plan(args: &[&str]) -> Plan {
        try_plan(args).unwrap()
    }

    #[test]
    fn chat_is_one_publish_per_frame_at_10k() {
        let chat = plan(&["--scenario", "chat", "--target", "nats"]);
        assert_eq!(
            (chat.topics, chat.subscribers_per_topic, chat.publishers),
            (100, 1, 10)
        );
        assert_eq!(
            (chat.payload_bytes, chat.offer()),
            (128, Offer::Paced(10_000.0))
        );
        assert!(chat.one_publish_per_frame);
        assert_eq!(chat.pacing_quantum, Duration::ZERO);
        let fanout = plan(&["--target", "nats"]);
        assert!(!fanout.one_publish_per_frame);
        assert_eq!(fanout.pacing_quantum, pacer::TICK);
        // Step mode finds chat's capacity.
        assert!(try_plan(&["--scenario", "chat", "--step", "--rate", "20000"]).is_ok());
    }

    #[test]
    fn ingress_can_send_one_publish_per_frame() {
        let batched = plan(&["--scenario", "ingress", "--target", "nats"]);
        assert!(!batched.one_publish_per_frame);
        let fair = plan(&[
            "--scenario",
            "ingress",
            "--target",
            "nats",
            "--one-publish-per-frame",
        ]);
        assert!(fair.one_publish_per_frame);
        assert_eq!(fair.offer(), Offer::Unlimited);
        // It changes nothing else: the 1 ms quantum stays.
        assert_eq!(fair.pacing_quantum, pacer::TICK);
    }

    #[test]
    fn compression_is_off_unless_asked_for() {
        assert!(!plan(&[]).compression);
        let compressed = plan(&[
            "--compression",
            "--subscribers-per-topic",
            "1000",
            "--payload-bytes",
            "4096",
        ]);
        assert!(compressed.compression);
        assert_eq!(
            (compressed.subscribers_per_topic, compressed.payload_bytes),
            (1000, 4096)
        );
    }

    #[test]
    fn event_streams_are_for_ringcast_without_compression() {
        assert!(!plan(&[]).sse);
        assert!(plan(&["--sse", "--subscribers-per-topic", "1000"]).sse);
        assert!(try_plan(&["--sse", "--target", "nats"]).is_err());
        assert!(try_plan(&["--sse", "--compression"]).is_err());
    }

    #[test]
    fn burst_defaults_and_overrides() {
        let burst = plan(&["--scenario", "burst"]);
        assert_eq!(
            (burst.topics, burst.subscribers_per_topic, burst.publishers),
            (1, 10, 1)
        );
        assert_eq!(burst.payload_bytes, 1024);
        assert_eq!(
            burst.offer(),
            Offer::Bursts(Bursts {
                events: 2048,
                interval: Duration::from_millis(500)
            })
        );
        let custom = plan(&[
            "--scenario",
            "burst",
            "--burst-events",
            "128",
            "--burst-interval",
            "1s",
        ]);
        assert_eq!(custom.offer().events_per_sec(), Some(128.0));
    }

    #[test]
    fn burst_flags_are_checked() {
        assert!(try_plan(&["--burst-events", "10"]).is_err());
        assert!(try_plan(&["--scenario", "burst", "--rate", "100"]).is_err());
        assert!(try_plan(&["--scenario", "burst", "--step"]).is_err());
        assert!(try_plan(&["--scenario", "burst", "--burst-events", "0"]).is_err());
        assert!(try_plan(&["--scenario", "burst", "--burst-interval", "0s"]).is_err());
    }

    #[test]
    fn a_sweep_lists_its_rates() {
        let sweep = plan(&["--sweep", "200,500,6000", "--step-duration", "3s"]);
        let step = sweep.step.unwrap();
        assert_eq!(step.duration, Duration::from_secs(3));
        assert!(matches!(step.rates, StepRates::Listed(rates) if rates == [200.0, 500.0, 6000.0]));
        assert!(matches!(
            plan(&["--step", "--rate", "200"]).step.unwrap().rates,
            StepRates::Rising {
                factor: 1.25,
                max_rate: None
            }
        ));
        assert!(try_plan(&["--sweep", "500,200"]).is_err());
        assert!(try_plan(&["--scenario", "idle", "--sweep", "200"]).is_err());
        for refused in [
            &["--sweep", "200,unlimited"][..],
            &["--sweep", "200,0"],
            &["--sweep", "200", "--step"],
            &["--sweep", "200", "--rate", "200"],
        ] {
            let args = ["ringcast-load", "run"].iter().chain(refused);
            assert!(Cli::try_parse_from(args).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn one_url_by_default() {
        let plan = plan(&[]);
        assert_eq!(plan.urls.len(), 1);
        assert_eq!(plan.publisher_url().port, 8080);
        assert_eq!(plan.subscriber_url(7).port, 8080);
    }

    #[test]
    fn subscribers_alternate_between_nodes() {
        let plan = plan(&[
            "--url",
            "ws://127.0.0.1:9001/ws",
            "--url",
            "ws://127.0.0.1:9002/ws",
            "--server-pid",
            "10",
            "--server-pid",
            "11",
        ]);
        assert_eq!(plan.publisher_url().port, 9001);
        let ports: Vec<u16> = (0..4).map(|i| plan.subscriber_url(i).port).collect();
        assert_eq!(ports, [9001, 9002, 9001, 9002]);
        assert_eq!(plan.server_pids, [10, 11]);
    }

    #[test]
    fn counter_stride_is_the_topic_publishers_topic_count() {
        // fanout: one publisher, one topic.
        assert_eq!(plan(&[]).counter_stride(0), 1);
        // topics: 10 publishers over 1000 topics, 100 each.
        let topics = plan(&["--scenario", "topics"]);
        assert_eq!(topics.counter_stride(0), 100);
        assert_eq!(topics.counter_stride(999), 100);
        // Uneven shares: publisher 0 has topics 0, 3, 6; publisher 1 has 1, 4.
        let uneven = plan(&["--topics", "7", "--publishers", "3"]);
        assert_eq!(uneven.counter_stride(6), 3);
        assert_eq!(uneven.counter_stride(4), 2);
        // More publishers than topics: each publisher has one topic.
        assert_eq!(
            plan(&["--topics", "2", "--publishers", "5"]).counter_stride(1),
            1
        );
        assert_eq!(plan(&["--scenario", "idle"]).counter_stride(3), 1);
    }
}
