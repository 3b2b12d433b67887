//! The inflate path of compressed client messages (`permessage-deflate`):
//! `wire::deflate::inflate` on arbitrary bytes and limits never panics,
//! never holds more memory than its limit and keeps the limit exactly;
//! messages compressed by a client or by the server inflate back; and the
//! frame reader, given the bytes as a compressed message, agrees.
//!
//! Input layout: see `ringcast_fuzz::inflate`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringcast_fuzz::inflate::check(data);
});
