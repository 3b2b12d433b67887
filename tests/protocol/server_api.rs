//! The server API's connection commands over real sockets:
//! `POST /disconnect` (close code 4000 with the reason, WebSocket and
//! event streams alike) and `POST /unsubscribe` (`info` `unsubscribed`),
//! each by connection id and by client id, and their bad bodies.

use crate::common::sse::SseClient;
use crate::common::*;
use serde_json::{json, Value};

/// The `connection` of the one subscription of `client_id`.
async fn connection_of(server: &TestServer, client_id: &str) -> u64 {
    let (_, body) = server.get_json("/subscriptions").await;
    body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["client_id"] == client_id)
        .unwrap_or_else(|| panic!("no subscription of {client_id}: {body}"))["connection"]
        .as_u64()
        .unwrap()
}

async fn command(server: &TestServer, path: &str, body: Value) -> Value {
    let (status, reply) = server.post_json(path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {reply}");
    reply
}

#[tokio::test]
async fn disconnect_closes_the_connections_picked_with_4000_and_the_reason() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    server.create_topic("b").await;
    let mut alice_phone = server.ws().await;
    subscribe_as(&mut alice_phone, "a", "alice").await;
    let mut alice_laptop = server.ws().await;
    subscribe_as(&mut alice_laptop, "b", "alice").await;
    let mut bob = server.ws().await;
    subscribe_as(&mut bob, "a", "bob").await;
    let mut carol = server.ws().await;
    subscribe_as(&mut carol, "a", "carol").await;

    let reply = command(
        &server,
        "/disconnect",
        json!({ "client_id": "alice", "reason": "logged out" }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 2 }));
    for ws in [&mut alice_phone, &mut alice_laptop] {
        assert_eq!(close_frame_of(ws).await, (4000, "logged out".to_owned()));
    }

    let bob_id = connection_of(&server, "bob").await;
    let reply = command(&server, "/disconnect", json!({ "connection": bob_id })).await;
    assert_eq!(reply, json!({ "disconnected": 1 }));
    assert_eq!(
        close_frame_of(&mut bob).await,
        (4000, "disconnected".to_owned())
    );

    // A close frame holds 123 bytes of reason: a longer one is cut there,
    // at a character boundary.
    let reply = command(
        &server,
        "/disconnect",
        json!({ "client_id": "carol", "reason": "é".repeat(100) }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 1 }));
    assert_eq!(close_frame_of(&mut carol).await, (4000, "é".repeat(61)));
    let mut carol = server.ws().await;
    subscribe_as(&mut carol, "a", "carol").await;

    for nobody in [
        json!({ "connection": bob_id }),
        json!({ "client_id": "alice" }),
        json!({ "subject": "nobody" }),
    ] {
        let reply = command(&server, "/disconnect", nobody.clone()).await;
        assert_eq!(reply, json!({ "disconnected": 0 }), "{nobody}");
    }
    ping_pong(&mut carol, "carol is still connected").await;
    wait_until("the closed connections gone", || async {
        match server.subscribers_of("a").await {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_connection_without_subscriptions_is_found_by_its_id() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    let mut watcher = server.ws().await;
    subscribe_as(&mut watcher, "a", "watcher").await;
    let watcher_id = connection_of(&server, "watcher").await;
    let mut idle = server.ws().await;
    ping_pong(&mut idle, "connected").await;
    // Ids are handed out in order; the idle connection opened next.
    let reply = command(
        &server,
        "/disconnect",
        json!({ "connection": watcher_id + 1, "reason": "idle" }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 1 }));
    assert_eq!(close_frame_of(&mut idle).await, (4000, "idle".to_owned()));
    ping_pong(&mut watcher, "still here").await;
    server.stop().await;
}

#[tokio::test]
async fn disconnect_ends_an_event_stream_after_info_disconnected() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    let mut stream = subscribed_stream(&server, "/sse?topic=a&client_id=reader").await;
    let reply = command(
        &server,
        "/disconnect",
        json!({ "client_id": "reader", "reason": "banned" }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 1 }));
    let last = stream.expect_next().await;
    assert_eq!(last.event.as_deref(), Some("info"), "{last:?}");
    let info = last.json();
    assert_eq!(info["msg"], "disconnected", "{info}");
    assert_eq!(info["reason"], "banned", "{info}");
    assert_ts(&info);
    assert!(stream.next().await.is_none(), "the stream ends");
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_ends_the_subscriptions_picked_with_info_unsubscribed() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    server.create_topic("b").await;
    let mut alice = server.ws().await;
    subscribe_as(&mut alice, "a", "alice").await;
    subscribe_as(&mut alice, "b", "alice").await;
    let mut bob = server.ws().await;
    subscribe_as(&mut bob, "a", "bob").await;

    let reply = command(
        &server,
        "/unsubscribe",
        json!({ "topic": "a", "client_id": "alice" }),
    )
    .await;
    assert_eq!(reply, json!({ "unsubscribed": 1 }));
    let info = recv(&mut alice).await;
    assert_eq!(info["type"], "info", "{info}");
    assert_eq!(info["topic"], "a", "{info}");
    assert_eq!(info["msg"], "unsubscribed", "{info}");
    assert_ts(&info);

    for topic in ["a", "b"] {
        let (status, body) = server
            .post_json(
                &format!("/topics/{topic}/messages"),
                &message_body(json!(topic)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let event = recv(&mut alice).await;
    assert_eq!(
        (
            event["topic"].as_str(),
            event["message"]["payload"].as_str()
        ),
        (Some("b"), Some("b")),
        "alice gets b's event and no longer a's: {event}"
    );
    let event = recv(&mut bob).await;
    assert_eq!(event["topic"], "a", "bob stays subscribed: {event}");
    ping_pong(&mut alice, "nothing else for alice").await;

    let bob_id = connection_of(&server, "bob").await;
    let reply = command(
        &server,
        "/unsubscribe",
        json!({ "topic": "a", "connection": bob_id }),
    )
    .await;
    assert_eq!(reply, json!({ "unsubscribed": 1 }));
    assert_eq!(recv(&mut bob).await["msg"], "unsubscribed");
    let reply = command(
        &server,
        "/unsubscribe",
        json!({ "topic": "a", "connection": bob_id }),
    )
    .await;
    assert_eq!(reply, json!({ "unsubscribed": 0 }), "nothing left to end");

    // The client may subscribe again, and unsubscribe itself.
    subscribe_as(&mut alice, "a", "alice").await;
    send(
        &mut alice,
        json!({ "type": "unsubscribe", "topic": "a", "request_id": "u" }),
    )
    .await;
    expect_ack(&mut alice, "a", "u").await;
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_reaches_an_event_stream_as_info() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    server.create_topic("b").await;
    let mut stream = subscribed_stream(&server, "/sse?topic=a&topic=b&client_id=reader").await;
    let reply = command(
        &server,
        "/unsubscribe",
        json!({ "topic": "a", "client_id": "reader" }),
    )
    .await;
    assert_eq!(reply, json!({ "unsubscribed": 1 }));
    let notice = stream.expect_next().await;
    assert_eq!(notice.event.as_deref(), Some("info"), "{notice:?}");
    assert_eq!(notice.json()["msg"], "unsubscribed");
    assert_eq!(notice.json()["topic"], "a");
    for topic in ["a", "b"] {
        let (status, _) = server
            .post_json(
                &format!("/topics/{topic}/messages"),
                &message_body(json!(topic)),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, event) = stream.event().await;
    assert_eq!(event["topic"], "b", "{event}");
    server.stop().await;
}

#[tokio::test]
async fn bad_commands_are_400_naming_the_mistake() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    let cases = [
        ("/disconnect", json!({}), "exactly one of"),
        ("/disconnect", json!({ "reason": "x" }), "got none"),
        (
            "/disconnect",
            json!({ "client_id": "a", "subject": "b" }),
            "client_id and subject",
        ),
        ("/disconnect", json!({ "connection": "7" }), "connection"),
        ("/disconnect", json!({ "connection": -1 }), "connection"),
        ("/disconnect", json!({ "client_id": 7 }), "client_id"),
        ("/disconnect", json!({ "client_id": "" }), "client_id"),
        (
            "/disconnect",
            json!({ "subject": "s", "reason": 1 }),
            "reason",
        ),
        (
            "/disconnect",
            json!({ "subject": "s", "topic": "a" }),
            "\"topic\"",
        ),
        ("/disconnect", json!(["subject"]), "JSON object"),
        ("/unsubscribe", json!({ "client_id": "a" }), "topic"),
        ("/unsubscribe", json!({ "topic": "a" }), "exactly one of"),
        (
            "/unsubscribe",
            json!({ "topic": 1, "client_id": "a" }),
            "topic",
        ),
        (
            "/unsubscribe",
            json!({ "topic": "a b", "client_id": "a" }),
            "topic name",
        ),
        (
            "/unsubscribe",
            json!({ "topic": "a", "client_id": "a", "reason": "x" }),
            "\"reason\"",
        ),
    ];
    for (path, body, named) in cases {
        let reply = server.post_json(path, &body).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", &format!("{path} {body}"));
        let message = reply.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{path} {body}: {message}");
    }
    let reply = server
        .post_json(
            "/unsubscribe",
            &json!({ "topic": "gone", "client_id": "a" }),
        )
        .await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "unknown topic");
    let response = server
        .http
        .post(server.url("/disconnect"))
        .header("content-type", "application/json")
        .body("{\"client_id\":")
        .send()
        .await
        .unwrap();
    assert_error_reply(&json_reply(response).await, 400, "BAD_REQUEST", "not JSON");
    server.stop().await;
}

/// An event stream opened at `path`, read up to its `subscribed` event.
async fn subscribed_stream(server: &TestServer, path: &str) -> SseClient {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    let mut stream = SseClient::open(response).await;
    stream.subscribed().await;
    stream
}
