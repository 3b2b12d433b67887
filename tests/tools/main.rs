//! The binary's command line and `ringcast client`, run as a user would,
//! and the fuzzers' regressions and committed seeds.
//!
//! One test binary per area, so a build links the crate a few times rather
//! than once per file: each module here was a test binary of its own
//! (`tests/<module>.rs`), and its tests are unchanged.
//!
//! `fuzz_regressions` compiles the fuzz crate's oracle in, and with it the
//! `inflate` check's counting `#[global_allocator]`, which becomes this
//! binary's allocator. It counts per thread, and each test runs on a thread
//! of its own, so the `cli` and `client` tests (child processes and servers
//! on their own test threads) neither disturb its memory bound nor are
//! disturbed by it. It is also why `allocations` cannot join this binary:
//! there is one global allocator per binary.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod client;
mod fuzz_regressions;
