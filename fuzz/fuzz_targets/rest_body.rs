//! The REST body parsers and the topic-name rule on arbitrary bytes:
//! `parse_topic_body` and `parse_message_body` never panic and agree with
//! the serde_json oracle; `is_valid_topic_name` agrees with the contract's
//! rule (1-255 characters from `A-Z a-z 0-9 _ - . :`), checked both on
//! the names `parse_topic_body` returns and on the input itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringcast_fuzz::check_rest_body(data);
});
