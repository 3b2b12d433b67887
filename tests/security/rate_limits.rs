//! Publish rate limits: a token bucket per WebSocket connection, and per
//! credential (per peer address without auth) over REST; refused publishes
//! are not published.

use std::time::Duration;

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;

/// A limit that never refills during a test: exactly `burst` publishes.
fn no_refill(burst: &'static str) -> [&'static str; 4] {
    ["--publish-rate-limit", "1/h", "--publish-burst", burst]
}

async fn publish_over_rest(
    server: &TestServer,
    topic: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut builder = server
        .http
        .post(server.url(&format!("/topics/{topic}/messages")))
        .json(&message_body(json!(1)));
    if let Some(key) = key {
        builder = builder.header("X-API-Key", key);
    }
    builder.send().await.unwrap()
}

async fn messages_in(server: &TestServer, topic: &str) -> u64 {
    server.stats().await["topics"][topic]["messages"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn each_websocket_connection_has_its_own_bucket() {
    let server = TestServer::start(&no_refill("3")).await;
    server.create_topic("orders").await;
    let mut publisher = server.ws().await;
    for n in 0..3 {
        publish_acked(&mut publisher, "orders", json!(n), &format!("p{n}")).await;
    }
    send(&mut publisher, publish_frame("orders", json!(3), "over")).await;
    expect_error(
        &mut publisher,
        "RATE_LIMITED",
        Some("over"),
        "fourth publish",
    )
    .await;
    ping_pong(&mut publisher, "still-open").await;
    assert_eq!(messages_in(&server, "orders").await, 3, "not published");

    let mut other = server.ws().await;
    publish_acked(&mut other, "orders", json!("other"), "o").await;
    let stats = server.stats().await;
    assert_eq!(stats["topics"]["orders"]["messages"], 4, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_bucket_refills_at_the_rate() {
    let server = TestServer::start(&["--publish-rate-limit", "10/s", "--publish-burst", "1"]).await;
    server.create_topic("orders").await;
    let mut ws = server.ws().await;
    // Back to back, a publish soon lands within the 100 ms interval.
    let mut limited = false;
    for n in 0..50 {
        send(&mut ws, publish_frame("orders", json!(n), "p")).await;
        let reply = recv(&mut ws).await;
        if reply["type"] == "error" {
            assert_eq!(reply["error"]["code"], "RATE_LIMITED", "{reply}");
            limited = true;
            break;
        }
        assert_eq!(reply["type"], "ack", "{reply}");
    }
    assert!(limited, "50 back-to-back publishes never hit 10/s");
    tokio::time::sleep(Duration::from_millis(150)).await;
    publish_acked(&mut ws, "orders", json!("refilled"), "after").await;
    server.stop().await;
}

#[tokio::test]
async fn rest_publishes_are_limited_per_peer_without_auth() {
    let server = TestServer::start(&no_refill("2")).await;
    server.create_topic("orders").await;
    for _ in 0..2 {
        assert_eq!(
            publish_over_rest(&server, "orders", None).await.status(),
            200
        );
    }
    let refused = publish_over_rest(&server, "orders", None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let reply = json_reply(refused).await;
    assert_error_reply(&reply, 429, "RATE_LIMITED", "third publish");
    assert_eq!(messages_in(&server, "orders").await, 2, "not published");

    let metrics = server.get_text("/metrics").await;
    for series in [
        r#"ringcast_publishes_rate_limited_total{transport="rest"} 1"#,
        r#"ringcast_publish_errors_total{code="RATE_LIMITED"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn rest_publishes_are_limited_per_credential() {
    let mut args = no_refill("1").to_vec();
    args.extend(["--api-key", "k1,k2"]);
    let server = TestServer::start(&args).await;
    server.create_topic_with_key("orders", "k1").await;
    let status = |response: reqwest::Response| response.status().as_u16();
    assert_eq!(
        status(publish_over_rest(&server, "orders", Some("k1")).await),
        200
    );
    assert_eq!(
        status(publish_over_rest(&server, "orders", Some("k1")).await),
        429
    );
    assert_eq!(
        status(publish_over_rest(&server, "orders", Some("k2")).await),
        200,
        "another key has its own bucket"
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_of_one_subject_share_a_rest_bucket() {
    const SECRET: &str = "rate-limit-secret";
    let mut args = no_refill("1").to_vec();
    args.extend(["--jwt-secret", SECRET]);
    let server = TestServer::start(&args).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = |sub: &str, admin: bool| {
        let claims = json!({ "exp": exp, "sub": sub, "publish": ["*"], "admin": admin });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let created = server
        .http
        .post(server.url("/topics"))
        .bearer_auth(token("ops", true))
        .json(&json!({ "name": "orders" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let publish = |token: String| {
        let request = server
            .http
            .post(server.url("/topics/orders/messages"))
            .bearer_auth(token)
            .json(&message_body(json!(1)));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(publish(token("alice", false)).await, 200);
    assert_eq!(
        publish(token("alice", true)).await,
        429,
        "a second token for alice draws on her bucket"
    );
    assert_eq!(publish(token("bob", false)).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_and_a_broadcast_each_take_one_rest_token() {
    let server = TestServer::start(&no_refill("2")).await;
    server.create_topic("orders").await;
    let batch = json!([
        message_body(json!(1)),
        message_body(json!(2)),
        message_body(json!(3))
    ]);
    let broadcast = json!({ "topics": ["orders"], "message": message_body(json!(4)) });
    assert_eq!(
        server.post_json("/topics/orders/messages", &batch).await.0,
        200
    );
    assert_eq!(server.post_json("/broadcast", &broadcast).await.0, 200);
    let refused = server.post_json("/broadcast", &broadcast).await;
    assert_error_reply(&refused, 429, "RATE_LIMITED", "the third request");
    server.stop().await;
}
