//! Closing (RFC 6455 §5.5.1, §7): a client's close is echoed with its code
//! and reason, and the server's own close frame reaches a client that is
//! still sending when the server closes.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

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

#[tokio::test]
async fn a_client_still_sending_a_refused_message_gets_the_close_frame() {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    // A small send buffer, and a server that stops reading at the frame
    // header: most of the message is still to be sent, or unread in the
    // server's receive buffer, when the server closes with 1009.
    let socket = TcpSocket::new_v4().expect("tcp socket");
    socket.set_send_buffer_size(16 * 1024).expect("SO_SNDBUF");
    let stream = socket.connect(server.addr).await.expect("tcp connect");
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(), stream)
        .await
        .expect("ws handshake");
    ws.send(Message::Binary(vec![0; 1 << 20].into()))
        .await
        .expect("sending the message: the server reset the connection");
    let close = loop {
        match tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for the close frame")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("close frame with a code"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    drop(ws);
    server.stop().await;
}
