//! Idempotent publish over WebSocket (`DEDUP_WINDOW`): a message id
//! published again to the same topic within the window is acked with the
//! original's `seq` and `"duplicate":true`, and reaches no subscriber twice.

use crate::common::*;
use serde_json::{json, Value};

/// Publishes `id` to `topic` and returns the ack.
async fn publish_id(ws: &mut Ws, topic: &str, id: &str, request_id: &str) -> Value {
    send(
        ws,
        json!({
            "type": "publish",
            "topic": topic,
            "request_id": request_id,
            "message": { "id": id, "payload": request_id },
        }),
    )
    .await;
    expect_ack(ws, topic, request_id).await
}

#[tokio::test]
async fn a_repeated_id_is_acked_with_the_original_seq_and_delivered_once() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    server.create_topic("other").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "orders", 0).await;
    let mut publisher = server.ws().await;
    let id = uuid::Uuid::new_v4().to_string();

    let first = publish_id(&mut publisher, "orders", &id, "first").await;
    assert_eq!(first["seq"], 1, "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    publish_acked(&mut publisher, "orders", json!("between"), "between").await;
    let again = publish_id(&mut publisher, "orders", &id, "again").await;
    assert_eq!(
        (&again["seq"], &again["duplicate"]),
        (&json!(1), &json!(true))
    );
    let elsewhere = publish_id(&mut publisher, "other", &id, "elsewhere").await;
    assert_eq!(elsewhere["seq"], 1, "another topic has its own window");
    assert!(elsewhere.get("duplicate").is_none(), "{elsewhere}");

    let payloads: Vec<Value> = [recv(&mut subscriber).await, recv(&mut subscriber).await]
        .iter()
        .map(|event| event["message"]["payload"].clone())
        .collect();
    assert_eq!(payloads, [json!("first"), json!("between")]);
    ping_pong(&mut subscriber, "nothing more").await;
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("\nringcast_publishes_deduplicated_total 1\n"),
        "{metrics}"
    );
    assert_eq!(
        server.counter("published").await,
        3,
        "a duplicate is no event"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_recreated_topic_starts_an_empty_window() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut publisher = server.ws().await;
    let id = uuid::Uuid::new_v4().to_string();
    publish_id(&mut publisher, "orders", &id, "old").await;
    assert_eq!(server.delete_json("/topics/orders").await.0, 200);
    server.create_topic("orders").await;
    let ack = publish_id(&mut publisher, "orders", &id, "new").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert!(ack.get("duplicate").is_none(), "{ack}");
    server.stop().await;
}

#[tokio::test]
async fn a_zero_window_turns_deduplication_off() {
    let server = TestServer::start(&["--dedup-window", "0s"]).await;
    server.create_topic("orders").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "orders", 0).await;
    let mut publisher = server.ws().await;
    let id = uuid::Uuid::new_v4().to_string();
    for (request_id, seq) in [("once", 1), ("twice", 2)] {
        let ack = publish_id(&mut publisher, "orders", &id, request_id).await;
        assert_eq!(ack["seq"], seq, "{ack}");
        assert!(ack.get("duplicate").is_none(), "{ack}");
        assert_eq!(recv(&mut subscriber).await["seq"], seq);
    }
    server.stop().await;
}

/// Clients in tasks of their own race to publish one id: exactly one of
/// them publishes it, every ack names its `seq`, the subscriber gets it once.
async fn racing_publishers_publish_an_id_once() {
    const PUBLISHERS: usize = 8;
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "orders", 0).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut racing = Vec::new();
    for n in 0..PUBLISHERS {
        let (mut publisher, id) = (server.ws().await, id.clone());
        racing.push(tokio::spawn(async move {
            publish_id(&mut publisher, "orders", &id, &format!("p{n}")).await
        }));
    }
    let mut originals = 0;
    for publisher in racing {
        let ack = publisher.await.unwrap();
        assert_eq!(ack["seq"], 1, "{ack}");
        if ack.get("duplicate").is_none() {
            originals += 1;
        }
    }
    assert_eq!(originals, 1, "exactly one publish is the original");
    assert_eq!(recv(&mut subscriber).await["seq"], 1);
    ping_pong(&mut subscriber, "delivered once").await;
    server.stop().await;
}

#[tokio::test]
async fn racing_publishers_publish_an_id_once_on_one_thread() {
    racing_publishers_publish_an_id_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_publishers_publish_an_id_once_on_four_threads() {
    racing_publishers_publish_an_id_once().await;
}
