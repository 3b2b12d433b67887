//! Runtime configuration: every setting is a command-line flag with an
//! environment-variable fallback, named as in the wire contract; a `.env`
//! file fills in the variables the environment lacks.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What the broker does when a subscriber's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Send `SLOW_CONSUMER`, then close the connection with 1008.
    Disconnect,
    /// Drop the oldest queued events to make room for the new one.
    DropOldest,
}

impl std::fmt::Display for SlowConsumerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// Whether `permessage-deflate` is accepted when a client offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    On,
    Off,
}

/// ringcast: an in-memory WebSocket + REST publish/subscribe broker.
#[derive(Clone, Debug, Parser)]
#[command(name = "ringcast", version, about)]
pub struct Config {
    /// Address or host name to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Accepted API keys, comma-separated; unset turns authentication off.
    #[arg(long, env = "API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<String>,

    /// HS256 secret that access tokens are signed with; setting it (or JWT_PUBLIC_KEY) lets
    /// clients present a JWT instead of an API key.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// PEM file of the public key access tokens are signed with (RSA: RS256, P-256: ES256).
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// When set, a token's `aud` claim must equal it.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on a token's `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// Publishes allowed per WebSocket connection, and per credential (per peer address
    /// without auth) over REST, e.g. `1000/s` or `600/m`; unset = no limit.
    #[arg(long, env = "PUBLISH_RATE_LIMIT")]
    pub publish_rate_limit: Option<Rate>,

    /// Publishes allowed at once above the rate (the token bucket's size); default one
    /// second's worth.
    #[arg(long, env = "PUBLISH_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub publish_burst: Option<u32>,

    /// Per-subscriber queue bound, in events.
    #[arg(long, env = "SUBSCRIBER_QUEUE_SIZE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub subscriber_queue_size: u32,

    /// What to do with a subscriber whose queue is full.
    #[arg(long, env = "SLOW_CONSUMER_POLICY", value_enum, default_value_t = SlowConsumerPolicy::Disconnect)]
    pub slow_consumer_policy: SlowConsumerPolicy,

    /// Events kept per topic for `last_n` replay.
    #[arg(long, env = "RING_BUFFER_SIZE", default_value_t = 100)]
    pub ring_buffer_size: u32,

    /// A publish whose message id was already published to the same topic within this window
    /// is answered with the original's `seq` and `"duplicate":true`, and not delivered again
    /// (in cluster mode across nodes). `0s` turns it off.
    #[arg(long, env = "DEDUP_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub dedup_window: Duration,
    /// Largest `history_size` a topic may be created with (`POST /topics`).
    #[arg(long, env = "MAX_HISTORY_SIZE", default_value_t = 100_000)]
    pub max_history_size: u32,

    /// Period of the `info` heartbeat and WebSocket ping; peers silent for two periods are closed.
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub heartbeat_interval: Duration,

    /// Largest accepted WebSocket message or REST body, in bytes.
    #[arg(long, env = "MAX_MESSAGE_SIZE", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_message_size: u32,

    /// `permessage-deflate` (RFC 7692) for clients that offer it: `on` or `off`.
    #[arg(long, env = "COMPRESSION", value_enum, default_value_t = Compression::On)]
    pub compression: Compression,

    /// Events shorter than this, in bytes of JSON, go out uncompressed.
    #[arg(long, env = "COMPRESSION_MIN_BYTES", default_value_t = 256)]
    pub compression_min_bytes: usize,

    /// Budget for flushing queued events on SIGTERM/SIGINT before sockets are closed.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Per-subscriber queue bound, in encoded bytes of pending events (`KiB`, `MiB` accepted);
    /// whichever of it and SUBSCRIBER_QUEUE_SIZE is reached first applies the policy.
    #[arg(long, env = "SUBSCRIBER_QUEUE_BYTES", default_value = "16MiB", value_parser = parse_byte_size)]
    pub subscriber_queue_bytes: ByteSize,

    /// Opt-in write coalescing: a connection that wrote less than this long ago lets frames
    /// gather for the rest of the window (fewer syscalls for wide fan-out, at up to this much
    /// added latency); reaching half a queue bound ends the wait. 0 writes as soon as it can.
    #[arg(long, env = "COALESCE_WINDOW", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub coalesce_window: Duration,

    /// A connection with frames waiting whose socket accepts no byte for this long is cut as a
    /// slow consumer (SLOW_CONSUMER, close 1008), under either policy.
    #[arg(long, env = "WRITE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub write_timeout: Duration,

    /// Most open WebSocket connections; further upgrades get 503 before upgrading.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most topics one connection may subscribe to; beyond it `subscribe` gets `BAD_REQUEST`.
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_subscriptions_per_connection: u32,

