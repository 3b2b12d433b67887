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

/// A server with `topic` and one client subscribed to it.
async fn subscribed(topic: &str) -> (TestServer, Ws) {
    let server = TestServer::start(&[]).await;
    server.create_topic(topic).await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, topic, 0).await;
    (server, subscriber)
}

/// Posts each body to `path`, expecting 400 with a message that says the
/// case's text.
async fn assert_each_refused<const N: usize>(
    server: &TestServer,
    path: &str,
    cases: [(Value, &str); N],
) {
    for (body, expected) in cases {
        let reply = server.post_json(path, &body).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", expected);
        let why = reply.1["error"]["message"].as_str().unwrap();
        assert!(why.contains(expected), "{why}");
    }
}

#[tokio::test]
async fn a_repeated_rest_publish_is_answered_with_the_original_seq_and_not_delivered() {
    let (server, mut subscriber) = subscribed("orders").await;
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

/// The payloads of the next `count` events a subscriber receives, after
/// which nothing else is waiting for it.
async fn received_payloads(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut payloads = Vec::with_capacity(count);
    for _ in 0..count {
        let event = recv(ws).await;
        assert_eq!(event["type"], "event", "{event}");
        payloads.push(event["message"]["payload"].clone());
    }
    ping_pong(ws, "nothing more").await;
    payloads
}

#[tokio::test]
async fn a_batch_is_published_in_order_and_a_repeated_id_is_answered_as_a_duplicate() {
    let (server, mut subscriber) = subscribed("orders").await;
    let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
    let batch = json!([
        message(&ids[0], json!({ "n": 0 })),
        message(&ids[1], json!("é ☃")),
        message(&ids[2], json!([1, 2.5, null])),
    ]);
    let reply = server.post_json("/topics/orders/messages", &batch).await;
    assert_eq!(
        reply,
        (
            200,
            json!({ "status": "published", "topic": "orders", "seqs": [1, 2, 3] })
        )
    );
    assert_eq!(
        received_payloads(&mut subscriber, 3).await,
        [json!({ "n": 0 }), json!("é ☃"), json!([1, 2.5, null])]
    );
    let retried = json!([message(&ids[1], json!("again")), message(&ids[3], json!(4))]);
    let reply = server.post_json("/topics/orders/messages", &retried).await;
    assert_eq!(
        reply,
        (
            200,
            json!({ "status": "published", "topic": "orders", "seqs": [2, 4], "duplicates": [0] })
        )
    );
    assert_eq!(received_payloads(&mut subscriber, 1).await, [json!(4)]);
    server.stop().await;
}

#[tokio::test]
async fn a_bad_batch_is_refused_whole_naming_the_index() {
    let (server, mut subscriber) = subscribed("orders").await;
    let good = || message(&new_id(), json!(1));
    let repeated = new_id();
    let cases = [
        (json!([]), "not 0"),
        (
            json!([good(), message("nope", json!(2))]),
            "messages[1]: id 'nope' is not a UUID",
        ),
        (
            json!([good(), good(), json!({ "id": new_id() })]),
            "messages[2]: payload is required",
        ),
        (
            json!([
                message(&repeated, json!(1)),
                good(),
                message(&repeated, json!(3))
            ]),
            "messages[2]: id",
        ),
        (
            json!([good(), "text"]),
            "messages[1]: message must be an object",
        ),
        (
            Value::Array((0..1001).map(|_| good()).collect()),
            "not 1001",
        ),
    ];
    assert_each_refused(&server, "/topics/orders/messages", cases).await;
    let unknown = server
        .post_json("/topics/missing/messages", &json!([good()]))
        .await;
    assert_error_reply(
        &unknown,
        404,
        "TOPIC_NOT_FOUND",
        "a batch to an unknown topic",
    );
    ping_pong(&mut subscriber, "nothing was published").await;
    assert_eq!(server.counter("published").await, 0);
    let largest = Value::Array((0..1000).map(|_| good()).collect());
    let reply = server.post_json("/topics/orders/messages", &largest).await;
    assert_eq!(
        reply.1["seqs"].as_array().map(Vec::len),
        Some(1000),
        "{}",
        reply.1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_broadcast_answers_each_topic_in_order_and_reaches_every_existing_one() {
    let server = TestServer::start(&[]).await;
    for topic in ["a", "b"] {
        server.create_topic(topic).await;
    }
    server
        .post_json("/topics/b/messages", &message(&new_id(), json!("before")))
        .await;
    let (mut on_a, mut on_b) = (server.ws().await, server.ws().await);
    subscribe(&mut on_a, "a", 0).await;
    subscribe(&mut on_b, "b", 0).await;
    let body = json!({ "topics": ["a", "missing", "b"], "message": message(&new_id(), json!({ "x": 1 })) });
    let (status, reply) = server.post_json("/broadcast", &body).await;
    assert_eq!(status, 200, "{reply}");
    let results = reply["results"].as_array().expect("results");
    assert_eq!(results[0], json!({ "topic": "a", "seq": 1 }));
    assert_eq!(results[2], json!({ "topic": "b", "seq": 2 }));
    let missing = &results[1];
    assert_eq!(missing["topic"], "missing");
    assert_eq!(missing["error"]["code"], "TOPIC_NOT_FOUND", "{missing}");
    assert!(missing["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("missing")));
    assert!(
        missing.get("seq").is_none() && missing.get("duplicate").is_none(),
        "{missing}"
    );
    assert_eq!(received_payloads(&mut on_a, 1).await, [json!({ "x": 1 })]);
    assert_eq!(received_payloads(&mut on_b, 1).await, [json!({ "x": 1 })]);

    let (_, again) = server.post_json("/broadcast", &body).await;
    assert_eq!(
        again["results"][0],
        json!({ "topic": "a", "seq": 1, "duplicate": true })
    );
    assert_eq!(
        again["results"][2],
        json!({ "topic": "b", "seq": 2, "duplicate": true })
    );
    ping_pong(&mut on_a, "delivered once").await;
    ping_pong(&mut on_b, "delivered once").await;
    server.stop().await;
}

#[tokio::test]
async fn a_bad_broadcast_is_refused_whole() {
    let (server, mut subscriber) = subscribed("a").await;
    let good = || message(&new_id(), json!(1));
    let many: Vec<String> = (0..1001).map(|n| format!("t{n}")).collect();
    let cases = [
        (json!({ "topics": [], "message": good() }), "not 0"),
        (json!({ "topics": many, "message": good() }), "not 1001"),
        (
            json!({ "topics": ["a", "a"], "message": good() }),
            "topics[1]",
        ),
        (
            json!({ "topics": ["a", "no/slash"], "message": good() }),
            "topics[1]",
        ),
        (
            json!({ "topics": ["a"], "message": message("nope", json!(1)) }),
            "message: id 'nope' is not a UUID",
        ),
        (json!({ "topics": ["a"] }), "message"),
        (json!(["a"]), "topics"),
    ];
    assert_each_refused(&server, "/broadcast", cases).await;
    ping_pong(&mut subscriber, "nothing was published").await;
    let everywhere: Vec<String> = (0..1000).map(|n| format!("t{n}")).collect();
    let reply = server
        .post_json(
            "/broadcast",
            &json!({ "topics": everywhere, "message": good() }),
        )
        .await;
    assert_eq!(
        reply.1["results"].as_array().map(Vec::len),
        Some(1000),
        "{}",
        reply.1
    );
    server.stop().await;
}
