//! Connection lifecycle: graceful shutdown, heartbeats and silent peers,
//! and client-initiated close.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

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
        let payload = json!({ "n": n, "pad": "x".repeat(pad) });
        publish_acked(&mut publisher, topic, payload, &n.to_string()).await;
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
                assert_ts(&frame);
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
    ping_pong(&mut ws, "after-heartbeats").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_with_1008_after_two_heartbeat_intervals() {
    let server = TestServer::start(&["--heartbeat-interval", "300ms"]).await;
    let mut raw = RawClient::connect(&server).await;
    // The peer never sends a byte, not even a Pong; read until the server
    // hangs up, which must happen on a frame boundary.
    let frames = timeout(Duration::from_secs(5), raw.read_to_eof())
        .await
        .expect("silent peer was not disconnected");
    let (opcode, payload) = frames.last().expect("a close frame before EOF");
    assert_eq!(
        *opcode, OP_CLOSE,
        "last frame is not a close frame: {frames:?}"
    );
    assert_eq!(close_code_of(payload), 1008);
    assert!(
        frames.iter().any(|(opcode, payload)| *opcode == OP_TEXT
            && serde_json::from_slice::<Value>(payload).is_ok_and(|frame| frame["msg"] == "ping")),
        "no heartbeat was sent before giving up on the peer: {frames:?}"
    );
    server.wait_until_idle().await;
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
    server.wait_until_idle().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_client_that_stops_reading_is_released_after_two_heartbeats() {
    // The client asks to close but never reads the backlog the server is
    // still flushing to it: after two silent heartbeat intervals the server
    // gives up on the flush instead of holding the connection forever.
    let server = TestServer::start(&["--heartbeat-interval", "300ms"]).await;
    let (mut subscriber, publisher) =
        subscriber_with_backlog(&server, "abandoned", 150, 64 * 1024).await;
    drop(publisher);
    futures_util::SinkExt::send(&mut subscriber, Message::Close(None))
        .await
        .expect("send close");
    server.wait_until_idle().await;
    drop(subscriber);
    server.stop().await;
}
