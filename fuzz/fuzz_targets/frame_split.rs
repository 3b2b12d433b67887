//! The server's frame read path split at arbitrary points: feeding
//! `FrameDecoder` a byte stream in chunks must decode the same `Incoming`
//! items, followed by the same close reason (if any), as feeding it whole;
//! and every message must parse the same whatever the split (and whatever
//! order the parses run in, since `parse_client_frame` reuses thread-local
//! scratch buffers). Each message is also checked against the oracle.
//!
//! Input layout (see `ringcast_fuzz::split`): a config byte (limit, raw or
//! generated stream, leftover), a limit byte, chunk sizes, then either the
//! raw stream or records that become mostly-valid masked frames.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringcast_fuzz::split::check(data);
});
