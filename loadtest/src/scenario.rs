//! Scenario presets and the resolved plan of a run.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::{Rate, RunArgs, ScenarioKind, Target};
use crate::payload;
use crate::ws::WsUrl;

/// Everything a run needs, presets resolved and overrides applied.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    pub url: WsUrl,
    pub api_key: Option<String>,
    pub scenario: ScenarioKind,
    pub topics: usize,
    pub subscribers_per_topic: usize,
    pub publishers: usize,
    pub payload_bytes: usize,
    pub rate: Rate,
    pub duration: Duration,
    pub warmup: Duration,
    pub step: Option<StepPlan>,
    pub max_p99: Duration,
    pub server_pid: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
pub struct StepPlan {
    pub duration: Duration,
    pub factor: f64,
    pub max_rate: Option<f64>,
}

struct Preset {
    topics: usize,
    subscribers_per_topic: usize,
    publishers: usize,
    rate: Rate,
}

fn preset(kind: ScenarioKind) -> Preset {
    match kind {
        ScenarioKind::Fanout => Preset {
            topics: 1,
            subscribers_per_topic: 1000,
            publishers: 1,
            rate: Rate::PerSecond(200.0),
        },
        ScenarioKind::Topics => Preset {
            topics: 1000,
            subscribers_per_topic: 10,
            publishers: 10,
            rate: Rate::PerSecond(20_000.0),
        },
        ScenarioKind::Ingress => Preset {
            topics: 100,
            subscribers_per_topic: 1,
            publishers: 10,
            rate: Rate::Unlimited,
        },
        ScenarioKind::Idle => Preset {
            topics: 100,
            subscribers_per_topic: 100,
            publishers: 0,
            rate: Rate::Unlimited,
        },
    }
}

const DEFAULT_PAYLOAD_BYTES: usize = 128;

impl Plan {
    pub fn from_args(args: &RunArgs) -> Result<Plan> {
        let preset = preset(args.scenario);
        let url = WsUrl::parse(
            args.url
                .as_deref()
                .unwrap_or_else(|| args.target.default_url()),
        )?;
        let plan = Plan {
            target: args.target,
            url,
            api_key: args.api_key.clone(),
            scenario: args.scenario,
            topics: args.topics.unwrap_or(preset.topics),
            subscribers_per_topic: args
                .subscribers_per_topic
                .unwrap_or(preset.subscribers_per_topic),
            publishers: args.publishers.unwrap_or(preset.publishers),
            payload_bytes: args.payload_bytes.unwrap_or(DEFAULT_PAYLOAD_BYTES),
            rate: args.rate.unwrap_or(preset.rate),
            duration: args.duration,
            warmup: args.warmup,
            step: args.step.then_some(StepPlan {
                duration: args.step_duration,
                factor: args.step_factor,
                max_rate: args.max_rate,
            }),
            max_p99: args.max_p99,
            server_pid: args.server_pid,
        };
        plan.validate()?;
        Ok(plan)
    }

    fn validate(&self) -> Result<()> {
        if self.topics == 0 || self.subscribers_per_topic == 0 {
            bail!("--topics and --subscribers-per-topic must be at least 1");
        }
        if self.is_idle() {
            if self.step.is_some() {
                bail!("--step does not apply to the idle scenario");
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
        if let Some(step) = self.step {
            if self.rate == Rate::Unlimited {
                bail!("--step needs a finite --rate to start from");
            }
            if step.factor <= 1.0 {
                bail!("--step-factor must be greater than 1");
            }
        }
        Ok(())
    }

    pub fn is_idle(&self) -> bool {
        self.scenario == ScenarioKind::Idle
    }

    pub fn connections(&self) -> usize {
        self.topics * self.subscribers_per_topic
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
}