    /// Most topics that may exist at once; beyond it `POST /topics` gets 400 `TOPIC_LIMIT`.
    #[arg(long, env = "MAX_TOPICS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_topics: u32,

    /// Deadline for a new connection's request headers (the upgrade request included).
    #[arg(long, env = "UPGRADE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub upgrade_timeout: Duration,

    /// Deadline for a REST request's body once its headers arrived; missed gets 408.
    #[arg(long, env = "BODY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub body_timeout: Duration,

    /// Most open HTTP connections (REST clients, and upgrades not yet done); further
    /// connections get 503 `TOO_MANY_CONNECTIONS` and are closed. WebSockets count against
    /// MAX_CONNECTIONS instead.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_connections: u32,

    /// Deadline for a WebSocket's first frame after the upgrade; missed closes with 1008.
    #[arg(long, env = "FIRST_FRAME_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub first_frame_timeout: Duration,

    /// Origins browsers may use the broker from, comma-separated (e.g. `https://app.example.com`);
    /// when set, an upgrade or REST request carrying any other `Origin` gets 403. Unset allows
    /// every origin.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Origins whose browser pages may read REST responses (CORS), comma-separated; responses
    /// to a listed `Origin` carry `Access-Control-Allow-Origin`, and preflights are answered.
    /// Unset sends no CORS headers. Set ALLOWED_ORIGINS too: that list refuses the others.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Also export per-topic series on `/metrics` (`true`/`false`); off by default, since
    /// topics can number 100k and each adds series.
    #[arg(long, env = "METRICS_PER_TOPIC", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_per_topic: bool,

    /// NATS server (with JetStream) through which this node joins a cluster,
    /// e.g. `nats://nats:4222`; several URLs may be given comma-separated.
    /// Unset runs a single node.
    #[arg(long, env = "CLUSTER_NATS_URL")]
    pub cluster_nats_url: Option<String>,

    /// Cluster mode: how long a deleted topic's events stay in the stream before they are
    /// purged. A node that falls further behind than this takes the purge for events it missed.
    #[arg(long, env = "CLUSTER_PURGE_DELAY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub cluster_purge_delay: Duration,

    /// Cluster mode: how long `GET /subscriptions` and `GET /topics/{name}/subscribers` wait for
    /// the other nodes' answers; a node that has not answered by then is named in
    /// `missing_nodes` (the answer is `partial`).
    #[arg(long, env = "CLUSTER_PRESENCE_TIMEOUT", default_value = "1s", value_parser = parse_positive_duration)]
    pub cluster_presence_timeout: Duration,

    /// Cluster mode: JetStream replicas of every stream ringcast creates (events, topic
    /// registry, node list), 1 to 5. More than the NATS cluster can place stops the node at
    /// start; a stream found with fewer replicas is raised to this many.
    #[arg(long, env = "CLUSTER_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub cluster_stream_replicas: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Print an HS256 access token signed with JWT_SECRET, for testing and scripts.
    Token(TokenArgs),
    /// Connect to a broker and send it commands typed or piped in; print each server frame
    /// as one line of JSON.
    Client(ClientArgs),
}

/// Where `ringcast client` connects, and with which credential.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// The broker's WebSocket URL.
    #[arg(default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// API key, sent as `X-API-Key`.
    #[arg(long, conflicts_with = "token")]
    pub api_key: Option<String>,
    /// Access token (or API key), sent as `Authorization: Bearer`.
    #[arg(long)]
    pub token: Option<String>,
}

/// The claims `ringcast token` signs.
#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// The `sub` claim: who holds the token.
    #[arg(long)]
    pub sub: Option<String>,
    /// Topic pattern the holder may subscribe to (`*` = any run of characters); repeatable.
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// Topic pattern the holder may publish to; repeatable.
    #[arg(long)]
    pub publish: Vec<String>,
    /// Topic management, `/topics`, `/stats`, `/metrics`.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = parse_positive_duration)]
    pub ttl: Duration,
}

impl Config {
    /// The process's configuration: a `.env` file in the working directory
    /// first sets the variables that are not already set (real environment
    /// variables win), then the command line is parsed. Call it before any
    /// thread starts, since it changes the process environment.
    pub fn load() -> Result<Self, dotenvy::Error> {
        match dotenvy::from_path(".env") {
            Err(err) if !err.not_found() => return Err(err),
            _ => {}
        }
        Ok(Self::parse())
    }

    /// A configuration parsed from the given flags (without the program
    /// name); environment fallbacks still apply. For embedding and tests.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(
            std::iter::once("ringcast".into()).chain(args.into_iter().map(Into::into)),
        )
    }
}

/// A size in bytes, from `1048576`, `512KiB` or `16MiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

