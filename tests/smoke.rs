mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn publish_reaches_a_subscriber() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut sub = server.ws().await;
    subscribe(&mut sub, "orders", 0).await;
    let mut publisher = server.ws().await;
    send(&mut publisher, publish_frame("orders", json!({"n": 1}), "p1")).await;
    assert_eq!(recv(&mut publisher).await["type"], "ack");
    let event = recv(&mut sub).await;
    assert_eq!(event["message"]["payload"], json!({"n": 1}));
    assert_eq!(event["seq"], 1);
    server.stop().await;
}
