//! Command-line interface.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "ringcast-load",
    version,
    about = "Open-loop load generator for ringcast and NATS over WebSocket"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a load scenario against a server.
    Run(Box<RunArgs>),
    /// Draw delivered/s, p50 and p99 against offered load from result files into an SVG.
    Chart(ChartArgs),
    /// Soak a ringcast server: connection churn, stalled readers, topic
    /// churn and steady publishing for a long time, then check that its
    /// connection and subscription counts return to zero.
    Soak(Box<SoakArgs>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Target {
    Ringcast,
    Nats,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Ringcast => "ringcast",
            Target::Nats => "nats",
        }
    }

    pub fn default_url(self) -> &'static str {
        match self {
            Target::Ringcast => "ws://127.0.0.1:8080/ws",
            Target::Nats => "ws://127.0.0.1:4223",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum ScenarioKind {
    /// 1 topic, 1000 subscribers, 1 publisher.
    Fanout,
    /// 1000 topics x 10 subscribers, 10 publishers.
    Topics,
    /// 100 topics x 1 subscriber, 10 publishers at unlimited rate.
    Ingress,
    /// 10k subscribed connections over 100 topics, no traffic: server RSS per connection.
    Idle,
    /// 100 topics x 1 subscriber, 10 publishers at 10k events/s, one publish per WebSocket frame.
    Chat,
    /// 1 topic x 10 subscribers, 1 publisher sending bursts (--burst-events every --burst-interval, 1 KiB).
    Burst,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Fanout => "fanout",
            ScenarioKind::Topics => "topics",
            ScenarioKind::Ingress => "ingress",
            ScenarioKind::Idle => "idle",
            ScenarioKind::Chat => "chat",
            ScenarioKind::Burst => "burst",
        }
    }
}

/// Events published per second across all publishers, or as fast as the sockets take them.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Rate {
    PerSecond(f64),
    Unlimited,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unlimited" || s == "max" {
            return Ok(Rate::Unlimited);
        }
        match s.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Rate::PerSecond(rate)),
            _ => Err(format!(
                "expected events per second > 0 or `unlimited`, got `{s}`"
            )),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// One of `--sweep`'s rates: finite, since each step is paced.
