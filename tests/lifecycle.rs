//! Connection lifecycle: graceful shutdown, heartbeats and silent peers,
//! and client-initiated close.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Opens `/ws` with a hand-written upgrade request on a plain TCP socket and
/// returns the socket plus any bytes read past the 101 response.
async fn raw_handshake(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let head_len = loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 1024];
        let read = timeout(RECV_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("handshake reply")
            .unwrap();
        assert!(read > 0, "connection closed during the handshake");
        received.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_len]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    (stream, received.split_off(head_len))
}

/// Splits unmasked server frames into (opcode, payload); asserts nothing is
/// left over, i.e. the stream ended on a frame boundary.
fn parse_server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated frame header");
        let (opcode, masked, short_len) = (bytes[0] & 0x0f, bytes[1] & 0x80 != 0, bytes[1] & 0x7f);
        assert!(!masked, "server frames must not be masked");
        let (len, header) = match short_len {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            len => (len as usize, 2),
        };
        assert!(bytes.len() >= header + len, "truncated frame payload");
        frames.push((opcode, bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    frames
}

/// Polls `GET /health` until no subscriptions and no connections are left.
async fn wait_until_idle(server: &TestServer) {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, health) = server.get_json("/health").await;
        if health["subscribers"] == 0 && health["connections"] == 0 {
            return;
        }
        assert!(Instant::now() < give_up, "server still busy: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects a subscriber and queues `count` acked events for it.
async fn subscriber_with_backlog(
    server: &TestServer,
    topic: &str,
    count: u64,
    pad: usize,
) -> (Ws, Ws) {
    server.create_topic(topic).await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, topic, 0).await;
    let mut publisher = server.ws().await;
    for n in 1..=count {
        send(
            &mut publisher,
            publish_frame(
                topic,
                json!({ "n": n, "pad": "x".repeat(pad) }),
                &n.to_string(),
            ),
        )
        .await;
        let ack = recv(&mut publisher).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    (subscriber, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_queued_events_then_closes_with_1001() {
    // 150 x 64 KiB is more than the socket buffers hold: most of it is still
    // queued in the server when shutdown starts.
    const EVENTS: u64 = 150;
    let server = TestServer::start(&["--shutdown-timeout", "5s"]).await;
    let addr = server.addr;
    let (mut subscriber, _publisher) =
        subscriber_with_backlog(&server, "drain", EVENTS, 64 * 1024).await;

    let stopping = tokio::spawn(server.stop());
    let mut next_seq = 1;
    let close = loop {
        let next = timeout(RECV_TIMEOUT, subscriber.next())
            .await
            .expect("shutdown stalled");
        let Some(message) = next else {
            panic!(
                "stream ended after seq {} without a close frame",
                next_seq - 1
            );
        };
        let message = message.expect("ws error");
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "info" && frame["msg"] == "ping" {
                    continue;
                }
                assert_eq!(frame["type"], "event", "{frame}");
                assert_eq!(frame["seq"], next_seq, "{frame}");
                assert_eq!(frame["message"]["payload"]["n"], next_seq, "{frame}");
                next_seq += 1;
            }
            Message::Close(frame) => break frame.expect("close frame carries a code"),
            _ => {}
        }
    };
    assert_eq!(
        next_seq - 1,
        EVENTS,
        "close arrived before every queued event"
    );
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stop() returned")
        .unwrap();

    let refused = TcpStream::connect(addr)
        .await
        .expect_err("listener still accepts after shutdown");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_never_reading_client_after_the_timeout() {
    // 200 x 64 KiB is more than the loopback socket buffers hold, so the
    // server cannot flush this subscriber while it does not read.
    let server = TestServer::start(&["--shutdown-timeout", "1s"]).await;
    let (_stalled, _publisher) = subscriber_with_backlog(&server, "stuck", 200, 64 * 1024).await;
    timeout(Duration::from_secs(4), server.stop())
        .await
        .expect("stop() did not return within the 1 s shutdown timeout plus slack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_client_gets_heartbeats_and_stays_connected() {
    let server = TestServer::start(&["--heartbeat-interval", "300ms"]).await;
    let mut ws = server.ws().await;
    let (mut info_pings, mut ws_pings) = (0, 0);
    // Observe for about seven intervals, well past the two-interval silence
    // limit; tungstenite answers each Ping with a Pong while it is polled.
    let observe_until = Instant::now() + Duration::from_millis(2100);
    while let Ok(next) = tokio::time::timeout_at(observe_until, ws.next()).await {
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(frame["type"], "info", "{frame}");
                assert_eq!(frame["msg"], "ping", "{frame}");
                assert!(frame["ts"].is_string(), "{frame}");
                assert!(frame.get("topic").is_none(), "{frame}");
                info_pings += 1;
            }
            Some(Ok(Message::Ping(_))) => ws_pings += 1,
            other => panic!("connection ended while the client kept reading: {other:?}"),
        }
    }
    assert!(
        info_pings >= 3,
        "only {info_pings} info pings in ~7 intervals"
    );
    assert!(
        ws_pings >= 3,
        "only {ws_pings} WebSocket pings in ~7 intervals"
    );

    let (_, health) = server.get_json("/health").await;
    assert_eq!(
        health["connections"], 1,
        "the reading client was dropped: {health}"
    );
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_with_1008_after_two_heartbeat_intervals() {
    let server = TestServer::start(&["--heartbeat-interval", "300ms"]).await;
    let (mut stream, mut received) = raw_handshake(server.addr).await;
    // The peer never sends a byte, not even a Pong; read until the server hangs up.
    timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .expect("silent peer was not disconnected")
        .expect("read");
    let frames = parse_server_frames(&received);
    let (opcode, payload) = frames.last().expect("a close frame before EOF");
    assert_eq!(*opcode, 0x8, "last frame is not a close frame: {frames:?}");
    assert!(payload.len() >= 2, "close frame without a code");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    assert!(
        frames.iter().any(|(opcode, payload)| *opcode == 0x1
            && serde_json::from_slice::<Value>(payload).is_ok_and(|frame| frame["msg"] == "ping")),
        "no heartbeat was sent before giving up on the peer: {frames:?}"
    );
    wait_until_idle(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_is_answered_and_its_subscriptions_removed() {
    let server = TestServer::start(&[]).await;
    server.create_topic("bye").await;
    let mut ws = server.ws().await;
    subscribe(&mut ws, "bye", 0).await;
    let (_, health) = server.get_json("/health").await;
    assert_eq!(health["subscribers"], 1, "{health}");

    ws.close(None).await.expect("send close");
    let reply = timeout(RECV_TIMEOUT, ws.next()).await.expect("close reply");
    match reply {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1000, "{frame:?}")
        }
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    let after = timeout(RECV_TIMEOUT, ws.next()).await.expect("stream end");
    assert!(
        after.is_none(),
        "frames after the close handshake: {after:?}"
    );
    wait_until_idle(&server).await;
    server.stop().await;
}
