//! ringcast: an in-memory WebSocket + REST publish/subscribe broker built
//! for fan-out throughput.
//!
//! The data path, and the modules it runs through:
//!
//! ```text
//! socket ─ ws::frame_reader ─ ws::session ──────┐
//! REST ─ http::service ─ http::handlers, sse ────┼─ node ─ broker ─ send::outbox ─ send::writer ─ socket
//! NATS backplane ─ cluster ─ Broker::deliver ────┘
//! ```
//!
//! From the listener inwards; each module imports only those below it, and
//! the leaves (`config`, `metrics`, `shutdown`, `auth`, `rate_limit`,
//! `error`) import no module that imports them back:
//!
//! - `server`: the listener, one hyper service for REST and the upgrade
//!   on one port, and the shutdown sequence.
//! - [`http`]: REST: routes and permissions, handlers, responses, CORS,
//!   the API documents, `GET /metrics`, the browser pages.
//! - [`ws`]: a WebSocket connection: the upgrade, the frame reader, the
//!   session (client requests to node calls), the connection's life.
//! - [`sse`]: a server-sent event stream (`GET /sse`): its query and
//!   cursor, the SSE framing around shared event frames, its transport
//!   for the send path's write loop, and the response body.
//! - `error`: every way a request fails, and the one map to its
//!   [`wire::error::ErrorCode`], for REST, WebSocket and metrics alike.
//! - `node`: the broker as the transports see it: the one place where a
//!   single node and a cluster differ.
//! - `cluster`: cluster mode: topics and events shared through NATS
//!   JetStream and fed into the same fan-out; presence from every node.
//! - `presence`: who is subscribed to what, written off the runtime.
//! - `connections`: every open connection by id, with its token's `sub`,
//!   and the server API's disconnect and unsubscribe acting on them.
//! - [`broker`]: topics in a sharded map, each topic's log (sequence
//!   numbers, replay ring, recovery) and the fan-out; `Broker::deliver` is
//!   the one entry point for an event, local or from the backplane.
//! - [`send`]: the send path: an event's shared frames, each connection's
//!   bounded outbox, the writer task (vectored writes, `WRITE_TIMEOUT`,
//!   heartbeat); the whole backpressure rule is stated in its module doc.
//! - [`wire`]: bytes on the wire, no I/O: the JSON scan, client requests,
//!   server frames, WebSocket frame headers, timestamps, close reasons,
//!   the deflate codec and its negotiation, error codes.
//! - [`auth`], `rate_limit`: API keys, access tokens and the permissions
//!   they grant, allowed origins; publish rate limits.
//! - [`metrics`]: process-wide counters and lock-free histograms.
//! - `shutdown`: the `Shutdown` handle every task listens to.
//! - `sync`: the one way ringcast takes a lock.
//! - [`config`]: flags with environment fallbacks.
//! - [`token_command`], [`client_command`]: the `ringcast token` and
//!   `ringcast client` subcommands.

pub mod auth;
pub mod broker;
pub mod client_command;
mod cluster;
pub mod config;
mod connections;
mod error;
pub mod http;
pub mod metrics;
mod node;
mod presence;
mod rate_limit;
pub mod send;
mod server;
pub mod shutdown;
pub mod sse;
mod sync;
pub mod token_command;
pub mod wire;
pub mod ws;

pub use config::Config;
pub use server::Server;
pub use shutdown::Shutdown;
