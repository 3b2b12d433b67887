//! The REST API over real sockets, against a server in this process: its
//! routes, the OpenAPI and AsyncAPI documents held to them, CORS and the
//! Prometheus `/metrics` endpoint.
//!
//! One test binary per area, so a build links the crate a few times rather
//! than once per file: each module here was a test binary of its own
//! (`tests/<module>.rs`), and its tests are unchanged.

#[path = "../common/mod.rs"]
mod common;

mod api_docs;
mod cors;
mod metrics;
mod rest_api;
mod server_api;
mod topic_options;
