//! Regressions found by the cargo-fuzz targets in `fuzz/` (see
//! `fuzz/README.md`), with their inputs inline, and a replay of every
//! committed seed in `fuzz/corpus/*` through the targets' checks.
//!
//! The seed replay compiles the fuzz crate's oracle (`fuzz/src/lib.rs`, a
//! small serde_json reference parser) into this test, so the seeds get the
//! same checks as under the fuzzer: no panic, and agreement with the oracle
//! except on the deliberate differences listed in the fuzz README. It also
//! brings the `inflate` check's counting allocator, which becomes this test
//! binary's global allocator, so the seeds' memory bound is checked here too.

use ringcast::wire::request::{parse_client_frame, parse_message_body, Request};

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod oracle;

const ID: &str = "550e8400-e29b-41d4-a716-446655440000";

fn frame_is_rejected(input: &[u8]) -> bool {
    parse_client_frame(&mut input.to_vec()).is_err()
}

fn body_is_rejected(input: &[u8]) -> bool {
    parse_message_body(&mut input.to_vec()).is_err()
}

fn publish(payload: &[u8]) -> Vec<u8> {
    let head = format!(r#"{{"type":"publish","topic":"t","message":{{"id":"{ID}","payload":"#);
    [head.as_bytes(), payload, b"}}"].concat()
}

fn rest_body(payload: &[u8]) -> Vec<u8> {
    let head = format!(r#"{{"id":"{ID}","payload":"#);
    [head.as_bytes(), payload, b"}"].concat()
}

/// Bug 1, found by `client_message`: simd-json 0.17 takes a NUL byte as
/// the end of a number or literal and skips everything after it up to the
/// next `,` `}` `]` or whitespace. ringcast accepted such frames and,
/// since payloads pass through verbatim, fanned out events that are not
/// JSON (`"payload":1\0abc`).
#[test]
fn a_nul_byte_after_a_scalar_is_rejected() {
    let frames: [&[u8]; 4] = [
        b"{\"type\":\"ping\",\"x\":12\x0034}",
        b"{\"type\":\"ping\",\"x\":true\x00}",
        b"{\"type\":\"subscribe\",\"topic\":\"t\",\"last_n\":5\x00}",
        &publish(b"1\x00abc"),
    ];
    for frame in frames {
        assert!(
            frame_is_rejected(frame),
            "accepted {:?}",
            String::from_utf8_lossy(frame)
        );
    }
    let body = rest_body(b"[1\x00 ,2]");
    assert!(
        body_is_rejected(&body),
        "accepted {:?}",
        String::from_utf8_lossy(&body)
    );
}

/// Bug 2, found by `client_message`: simd-json 0.17 does not check what
/// follows an integer of 19 or more digits, or a number with 19 or more
/// significant digits (its slow paths return before the terminator check),
/// so `12345678901234567890-garbage` was accepted and passed through to
/// subscribers, and `"last_n":1000000000000000000abc` subscribed.
#[test]
fn garbage_after_a_long_number_is_rejected() {
    let frames = [
        br#"{"type":"ping","x":1234567890123456789012!34567890}"#.to_vec(),
        br#"{"type":"ping","x":1.234567890123456789x}"#.to_vec(),
        br#"{"type":"subscribe","topic":"t","last_n":1000000000000000000abc}"#.to_vec(),
        publish(b"12345678901234567890-garbage"),
        publish(b"[-12345678901234567890abc]"),
    ];
    for frame in &frames {
        assert!(
            frame_is_rejected(frame),
            "accepted {:?}",
            String::from_utf8_lossy(frame)
        );
    }
    let body = rest_body(b"123456789012345678901e5x");
    assert!(
        body_is_rejected(&body),
        "accepted {:?}",
        String::from_utf8_lossy(&body)
    );
}

/// Bug 3, found by `client_message` (the oracle skips these inputs, see
/// the fuzz README): simd-json decodes a `\uD800`-`\uDBFF` escape with no
/// low surrogate after it as U+0000, and one followed by a non-surrogate
/// `\uE000`-`\uFFFF` escape as an unrelated astral character. In payloads
/// the escape passes through untouched (deliberately); in the envelope the
/// decoded string is silently wrong, so the `request_id` echoed to the
/// client is not the one it sent. Either rejecting such a frame or keeping
/// the string intact is fine; turning it into another string is not.
#[test]
fn a_lone_surrogate_in_the_envelope_is_not_turned_into_another_string() {
    let cases = [
        (r#"{"type":"ping","request_id":"\ud800"}"#, "\u{0}"),
        (r#"{"type":"ping","request_id":"r\ud800x"}"#, "r\u{0}x"),
        (
            r#"{"type":"ping","request_id":"\ud800\ue000"}"#,
            "\u{10400}",
        ),
    ];
    for (text, garbled) in cases {
        let mut bytes = text.as_bytes().to_vec();
        if let Ok(frame) = parse_client_frame(&mut bytes) {
            assert_ne!(frame.request_id, Some(garbled), "{text}");
        }
    }
    let mut bytes = br#"{"type":"subscribe","topic":"t","client_id":"c\udbff"}"#.to_vec();
    if let Ok(frame) = parse_client_frame(&mut bytes) {
        let Request::Subscribe { client_id, .. } = frame.request else {
            panic!("not a subscribe");
        };
        assert_ne!(client_id, Some("c\u{0}"));
    }
}

/// Found by all three targets in their first seconds after `check_tokens`
/// (the fix for the bugs above) went in: a backslash as a string's last
/// byte made its escape skip step past the end of the input and panic.
#[test]
fn a_backslash_at_the_very_end_is_rejected_without_a_panic() {
    for input in [&b"{\"\\ \\/ \\\x15\x90\\"[..], b"\"\\", b"{\"a\":\"\\u12"] {
        assert!(frame_is_rejected(input), "{input:?}");
        assert!(body_is_rejected(input), "{input:?}");
    }
}

/// Found by `inflate` in its first seconds: a one-byte message that
/// inflates to nothing under a 127-byte limit held 151 bytes: the output
/// buffer (reserved up to the limit) plus the bookkeeping `Bytes` allocates
/// for a `Vec` with spare capacity. The output is now shrunk to its length
/// first, so it converts in place.
#[test]
fn inflating_holds_no_more_than_the_limit_even_for_an_empty_message() {
    oracle::inflate::check(&[0x19, 0x7f, 0xff, 0x00]);
}

/// The oracle's own bug, found by `cargo fuzz run rest_body` within seconds:
/// it still held `.` and `..` valid topic names, which the server refuses
/// (HTTP clients resolve them as path segments, so no request could reach
/// such a topic). Every input spelling either name failed the check.
#[test]
fn dot_and_dot_dot_are_no_topic_names_to_the_oracle_either() {
    for name in [".", ".."] {
        oracle::check_rest_body(name.as_bytes());
        assert!(!oracle::oracle_topic_name(name), "{name}");
    }
    assert!(
        oracle::oracle_topic_name("..."),
        "only the two path segments"
    );
}

/// Every committed seed, through the checks of the target it seeds.
#[test]
fn committed_seeds_pass_the_fuzz_checks() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 4] = [
        ("client_message", oracle::check_client_message),
        ("frame_split", oracle::split::check),
        ("inflate", oracle::inflate::check),
        ("rest_body", oracle::check_rest_body),
    ];
    for (target, check) in targets {
        let dir = corpus.join(target);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target} seed {} failed", path.display());
            seeds += 1;
        }
        assert!(seeds > 0, "no seeds in {}", dir.display());
    }
}
