//! `parse_client_frame` on arbitrary bytes: never panics, and agrees with
//! the serde_json oracle (`ringcast_fuzz::oracle_client_frame`) on accept or
//! reject, the echoed `request_id`, and every decoded field, the payload
//! compared as serde_json parses it. Inputs on which ringcast deliberately
//! differs from serde_json are skipped by the oracle (see README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringcast_fuzz::check_client_message(data);
});
