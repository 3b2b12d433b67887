//! The WebSocket protocol over real sockets, against a server in this
//! process: the handshake, closing, bad input, delivery, abuse limits,
//! recovery after a reconnect, presence, the connection lifecycle,
//! backpressure, the error codes of both transports, server-sent events,
//! and a WebSocket route with a handler of the embedder's.
//!
//! One test binary per area, so a build links the crate a few times rather
//! than once per file: each module here was a test binary of its own
//! (`tests/<module>.rs`), and its tests are unchanged. `backpressure` is
//! here rather than beside `send_path`, which stays a binary of its own
//! (see its module doc) that no other test may run beside.

#[path = "../common/mod.rs"]
mod common;

mod backpressure;
mod bad_input;
mod close;
mod dedup;
mod delivery;
mod error_codes;
mod handshake;
mod join_leave;
mod lifecycle;
mod limits;
mod presence;
mod recovery;
mod route;
mod server_api;
mod sse;
