//! Closing (RFC 6455 §5.5.1, §7): a client's close is echoed with its code
//! and reason, and which frames close with which code.

mod common;

use common::*;

/// Sends a close frame with `payload` and returns the payload of the
/// server's close frame.
async fn close_reply(server: &TestServer, payload: &[u8]) -> Vec<u8> {
    let mut raw = RawClient::connect(server).await;
    raw.send_frame(OP_CLOSE, true, payload).await;
    let frames = raw.read_to_eof().await;
    frames
        .into_iter()
        .find_map(|(opcode, payload)| (opcode == OP_CLOSE).then_some(payload))
        .expect("no close frame before EOF")
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
}

#[tokio::test]
async fn close_codes_1012_to_1014_are_echoed() {
    let server = TestServer::start(&[]).await;
    for code in [1012, 1013, 1014] {
        let reply = close_reply(&server, &close_payload(code, "")).await;
        assert_eq!(close_code_of(&reply), code, "{reply:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_client_close_reason_is_echoed() {
    let server = TestServer::start(&[]).await;
    let longest = "r".repeat(123);
    for (code, reason) in [(1000, "bye"), (4001, "done ✓"), (1001, longest.as_str())] {
        let sent = close_payload(code, reason);
        assert_eq!(close_reply(&server, &sent).await, sent, "{code} {reason:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_64_bit_length_with_the_high_bit_set_closes_with_1002() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    // RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.send_partial(&header).await;
    assert_eq!(raw.close_code().await, 1002);
    server.stop().await;
}
