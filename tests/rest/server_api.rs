//! The server API for application backends over real HTTP: idempotent
//! publish (`DEDUP_WINDOW`), batch publish and `POST /broadcast`.

use crate::common::*;
use serde_json::{json, Value};

/// A message body with a given id.
fn message(id: &str, payload: Value) -> Value {
    json!({ "id": id, "payload": payload })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn a_repeated_rest_publish_is_answered_with_the_original_seq_and_not_delivered() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "orders", 0).await;
    let id = new_id();
    let first = server
        .post_json("/topics/orders/messages", &message(&id, json!("first")))
        .await;
    assert_eq!(
        first,
        (
            200,
            json!({ "status": "published", "topic": "orders", "seq": 1 })
        )
    );
    let retried = server
        .post_json("/topics/orders/messages", &message(&id, json!("retried")))
        .await;
    assert_eq!(
        retried,
        (
            200,
            json!({ "status": "published", "topic": "orders", "seq": 1, "duplicate": true })
        )
    );
    let event = recv(&mut subscriber).await;
    assert_eq!(event["message"]["payload"], "first", "{event}");
    ping_pong(&mut subscriber, "delivered once").await;
    let (_, history) = server.get_json("/topics/orders/messages").await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    server.stop().await;
}
