//! Topic options on `POST /topics` (`history_size`, `history_ttl`,
//! `presence_events`): shown by `GET /topics` and `GET /topics/{name}`,
//! refused out of range naming the option, and honoured by `last_n`
//! replay, `since_seq` recovery and `GET /topics/{name}/messages`.

use crate::common::*;
use serde_json::{json, Value};

async fn create(server: &TestServer, body: Value) -> (u16, Value) {
    server.post_json("/topics", &body).await
}

async fn publish(server: &TestServer, topic: &str, n: u64) {
    let (status, body) = server
        .post_json(
            &format!("/topics/{topic}/messages"),
            &message_body(json!(n)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The `seq`s `GET /topics/{topic}/messages` returns, and `recovered`
/// after `since_seq` when given.
async fn history(server: &TestServer, topic: &str, since_seq: Option<u64>) -> (Vec<u64>, Value) {
    let query = since_seq.map_or(String::new(), |seq| format!("?since_seq={seq}"));
    let (status, body) = server
        .get_json(&format!("/topics/{topic}/messages{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let seqs = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    (seqs, body["recovered"].clone())
}

#[tokio::test]
async fn options_are_shown_by_both_topic_views() {
    let server = TestServer::start(&[]).await;
    let body =
        json!({ "name": "chat", "history_size": 5, "history_ttl": "10m", "presence_events": true });
    let (status, reply) = create(&server, body).await;
    assert_eq!(
        (status, reply),
        (201, json!({ "status": "created", "topic": "chat" }))
    );
    server.create_topic("plain").await;
    let chat = json!({
        "name": "chat", "subscribers": 0, "messages": 0,
        "history_size": 5, "history_ttl": "10m", "presence_events": true,
    });
    let plain = json!({
        "name": "plain", "subscribers": 0, "messages": 0,
        "history_size": 100, "history_ttl": null, "presence_events": false,
    });
    let (status, row) = server.get_json("/topics/chat").await;
    assert_eq!((status, &row), (200, &chat));
    let (status, row) = server.get_json("/topics/plain").await;
    assert_eq!((status, &row), (200, &plain));
    let (_, list) = server.get_json("/topics").await;
    assert_eq!(list["topics"], json!([chat, plain]));
    let missing = server.get_json("/topics/missing").await;
    assert_error_reply(&missing, 404, "TOPIC_NOT_FOUND", "GET an unknown topic");
    let bad = server.get_json("/topics/a%20b").await;
    assert_error_reply(&bad, 400, "BAD_REQUEST", "GET a bad name");
    server.stop().await;
}

#[tokio::test]
async fn an_option_out_of_range_or_of_the_wrong_type_is_400_naming_it() {
    let server = TestServer::start(&["--max-history-size", "50"]).await;
    for (option, value) in [
        ("history_size", json!(51)),
        ("history_size", json!(-1)),
        ("history_size", json!("5")),
        ("history_ttl", json!("soon")),
        ("history_ttl", json!(600)),
        ("history_ttl", json!("1 m")),
        ("presence_events", json!("yes")),
    ] {
        let mut body = json!({ "name": "t" });
        body[option] = value.clone();
        let reply = create(&server, body).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", &format!("{option} {value}"));
        let message = reply.1["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(option), "{option} {value}: {message}");
    }
    let (status, list) = server.get_json("/topics").await;
    assert_eq!(
        (status, list["topics"].clone()),
        (200, json!([])),
        "nothing half-made"
    );
    let (status, _) = create(&server, json!({ "name": "t", "history_size": 50 })).await;
    assert_eq!(status, 201, "MAX_HISTORY_SIZE itself is allowed");
    let (status, _) = create(&server, json!({ "name": "u", "history_ttl": "0s" })).await;
    assert_eq!(status, 201);
    let (_, row) = server.get_json("/topics/u").await;
    assert_eq!(row["history_ttl"], Value::Null, "0s: no TTL");
    server.stop().await;
}

#[tokio::test]
async fn history_size_bounds_replay_recovery_and_history() {
    let server = TestServer::start(&[]).await;
    let (status, _) = create(&server, json!({ "name": "short", "history_size": 3 })).await;
    assert_eq!(status, 201);
    for n in 1..=10 {
        publish(&server, "short", n).await;
    }
    assert_eq!(history(&server, "short", None).await.0, [8, 9, 10]);
    assert_eq!(
        history(&server, "short", Some(7)).await,
        (vec![8, 9, 10], json!(true))
    );
    assert_eq!(
        history(&server, "short", Some(5)).await,
        (vec![8, 9, 10], json!(false))
    );

    let mut ws = server.ws().await;
    subscribe(&mut ws, "short", 100).await;
    for seq in 8..=10 {
        assert_eq!(recv(&mut ws).await["seq"], seq);
    }
    send(
        &mut ws,
        json!({ "type": "subscribe", "topic": "short", "since_seq": 6, "request_id": "r" }),
    )
    .await;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    server.stop().await;
}

#[tokio::test]
async fn events_older_than_history_ttl_are_neither_replayed_nor_returned() {
    let server = TestServer::start(&[]).await;
    let (status, _) = create(&server, json!({ "name": "brief", "history_ttl": "300ms" })).await;
    assert_eq!(status, 201);
    for n in 1..=3 {
        publish(&server, "brief", n).await;
    }
    wait_until("the events to expire", || async {
        match history(&server, "brief", None).await.0 {
            seqs if seqs.is_empty() => Ok(()),
            seqs => Err(format!("{seqs:?}")),
        }
    })
    .await;
    assert_eq!(
        history(&server, "brief", Some(1)).await,
        (vec![], json!(false)),
        "2 and 3 expired"
    );
    assert_eq!(
        history(&server, "brief", Some(3)).await,
        (vec![], json!(true))
    );
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({ "type": "subscribe", "topic": "brief", "since_seq": 0, "request_id": "r" }),
    )
    .await;
    let ack = recv(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), &ack["recovered"]),
        (Some("ack"), &json!(false)),
        "{ack}"
    );
    publish(&server, "brief", 4).await;
    assert_eq!(
        recv(&mut ws).await["seq"],
        4,
        "live, with nothing replayed before"
    );
    server.stop().await;
}
