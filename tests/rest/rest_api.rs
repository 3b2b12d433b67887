//! REST API over real HTTP: topic management, listing, health, stats,
//! publishing over HTTP, routing errors and body limits.

use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Sends a request with an optional raw body and returns the response.
async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<String>,
) -> reqwest::Response {
    let mut builder = server.http.request(method, server.url(path));
    if let Some(body) = body {
        builder = builder
            .header("content-type", "application/json")
            .body(body);
    }
    builder.send().await.expect("http request")
}

/// Status and JSON body of a request.
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<String>,
) -> (u16, Value) {
    json_reply(request(server, method, path, body).await).await
}

/// The names `GET /topics` lists, sorted.
async fn topic_names(server: &TestServer) -> Vec<String> {
    let counts = server.subscriber_counts().await;
    counts.into_iter().map(|(name, _)| name).collect()
}

/// A server with topic `orders` (plus `extra` topics) and one client
/// subscribed to `orders`.
async fn orders_with_subscriber(extra: &[&str]) -> (TestServer, Ws) {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    for topic in extra {
        server.create_topic(topic).await;
    }
    let mut sub = server.ws().await;
    subscribe(&mut sub, "orders", 0).await;
    (server, sub)
}

#[tokio::test]
async fn create_topic_returns_201_then_409_for_a_duplicate() {
    let server = TestServer::start(&[]).await;
    let created = server
        .post_json("/topics", &json!({ "name": "orders" }))
        .await;
    assert_eq!(
        created,
        (201, json!({ "status": "created", "topic": "orders" }))
    );
    let duplicate = server
        .post_json("/topics", &json!({ "name": "orders" }))
        .await;
    assert_error_reply(&duplicate, 409, "TOPIC_EXISTS", "duplicate topic");
    assert_eq!(server.subscriber_counts().await, [("orders".to_owned(), 0)]);
    server.stop().await;
}