fn parse_byte_size(text: &str) -> Result<ByteSize, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (use B, KiB, MiB or GiB)"
            ))
        }
    };
    let count: usize = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 16MiB"))?;
    match count.checked_mul(multiplier) {
        Some(0) => Err("must be greater than zero".into()),
        Some(bytes) => Ok(ByteSize(bytes)),
        None => Err(format!("'{text}' is too large")),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be greater than zero".into()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}

/// A rate such as `1000/s`, `600/m`, `3600/h` or `5/10s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("'{text}' is not a rate such as 1000/s or 600/m");
        let (count, period) = text.trim().split_once('/').ok_or_else(usage)?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        let period = match period.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| usage())?,
        };
        if count == 0 || period.is_zero() {
            return Err("a rate must be greater than zero".into());
        }
        Ok(Self { count, period })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("0.0.0.0", 8080));
        assert!(config.api_key.is_empty());
        assert_eq!(config.subscriber_queue_size, 1024);
        assert_eq!(config.slow_consumer_policy, SlowConsumerPolicy::Disconnect);
        assert_eq!(config.compression, Compression::On);
        assert_eq!(config.compression_min_bytes, 256);
        assert_eq!(config.ring_buffer_size, 100);
        assert_eq!(config.dedup_window, Duration::from_secs(120));
        assert_eq!(config.max_history_size, 100_000);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.max_message_size, 1_048_576);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.max_connections, 50_000);
        assert_eq!(config.max_subscriptions_per_connection, 1024);
        assert_eq!(config.max_topics, 100_000);
        assert_eq!(config.upgrade_timeout, Duration::from_secs(10));
        assert_eq!(config.first_frame_timeout, Duration::from_secs(10));
        assert!(config.allowed_origins.is_empty());
        assert_eq!(config.cluster_nats_url, None);
        assert_eq!(config.cluster_purge_delay, Duration::from_secs(60));
        assert_eq!(config.cluster_presence_timeout, Duration::from_secs(1));
        assert_eq!(config.cluster_stream_replicas, 1);
        assert_eq!(config.subscriber_queue_bytes, ByteSize(16 << 20));
        assert_eq!(config.write_timeout, Duration::from_secs(10));
        assert_eq!(config.coalesce_window, Duration::ZERO);
        assert!(config.cors_allowed_origins.is_empty());
        assert!(!config.metrics_per_topic);
        assert_eq!((&config.jwt_secret, &config.jwt_public_key), (&None, &None));
        assert_eq!(config.jwt_leeway, Duration::ZERO);
        assert_eq!(config.publish_rate_limit, None);
        assert_eq!(config.publish_burst, None);
        assert!(config.command.is_none());
    }

    #[test]
    fn durations_and_lists_parse() {
        let config = Config::from_args([
            "--heartbeat-interval",
            "500ms",
            "--shutdown-timeout",
            "2m",
            "--api-key",
            "a,b",
            "--slow-consumer-policy",
            "drop_oldest",
        ])
        .unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(120));
        assert_eq!(config.api_key, ["a", "b"]);
        assert_eq!(config.slow_consumer_policy, SlowConsumerPolicy::DropOldest);
        for (args, per_topic) in [
            (&["--metrics-per-topic"][..], true),
            (&["--metrics-per-topic=false"][..], false),
            (&["--metrics-per-topic=on"][..], true),
        ] {
            assert_eq!(
                Config::from_args(args).unwrap().metrics_per_topic,
                per_topic,
                "{args:?}"
            );
        }
        assert!(Config::from_args(["--heartbeat-interval", "0s"]).is_err());
        for (replicas, valid) in [("0", false), ("3", true), ("5", true), ("6", false)] {
            let parsed = Config::from_args(["--cluster-stream-replicas", replicas]);
            assert_eq!(parsed.is_ok(), valid, "{replicas}");
        }
        assert!(Config::from_args(["--subscriber-queue-size", "0"]).is_err());
        for (text, bytes) in [
            ("1048576", 1 << 20),
            ("512KiB", 512 << 10),
            ("16MiB", 16 << 20),
        ] {
            let config = Config::from_args(["--subscriber-queue-bytes", text]).unwrap();
            assert_eq!(config.subscriber_queue_bytes, ByteSize(bytes), "{text}");
        }
        for bad in ["0", "16MB", "MiB", "-1", "99999999999999999999GiB"] {
            assert!(
                Config::from_args(["--subscriber-queue-bytes", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rates_parse() {
        for (text, count, secs) in [("1000/s", 1000, 1), ("600/m", 600, 60), ("5/10s", 5, 10)] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!(
                rate,
                Rate {
                    count,
                    period: Duration::from_secs(secs)
                },
                "{text}"
            );
        }
        for bad in ["0/s", "10", "x/s", "10/fortnight", "-1/s", "10/0s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