fn parse_sweep_rate(s: &str) -> Result<f64, String> {
    match s.parse()? {
        Rate::PerSecond(rate) => Ok(rate),
        Rate::Unlimited => Err("a sweep's rates are events per second, not `unlimited`".into()),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Server to drive.
    #[arg(long, value_enum, default_value_t = Target::Ringcast)]
    pub target: Target,
    /// WebSocket URL [default: ws://127.0.0.1:8080/ws for ringcast, ws://127.0.0.1:4223 for nats].
    /// Give it more than once to spread the subscribers round-robin over several
    /// nodes of a cluster; publishers and topic creation use the first.
    #[arg(long)]
    pub url: Vec<String>,
    /// Sent as `X-API-Key` on REST requests and the WebSocket upgrade (ringcast).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Preset; every field below overrides it.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Fanout)]
    pub scenario: ScenarioKind,
    /// Number of topics (NATS: subjects) [default: from the scenario].
    #[arg(long)]
    pub topics: Option<usize>,
    /// Subscriber connections per topic, one subscription each [default: from the scenario].
    #[arg(long)]
    pub subscribers_per_topic: Option<usize>,
    /// Publisher connections, each publishing round-robin to its share of topics.
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Size of each event's JSON payload in bytes [default: 128].
    #[arg(long)]
    pub payload_bytes: Option<usize>,
    /// Events published per second across all publishers, or `unlimited`.
    #[arg(long)]
    pub rate: Option<Rate>,
    /// Measured window of a run (not used by --step).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Publishing before each measured window, not measured.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Events per burst across all publishers (burst scenario), sent as fast
    /// as the sockets take them, many publishes per write [default: 2048].
    #[arg(long)]
    pub burst_events: Option<u64>,
    /// Time from one burst's start to the next's (burst scenario) [default: 500ms].
    #[arg(long, value_parser = parse_duration)]
    pub burst_interval: Option<Duration>,
    /// Offer permessage-deflate from every connection (publishers still send
    /// plain frames) and inflate what the server compresses; the set-up fails
    /// if the server declines.
    #[arg(long)]
    pub compression: bool,
    /// Subscribers read server-sent events (`GET /sse`) instead of a
    /// WebSocket (ringcast only); publishers are unchanged.
    #[arg(long)]
    pub sse: bool,
    /// NATS publishers send each PUB in a WebSocket frame of its own, as
    /// ringcast's publishers always do, instead of a write's PUBs in one
    /// frame (chat always does).
    #[arg(long)]
    pub one_publish_per_frame: bool,
    /// NATS publishes go into a JetStream stream, as every ringcast publish
    /// is kept, deduplicated and acknowledged: memory storage over the
    /// topics' subjects, 100 events kept per subject and a 2-minute
    /// duplicate window (ringcast's `RING_BUFFER_SIZE` and `DEDUP_WINDOW`
    /// defaults), each publish with a `Nats-Msg-Id` and a reply inbox for its
    /// PubAck. Unlimited-rate ingress then counts PubAcks. The server needs
    /// JetStream enabled.
    #[arg(long)]
    pub jetstream: bool,
    /// Raise the rate step by step until loss or p99 over --max-p99 (fanout, topics, chat).
    #[arg(long)]
    pub step: bool,
    /// Offer each of these events/s in turn (comma-separated), one step
    /// each, whatever each step's latency or loss, until a step sees a
    /// connection cut: a sweep of latency against throughput.
    #[arg(long, value_delimiter = ',', value_parser = parse_sweep_rate, conflicts_with_all = ["step", "rate"])]
    pub sweep: Vec<f64>,
    /// Measured window of each step (each also gets --warmup first).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub step_duration: Duration,
    /// Rate multiplier from one step to the next.
    #[arg(long, default_value_t = 1.25)]
    pub step_factor: f64,
    /// Highest events/s a step may offer.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// A step whose p99 exceeds this is not sustained.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub max_p99: Duration,
    /// Server process id, for CPU (schedstat) and RSS from /proc. Give one per
    /// node: CPU and RSS are summed over them.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Process id of the cluster's backplane (nats-server), whose CPU per
    /// delivery is reported apart from the nodes'.
    #[arg(long)]
    pub backplane_pid: Option<u32>,
    /// Write machine-readable results here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Client runtime worker threads [default: available parallelism, which respects taskset].
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// WebSocket URL; REST requests go to the same host and port.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Sent as `X-API-Key` on REST requests and the WebSocket upgrade.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Server process id, for its RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// How long the load runs (the wind-down after it takes up to a minute more).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub duration: Duration,
    /// Write machine-readable results here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Client runtime worker threads [default: available parallelism].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Long-lived topics, besides the busy topic.
    #[arg(long, default_value_t = 50)]
    pub topics: usize,
    /// Short-lived topics alive at once.
    #[arg(long, default_value_t = 10)]
    pub short_lived_topics: usize,
    /// How often a short-lived topic is created and the oldest one deleted.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub topic_churn_interval: Duration,
    /// Events published per second in all.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Of --rate, the events per second published over REST.
    #[arg(long, default_value_t = 100.0)]
    pub rest_rate: f64,
    /// Of --rate, the events per second published to the busy topic (the stalled readers').
    #[arg(long, default_value_t = 400.0)]
    pub busy_rate: f64,
    /// WebSocket publisher connections.
    #[arg(long, default_value_t = 3)]
    pub publishers: usize,
    /// Size of each event's JSON payload in bytes.
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Churning subscriber connections open at a time.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Shortest life of a churning subscriber.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub min_lifetime: Duration,
    /// Longest life of a churning subscriber.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub max_lifetime: Duration,
    /// Most topics a churning subscriber subscribes to (each takes 1 to this many).
    #[arg(long, default_value_t = 5)]
    pub max_subscriptions: usize,
    /// Stalled readers at a time.
    #[arg(long, default_value_t = 4)]
    pub stalled_readers: usize,
    /// Receive buffer (SO_RCVBUF) of a stalled reader's socket, bytes.
    #[arg(long, default_value_t = 4096)]
    pub stalled_receive_buffer: u32,
    /// A stalled reader the server has not disconnected after this long is an error.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub stall_timeout: Duration,
    /// After the load: how long the server's connection and subscriber counts may take to reach zero.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub settle_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct ChartArgs {
    /// Output SVG file.
    #[arg(long)]
    pub out: PathBuf,
    /// Result files written by `run --json`.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}
