//! Presence: `GET /subscriptions` and `GET /topics/{name}/subscribers`
//! follow subscribes, unsubscribes, disconnects and topic deletions.

use crate::common::*;
use serde_json::{json, Value};

/// `(topic, client_id)` of every row of `GET /subscriptions`, checking
/// each row's `connection` and `since`.
async fn subscriptions(server: &TestServer) -> Vec<(String, String)> {
    let (status, body) = server.get_json("/subscriptions").await;
    assert_eq!(status, 200, "{body}");
    body["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|row| {
            assert!(row["connection"].is_u64(), "{row}");
            assert!(
                is_rfc3339_utc_millis(row["since"].as_str().unwrap()),
                "{row}"
            );
            (
                row["topic"].as_str().unwrap().to_owned(),
                row["client_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `client_id`s of `GET /topics/{topic}/subscribers`.
async fn subscribers(server: &TestServer, topic: &str) -> Vec<String> {
    let (status, body) = server
        .get_json(&format!("/topics/{topic}/subscribers"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], topic, "{body}");
    body["subscribers"]
        .as_array()
        .expect("subscribers")
        .iter()
        .map(|row| {
            assert!(
                is_rfc3339_utc_millis(row["since"].as_str().unwrap()),
                "{row}"
            );
            row["client_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn presence_follows_subscribes_unsubscribes_and_disconnects() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    server.create_topic("chat").await;
    assert_eq!(subscriptions(&server).await, []);
    assert_eq!(subscribers(&server, "orders").await, Vec::<String>::new());

    let mut alice = server.ws().await;
    subscribe_as(&mut alice, "orders", "alice").await;
    subscribe_as(&mut alice, "chat", "alice").await;
    let mut anonymous = server.ws().await;
    subscribe(&mut anonymous, "orders", 0).await;

    let (_, body) = server.get_json("/subscriptions").await;
    let rows = body["subscriptions"].as_array().unwrap();
    let anonymous_row = rows.iter().find(|row| row["client_id"] != "alice").unwrap();
    let anonymous_id = anonymous_row["connection"].to_string();
    assert_eq!(
        anonymous_row["client_id"], anonymous_id,
        "defaults to the connection's id"
    );
    let alice_connections: Vec<&Value> = rows
        .iter()
        .filter(|row| row["client_id"] == "alice")
        .map(|row| &row["connection"])
        .collect();
    assert_eq!(alice_connections.len(), 2);
    assert_eq!(alice_connections[0], alice_connections[1], "one connection");
    assert_ne!(alice_connections[0].to_string(), anonymous_id);

    assert_eq!(
        subscriptions(&server).await,
        [
            ("chat".to_owned(), "alice".to_owned()),
            ("orders".to_owned(), "alice".to_owned()),
            ("orders".to_owned(), anonymous_id.clone()),
        ]
    );
    assert_eq!(
        subscribers(&server, "orders").await,
        ["alice", &anonymous_id]
    );

    send(
        &mut alice,
        json!({ "type": "unsubscribe", "topic": "orders", "request_id": "unsub" }),
    )
    .await;
    expect_ack(&mut alice, "orders", "unsub").await;
    assert_eq!(
        subscribers(&server, "orders").await,
        [anonymous_id.as_str()]
    );
    assert_eq!(subscribers(&server, "chat").await, ["alice"]);

    drop(anonymous);
    wait_until("the closed connection leaves presence", || async {
        let rows = subscriptions(&server).await;
        match rows.as_slice() {
            [(topic, client)] if topic == "chat" && client == "alice" => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_topic_leaves_presence_and_an_unknown_one_is_404() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut ws = server.ws().await;
    subscribe_as(&mut ws, "orders", "alice").await;
    assert_eq!(subscribers(&server, "orders").await, ["alice"]);

    let (status, body) = server.delete_json("/topics/orders").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(subscriptions(&server).await, []);
    let reply = server.get_json("/topics/orders/subscribers").await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "deleted topic");
    let reply = server.get_json("/topics/never/subscribers").await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "unknown topic");
    server.stop().await;
}

#[tokio::test]
async fn client_ids_come_back_exactly_as_subscribed() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut ws = server.ws().await;
    let odd = "q\"uote \\ back\nline \u{1} é 🦀";
    subscribe_as(&mut ws, "orders", odd).await;
    assert_eq!(subscribers(&server, "orders").await, [odd]);
    assert_eq!(
        subscriptions(&server).await,
        [("orders".to_owned(), odd.to_owned())]
    );
    server.stop().await;
}
