//! ringcast: an in-memory WebSocket + REST publish/subscribe broker built
//! for fan-out throughput.
//!
//! Module map, from the wire inwards:
//!
//! - [`server`]: the listener, one hyper service for REST and the upgrade,
//!   graceful shutdown.
//! - [`rest`]: REST handlers (topics, publish over HTTP, a topic's history,
//!   health, stats, metrics, the API documents) and the table of routes.
//! - [`cors`]: CORS headers for REST (`CORS_ALLOWED_ORIGINS`).
//! - [`api_docs`]: the OpenAPI and AsyncAPI documents, embedded.
//! - [`pages`]: the `/docs` and `/dashboard` browser pages, embedded.
//! - [`ws`]: a WebSocket connection's life: the upgrade, the reader (client
//!   frames to broker calls), how the connection closes.
//! - [`frame_reader`]: client frames decoded with no buffer held while
//!   idle.
//! - [`send`]: the send path: each connection's bounded outbox, wake-ups,
//!   batching, the slow-consumer rule and the writer task (vectored writes,
//!   `WRITE_TIMEOUT`, heartbeat).
//! - [`auth`]: API keys (`X-API-Key` or `Authorization: Bearer`),
//!   compared in constant time; access tokens (JWT) and the permissions
//!   they grant; allowed origins.
//! - [`rate_limit`]: publish rate limits, a lock-free token bucket per
//!   WebSocket connection and per REST credential.
//! - [`protocol`]: client frame parsing and server frame encoding.
//! - [`raw_json`]: client JSON validated, and the members the protocol
//!   reads located, in one scan.
//! - [`broker`]: topics in a sharded map, replay rings, the fan-out, and
//!   recovery (each topic's epoch and what its ring may have lost).
//! - [`presence`]: who is subscribed to what (`GET /subscriptions`,
//!   `GET /topics/{name}/subscribers`), written off the runtime.
//! - [`cluster`]: cluster mode: topics and events shared through NATS
//!   JetStream, fed into the same fan-out; presence gathered from every
//!   node.
//! - [`metrics`]: process-wide counters and lock-free histograms.
//! - [`prometheus`]: those counters as `GET /metrics` (Prometheus text).
//! - [`state`]: the shared state, in one `Arc`.
//! - [`config`]: flags with environment fallbacks.
//! - [`token_command`]: `ringcast token`, which mints an access token.
//! - [`client_command`]: `ringcast client`, an interactive client: command
//!   lines in, server frames out as JSON lines.

pub mod api_docs;
pub mod auth;
pub mod broker;
pub mod client_command;
pub mod cluster;
pub mod config;
pub mod cors;
pub mod metrics;
pub mod pages;
pub mod presence;
pub mod prometheus;
pub mod rate_limit;
pub mod rest;
pub mod send;
pub mod server;
pub mod state;
pub mod token_command;
pub mod wire;
pub mod ws;

pub use config::Config;
pub use server::Server;
