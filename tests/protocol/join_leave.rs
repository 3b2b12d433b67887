//! Join and leave on a topic with `presence_events`, with several real
//! WebSocket clients and an event stream: every other subscriber is told
//! when a subscription starts and when it ends (unsubscribe, close, the
//! server API, a slow-consumer cut), the one that joined or left never;
//! a topic without the option tells nobody. On a current-thread and a
//! multi-thread runtime.

use crate::common::sse::SseClient;
use crate::common::*;
use serde_json::{json, Value};

async fn create_with_presence_events(server: &TestServer, name: &str) {
    let body = json!({ "name": name, "presence_events": true });
    let (status, reply) = server.post_json("/topics", &body).await;
    assert_eq!(status, 201, "{reply}");
}

#[track_caller]
fn assert_notice(frame: &Value, kind: &str, topic: &str, client_id: &str) {
    assert_eq!(frame["type"], kind, "{frame}");
    assert_eq!(frame["topic"], topic, "{frame}");
    assert_eq!(frame["client_id"], client_id, "{frame}");
    assert_ts(frame);
}

async fn expect_notice(ws: &mut Ws, kind: &str, topic: &str, client_id: &str) {
    assert_notice(&recv(ws).await, kind, topic, client_id);
}

#[test]
fn every_other_subscriber_is_told_of_joins_and_leaves() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&[]).await;
        create_with_presence_events(&server, "room").await;
        let mut alice = server.ws().await;
        subscribe_as(&mut alice, "room", "alice").await;
        let mut bob = server.ws().await;
        subscribe_as(&mut bob, "room", "bob").await;
        expect_notice(&mut alice, "join", "room", "bob").await;
        ping_pong(&mut bob, "bob is not told of himself").await;

        // Without a client_id, the connection's id is the client id.
        let mut anonymous = server.ws().await;
        subscribe(&mut anonymous, "room", 0).await;
        let (_, rows) = server.get_json("/topics/room/subscribers").await;
        let anonymous_id = rows["subscribers"][2]["client_id"]
            .as_str()
            .unwrap()
            .to_owned();
        for ws in [&mut alice, &mut bob] {
            expect_notice(ws, "join", "room", &anonymous_id).await;
        }
        ping_pong(&mut anonymous, "anonymous is not told of itself").await;

        send(
            &mut bob,
            json!({ "type": "unsubscribe", "topic": "room", "request_id": "bye" }),
        )
        .await;
        expect_ack(&mut bob, "room", "bye").await;
        for ws in [&mut alice, &mut anonymous] {
            expect_notice(ws, "leave", "room", "bob").await;
        }
        ping_pong(&mut bob, "bob hears nothing of his own leave").await;

        drop(anonymous);
        expect_notice(&mut alice, "leave", "room", &anonymous_id).await;

        let mut carol = server.ws().await;
        subscribe_as(&mut carol, "room", "carol").await;
        expect_notice(&mut alice, "join", "room", "carol").await;
        let body = json!({ "topic": "room", "client_id": "carol" });
        let (status, _) = server.post_json("/unsubscribe", &body).await;
        assert_eq!(status, 200);
        expect_notice(&mut alice, "leave", "room", "carol").await;
        assert_eq!(recv(&mut carol).await["msg"], "unsubscribed");
        ping_pong(&mut carol, "carol hears nothing of her own leave").await;

        subscribe_as(&mut carol, "room", "carol").await;
        expect_notice(&mut alice, "join", "room", "carol").await;
        let (status, _) = server
            .post_json("/disconnect", &json!({ "client_id": "carol" }))
            .await;
        assert_eq!(status, 200);
        expect_notice(&mut alice, "leave", "room", "carol").await;
        ping_pong(&mut alice, "nothing else for alice").await;
        server.stop().await;
    });
}

#[test]
fn a_topic_without_presence_events_tells_nobody() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&[]).await;
        server.create_topic("quiet").await;
        let mut alice = server.ws().await;
        subscribe_as(&mut alice, "quiet", "alice").await;
        let mut bob = server.ws().await;
        subscribe_as(&mut bob, "quiet", "bob").await;
        drop(bob);
        server.wait_for_subscribers("quiet", 1).await;
        ping_pong(&mut alice, "neither join nor leave").await;
        server.stop().await;
    });
}

#[test]
fn an_event_stream_is_told_and_tells() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&[]).await;
        create_with_presence_events(&server, "room").await;
        let response = server
            .http
            .get(server.url("/sse?topic=room&client_id=reader"))
            .send()
            .await
            .unwrap();
        let mut stream = SseClient::open(response).await;
        stream.subscribed().await;
        let mut alice = server.ws().await;
        subscribe_as(&mut alice, "room", "alice").await;
        let joined = stream.expect_next().await;
        assert_eq!(joined.event.as_deref(), Some("join"), "{joined:?}");
        assert_notice(&joined.json(), "join", "room", "alice");
        drop(stream);
        expect_notice(&mut alice, "leave", "room", "reader").await;
        server.stop().await;
    });
}

#[test]
fn a_subscriber_cut_as_a_slow_consumer_leaves() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&["--write-timeout", "200ms"]).await;
        create_with_presence_events(&server, "room").await;
        let mut watcher = server.ws().await;
        subscribe_as(&mut watcher, "room", "watcher").await;
        let mut stalled = RawClient::connect_with_recv_buffer(&server, 4096).await;
        let request = json!({ "type": "subscribe", "topic": "room", "client_id": "stalled", "request_id": "s" });
        stalled
            .send_frame(OP_TEXT, true, request.to_string().as_bytes())
            .await;
        assert_ack(&stalled.read_json().await, "room", "s");
        expect_notice(&mut watcher, "join", "room", "stalled").await;
        // The watcher reads in a task of its own while the stalled reader
        // reads nothing until the server gives up on it.
        let watching = tokio::spawn(async move {
            let mut events = 0;
            loop {
                let frame = recv(&mut watcher).await;
                match frame["type"].as_str() {
                    Some("event") => events += 1,
                    _ => return (frame, events),
                }
            }
        });
        let pad = "x".repeat(4096);
        let mut published = 0;
        while server.subscribers_of("room").await == Some(2) {
            assert!(published < 20_000, "the stalled reader was never cut");
            for _ in 0..50 {
                let (status, _) = server
                    .post_json("/topics/room/messages", &message_body(json!(pad)))
                    .await;
                assert_eq!(status, 200);
                published += 1;
            }
        }
        let (notice, events) = watching.await.unwrap();
        assert_notice(&notice, "leave", "room", "stalled");
        assert!(events > 0 && events <= published, "{events} of {published}");
        server.stop().await;
    });
}
