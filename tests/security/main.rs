//! Who may do what, and how much: API keys, JWT access tokens and their
//! claims as permissions, and publish rate limits, over real sockets
//! against a server in this process.
//!
//! One test binary per area, so a build links the crate a few times rather
//! than once per file: each module here was a test binary of its own
//! (`tests/<module>.rs`), and its tests are unchanged.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod rate_limits;
mod server_api;
mod tokens;