#[tokio::test]
async fn create_topic_rejects_bad_bodies() {
    let server = TestServer::start(&[]).await;
    let bodies = [
        ("not JSON", "{not json"),
        ("empty body", ""),
        ("truncated JSON", r#"{"name":"orders""#),
        ("JSON array", r#"["orders"]"#),
        ("JSON string", r#""orders""#),
        ("missing name", r#"{"topic":"orders"}"#),
        ("numeric name", r#"{"name":42}"#),
        ("null name", r#"{"name":null}"#),
        ("object name", r#"{"name":{"x":"orders"}}"#),
    ];
    for (what, body) in bodies {
        let reply = call(&server, Method::POST, "/topics", Some(body.to_owned())).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", what);
    }
    assert!(
        server.subscriber_counts().await.is_empty(),
        "no topic may have been created"
    );
    server.stop().await;
}

#[tokio::test]
async fn create_topic_validates_names() {
    let server = TestServer::start(&[]).await;
    let too_long = "a".repeat(256);
    for name in [
        "",
        "a b",
        "a/b",
        "é",
        "tab\t",
        "semi;colon",
        "star*",
        too_long.as_str(),
    ] {
        let reply = server.post_json("/topics", &json!({ "name": name })).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", &format!("name {name:?}"));
    }
    let longest = "b".repeat(255);
    let valid = [
        "x",
        "orders.eu-1:v2_X",
        "0123456789",
        "__",
        longest.as_str(),
    ];
    for name in valid {
        let reply = server.post_json("/topics", &json!({ "name": name })).await;
        assert_eq!(
            reply,
            (201, json!({ "status": "created", "topic": name })),
            "name {name:?}"
        );
    }
    let mut expected: Vec<String> = valid.iter().map(|name| name.to_string()).collect();
    expected.sort();
    assert_eq!(topic_names(&server).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn delete_topic_returns_200_then_404_and_notifies_subscribers() {
    let (server, mut sub) = orders_with_subscriber(&["keep"]).await;

    assert_eq!(
        server.delete_json("/topics/orders").await,
        (200, json!({ "status": "deleted", "topic": "orders" }))
    );
    let notice = recv(&mut sub).await;
    assert_eq!(notice["type"], "info", "{notice}");
    assert_eq!(notice["topic"], "orders", "{notice}");
    assert_eq!(notice["msg"], "topic_deleted", "{notice}");
    // The subscriber is unsubscribed, not disconnected.
    ping_pong(&mut sub, "still-there").await;

    assert_error_reply(
        &server.delete_json("/topics/orders").await,
        404,
        "TOPIC_NOT_FOUND",
        "second delete",
    );
    assert_error_reply(
        &server.delete_json("/topics/never").await,
        404,
        "TOPIC_NOT_FOUND",
        "unknown topic",
    );
    assert_eq!(server.subscriber_counts().await, [("keep".to_owned(), 0)]);
    // The name is free again.
    assert_eq!(
        server
            .post_json("/topics", &json!({ "name": "orders" }))
            .await
            .0,
        201
    );
    server.stop().await;
}

#[tokio::test]
async fn list_topics_tracks_subscribe_unsubscribe_and_disconnect() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    server.create_topic("prices").await;
    let mut first = server.ws().await;
    let mut second = server.ws().await;
    subscribe(&mut first, "orders", 0).await;
    subscribe(&mut second, "orders", 0).await;
    subscribe(&mut second, "prices", 0).await;
    let expected = [("orders".to_owned(), 2), ("prices".to_owned(), 1)];
    assert_eq!(server.subscriber_counts().await, expected);

    send(
        &mut first,
        json!({ "type": "unsubscribe", "topic": "orders", "request_id": "u1" }),
    )
    .await;
    let ack = recv(&mut first).await;
    assert_eq!(
        (&ack["type"], &ack["request_id"]),
        (&json!("ack"), &json!("u1")),
        "{ack}"
    );
    // The ack is sent after the subscription is gone.
    assert_eq!(server.subscribers_of("orders").await, Some(1));

    // An abrupt disconnect (no close frame) must also release subscriptions.
    drop(second);
    let released = [("orders".to_owned(), 0), ("prices".to_owned(), 0)];
    wait_until(
        "subscriptions of a dropped client to be released",
        || async {
            let counts = server.subscriber_counts().await;
            if counts == released {
                Ok(())
            } else {
                Err(format!("GET /topics: {counts:?}"))
            }
        },
    )
    .await;
    let (_, health) = server.get_json("/health").await;
    assert_eq!(health["subscribers"], 0, "{health}");
    server.stop().await;
}

#[tokio::test]
async fn closing_a_socket_releases_its_subscription() {
    let (server, mut sub) = orders_with_subscriber(&[]).await;
    assert_eq!(server.subscribers_of("orders").await, Some(1));
    sub.close(None).await.expect("close handshake");
    server.wait_for_subscribers("orders", 0).await;
    server.stop().await;
}

#[tokio::test]
async fn health_reports_uptime_topics_and_subscribers() {
    let server = TestServer::start(&[]).await;
    let (status, body) = server.get_json("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["uptime_sec"].is_u64(),
        "uptime_sec must be a non-negative integer: {body}"
    );
    assert_eq!(
        (&body["topics"], &body["subscribers"]),
        (&json!(0), &json!(0)),
        "{body}"
    );

    server.create_topic("a").await;
    server.create_topic("b").await;
    let mut sub = server.ws().await;
    subscribe(&mut sub, "a", 0).await;
    subscribe(&mut sub, "b", 0).await;
    let mut other = server.ws().await;
    subscribe(&mut other, "a", 0).await;
    let (status, body) = server.get_json("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["uptime_sec"].is_u64(), "{body}");
    assert_eq!(
        (&body["topics"], &body["subscribers"]),
        (&json!(2), &json!(3)),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn stats_count_messages_and_subscribers_per_topic() {
    let (server, _sub) = orders_with_subscriber(&["quiet"]).await;

    // Two publishes over WebSocket, one over REST, one rejected.
    let mut publisher = server.ws().await;
    for request_id in ["p1", "p2"] {
        publish_acked(&mut publisher, "orders", json!(request_id), request_id).await;
    }
    assert_eq!(
        server
            .post_json("/topics/orders/messages", &message_body(json!(3)))
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .post_json(
                "/topics/orders/messages",
                &json!({ "id": "nope", "payload": 4 })
            )
            .await
            .0,
        400
    );

    let (status, body) = server.get_json("/stats").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["topics"]["orders"],
        json!({ "messages": 3, "subscribers": 1 }),
        "{body}"
    );
    assert_eq!(
        body["topics"]["quiet"],
        json!({ "messages": 0, "subscribers": 0 }),
        "{body}"
    );
    assert_eq!(
        body["topics"].as_object().map(|topics| topics.len()),
        Some(2),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn rest_publish_returns_seq_and_reaches_subscribers() {
    let (server, mut sub) = orders_with_subscriber(&["other"]).await;

    let payloads = [
        json!({ "n": 1, "nested": { "list": [1, 2.5, -3, null, true] } }),
        json!("héllo ☃ 😀"),
        json!([123456789012_i64, 1e-10, "x"]),
    ];
    for (index, payload) in payloads.iter().enumerate() {
        let body = message_body(payload.clone());
        let seq = index as u64 + 1;
        let reply = server.post_json("/topics/orders/messages", &body).await;
        assert_eq!(
            reply,
            (
                200,
                json!({ "status": "published", "topic": "orders", "seq": seq })
            )
        );
        let event = recv(&mut sub).await;
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["topic"], "orders", "{event}");
        assert_eq!(event["seq"], seq, "{event}");
        assert_eq!(event["message"]["id"], body["id"], "{event}");
        assert_eq!(event["message"]["payload"], *payload, "{event}");
        assert_ts(&event);
    }
    // Sequence numbers are per topic.
    let reply = server
        .post_json("/topics/other/messages", &message_body(json!(null)))
        .await;
    assert_eq!(
        reply,
        (
            200,
            json!({ "status": "published", "topic": "other", "seq": 1 })
        )
    );
    let reply = server
        .post_json("/topics/orders/messages", &message_body(json!(0)))
        .await;
    assert_eq!(reply.1["seq"], 4, "{}", reply.1);
    // The subscriber of `orders` sees only its own topic's events.
    assert_eq!(recv(&mut sub).await["seq"], 4);
    server.stop().await;
}

#[tokio::test]
async fn rest_publish_rejects_bad_bodies_without_consuming_a_seq() {
    let (server, mut sub) = orders_with_subscriber(&[]).await;
    let id = uuid::Uuid::new_v4().to_string();
    let bodies = [
        ("not JSON", "{oops".to_owned()),
        ("empty body", String::new()),
        ("JSON array", "[1,2]".to_owned()),
        ("missing id", json!({ "payload": 1 }).to_string()),
        (
            "non-UUID id",
            json!({ "id": "not-a-uuid", "payload": 1 }).to_string(),
        ),
        ("numeric id", json!({ "id": 7, "payload": 1 }).to_string()),
        ("missing payload", json!({ "id": id }).to_string()),
    ];
    for (what, body) in bodies {
        let reply = call(&server, Method::POST, "/topics/orders/messages", Some(body)).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", what);
    }
    // Nothing was published: the next good publish is seq 1 and is the
    // first event the subscriber sees.
    let reply = server
        .post_json("/topics/orders/messages", &message_body(json!("first")))
        .await;
    assert_eq!(
        reply,
        (
            200,
            json!({ "status": "published", "topic": "orders", "seq": 1 })
        )
    );
    let event = recv(&mut sub).await;
    assert_eq!(
        (&event["seq"], &event["message"]["payload"]),
        (&json!(1), &json!("first")),
        "{event}"
    );
    server.stop().await;
}

#[tokio::test]
async fn rest_publish_to_unknown_topic_is_404() {
    let server = TestServer::start(&[]).await;
    let reply = server
        .post_json("/topics/missing/messages", &message_body(json!(1)))
        .await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "publish to unknown topic");
    server.create_topic("gone").await;
    assert_eq!(server.delete_json("/topics/gone").await.0, 200);
    let reply = server
        .post_json("/topics/gone/messages", &message_body(json!(1)))
        .await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "publish to deleted topic");
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let cases = [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/topics/orders/messages/1"),
        (Method::POST, "/topics/orders/other"),
        (Method::GET, "/healthz"),
    ];
    for (method, path) in cases {
        let reply = call(&server, method.clone(), path, None).await;
        assert_eq!(reply.0, 404, "{method} {path}: {}", reply.1);
        assert!(
            reply.1["error"]["code"].is_string(),
            "{method} {path}: {}",
            reply.1
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let cases: [(Method, &str, &[&str]); 7] = [
        (Method::PUT, "/topics", &["GET", "POST"]),
        (Method::DELETE, "/topics", &["GET", "POST"]),
        (Method::POST, "/topics/orders", &["GET", "DELETE"]),
        (Method::POST, "/health", &["GET"]),
        (Method::DELETE, "/stats", &["GET"]),
        (Method::PUT, "/topics/orders/messages", &["GET", "POST"]),
        (Method::PATCH, "/topics/orders/messages", &["GET", "POST"]),
    ];
    for (method, path, allowed) in cases {
        let response = request(&server, method.clone(), path, None).await;
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let allow = response
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path}: 405 without an Allow header"))
            .to_str()
            .unwrap()
            .to_owned();
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for expected in allowed {
            assert!(
                listed.contains(expected),
                "{method} {path}: Allow {allow:?} lacks {expected}"
            );
        }
        assert!(
            !listed.contains(&method.as_str()),
            "{method} {path}: Allow {allow:?} lists the refused method"
        );
    }
    // The topic is untouched by the refused requests.
    assert_eq!(server.subscriber_counts().await, [("orders".to_owned(), 0)]);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_max_message_size_are_413() {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    server.create_topic("orders").await;
    let padded =
        |len: usize, prefix: &str| format!("{prefix}{}", " ".repeat(len - prefix.len() - 1)) + "}";

    let big_topic = padded(2000, r#"{"name":"big""#);
    let big_message = message_body(json!("x".repeat(2000))).to_string();
    let one_over = padded(1025, r#"{"name":"over""#);
    let cases = [
        ("/topics", big_topic),
        ("/topics/orders/messages", big_message),
        ("/topics", one_over),
    ];
    for (path, body) in cases {
        let len = body.len();
        let reply = call(&server, Method::POST, path, Some(body)).await;
        assert_eq!(reply.0, 413, "{len}-byte body to {path}: {}", reply.1);
        assert!(
            reply.1["error"]["code"].is_string(),
            "{len}-byte body to {path}: {}",
            reply.1
        );
    }

    // Exactly the limit is accepted.
    let at_limit = padded(1024, r#"{"name":"fits""#);
    assert_eq!(at_limit.len(), 1024);
    let reply = call(&server, Method::POST, "/topics", Some(at_limit)).await;
    assert_eq!(
        reply,
        (201, json!({ "status": "created", "topic": "fits" }))
    );
    assert_eq!(topic_names(&server).await, ["fits", "orders"]);
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["topics"]["orders"]["messages"], 0, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn ws_path_without_upgrade_headers_is_426() {
    let server = TestServer::start(&[]).await;
    let response = request(&server, Method::GET, "/ws", None).await;
    assert_eq!(response.status().as_u16(), 426);
    server.stop().await;
}

/// A request with a raw body sent under `content_type` (none if `None`).
async fn post_typed(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut builder = server.http.post(server.url(path)).body(body);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    json_reply(builder.send().await.expect("http request")).await
}

#[tokio::test]
async fn json_endpoints_refuse_other_content_types_with_415() {
    let (server, mut sub) = orders_with_subscriber(&[]).await;
    let topic = json!({ "name": "fresh" }).to_string();
    let message = message_body(json!(1)).to_string();
    // What a page on any site may send without a CORS preflight.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        for (path, body) in [("/topics", &topic), ("/topics/orders/messages", &message)] {
            let reply = post_typed(&server, path, content_type, body.clone()).await;
            assert_error_reply(
                &reply,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                &format!("POST {path} as {content_type:?}"),
            );
        }
    }
    assert_eq!(topic_names(&server).await, ["orders"], "nothing created");
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(
        stats["topics"]["orders"]["messages"], 0,
        "nothing published"
    );
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        // A fresh id each: the same one again would be a duplicate.
        let reply = post_typed(
            &server,
            "/topics/orders/messages",
            Some(content_type),
            message_body(json!(1)).to_string(),
        )
        .await;
        assert_eq!(reply.0, 200, "{content_type}: {}", reply.1);
    }
    assert_eq!(
        recv(&mut sub).await["seq"],
        1,
        "only the JSON publishes arrived"
    );
    assert_eq!(recv(&mut sub).await["seq"], 2);
    server.stop().await;
}

#[tokio::test]
async fn topic_names_in_paths_are_percent_decoded() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a:b").await;
    let mut sub = server.ws().await;
    subscribe(&mut sub, "a:b", 0).await;
    // What encodeURIComponent("a:b") and Python's quote("a:b", safe="") give.
    let (status, body) = call(
        &server,
        Method::POST,
        "/topics/a%3Ab/messages",
        Some(message_body(json!("x")).to_string()),
    )
    .await;
    assert_eq!((status, &body["topic"]), (200, &json!("a:b")), "{body}");
    assert_eq!(recv(&mut sub).await["topic"], "a:b");
    let (status, body) = call(&server, Method::DELETE, "/topics/a%3ab", None).await;
    assert_eq!((status, &body["topic"]), (200, &json!("a:b")), "{body}");
    // A decoded '/' stays in the name, which no topic can have.
    for path in ["/topics/a%2Fb", "/topics/%FF", "/topics/a%20b/messages"] {
        let method = if path.ends_with("messages") {
            Method::POST
        } else {
            Method::DELETE
        };
        let body = path
            .ends_with("messages")
            .then(|| message_body(json!(1)).to_string());
        let reply = call(&server, method, path, body).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", path);
    }
    server.stop().await;
}

#[tokio::test]
async fn dot_and_dot_dot_are_not_topic_names() {
    let server = TestServer::start(&[]).await;
    for name in [".", ".."] {
        let reply = server.post_json("/topics", &json!({ "name": name })).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", name);
    }
    server.create_topic("...").await;
    server.create_topic(".hidden").await;
    assert_eq!(topic_names(&server).await, ["...", ".hidden"]);
    server.stop().await;
}

#[tokio::test]
async fn head_answers_wherever_get_does() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    for path in ["/health", "/stats", "/topics"] {
        let get = request(&server, Method::GET, path, None).await;
        let head = request(&server, Method::HEAD, path, None).await;
        assert_eq!(
            (get.status().as_u16(), head.status().as_u16()),
            (200, 200),
            "HEAD {path}"
        );
        assert_eq!(
            head.headers()["content-type"],
            "application/json",
            "HEAD {path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn options_answers_204_with_allow() {
    let server = TestServer::start(&["--api-key", "k"]).await;
    for (path, allow) in [
        ("/health", "GET, HEAD, OPTIONS"),
        ("/stats", "GET, HEAD, OPTIONS"),
        ("/topics", "GET, HEAD, POST, OPTIONS"),
        ("/topics/orders", "GET, HEAD, DELETE, OPTIONS"),
        ("/topics/orders/messages", "GET, HEAD, POST, OPTIONS"),
    ] {
        // A browser's preflight carries no key.
        let response = request(&server, Method::OPTIONS, path, None).await;
        assert_eq!(response.status(), 204, "OPTIONS {path}");
        assert_eq!(response.headers()["allow"], allow, "OPTIONS {path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn health_counts_follow_every_way_a_subscription_ends() {
    let server = TestServer::start(&[]).await;
    for topic in ["a", "b", "c"] {
        server.create_topic(topic).await;
    }
    let counts = || async {
        let (_, body) = server.get_json("/health").await;
        (
            body["topics"].as_u64().unwrap(),
            body["subscribers"].as_u64().unwrap(),
        )
    };
    let mut one = server.ws().await;
    let mut two = server.ws().await;
    for topic in ["a", "b", "c"] {
        subscribe(&mut one, topic, 0).await;
    }
    subscribe(&mut one, "a", 0).await; // twice is once
    subscribe(&mut two, "a", 0).await;
    assert_eq!(counts().await, (3, 4));
    send(
        &mut one,
        json!({ "type": "unsubscribe", "topic": "b", "request_id": "u" }),
    )
    .await;
    expect_ack(&mut one, "b", "u").await;
    assert_eq!(counts().await, (3, 3));
    server.delete_json("/topics/a").await;
    assert_eq!(
        counts().await,
        (2, 1),
        "both subscriptions to a went with it"
    );
    drop(one);
    wait_until("the closed connection's subscription is gone", || async {
        match counts().await {
            (2, 0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(two);
    server.stop().await;
}
