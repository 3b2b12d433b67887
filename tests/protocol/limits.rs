//! Abuse limits: each refuses with a clear error, is configurable, and
//! leaves every other client untouched.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Opens `/ws` with an optional `Origin` header.
async fn connect_from(server: &TestServer, origin: Option<&str>) -> Result<Ws, WsError> {
    let mut request = server.ws_url().into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Asserts the upgrade was refused before upgrading, and returns the
/// response's status, JSON body and headers.
#[track_caller]
fn refused(result: Result<Ws, WsError>) -> (u16, Value, hyper::HeaderMap) {
    match result {
        Ok(_) => panic!("upgrade was accepted"),
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let body = serde_json::from_slice(body).expect("JSON error body");
            (response.status().as_u16(), body, response.headers().clone())
        }
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

async fn health(server: &TestServer, field: &str) -> u64 {
    server.get_json("/health").await.1[field]
        .as_u64()
        .expect("numeric health field")
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_before_the_upgrade() {
    let server = TestServer::start(&["--max-connections", "2"]).await;
    let mut first = server.ws().await;
    let _second = server.ws().await;
    let (status, body, headers) = refused(connect_from(&server, None).await);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_CONNECTIONS", "{body}");
    assert_eq!(headers["retry-after"], "1");
    ping_pong(&mut first, "still-served").await;
    let stats = server.get_json("/stats").await.1;
    assert_eq!(stats["connections_refused"], 1, "{stats}");

    drop(first);
    wait_until("the closed connection's slot to free up", || async {
        match health(&server, "connections").await {
            1 => Ok(()),
            n => Err(format!("{n} connections")),
        }
    })
    .await;
    let mut third = server.ws().await;
    ping_pong(&mut third, "after-a-slot-freed").await;
}

#[tokio::test]
async fn subscriptions_beyond_the_per_connection_limit_are_bad_requests() {
    let server = TestServer::start(&["--max-subscriptions-per-connection", "2"]).await;
    for topic in ["a", "b", "c"] {
        server.create_topic(topic).await;
    }
    let mut ws = server.ws().await;
    subscribe(&mut ws, "a", 0).await;
    subscribe(&mut ws, "b", 0).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "topic": "c", "request_id": "third"}),
    )
    .await;
    expect_error(&mut ws, "BAD_REQUEST", Some("third"), "third subscription").await;
    assert_eq!(server.subscribers_of("c").await, Some(0));

    subscribe(&mut ws, "a", 0).await;
    ping_pong(&mut ws, "resubscribing is not a new subscription").await;

    send(
        &mut ws,
        json!({"type": "unsubscribe", "topic": "a", "request_id": "u"}),
    )
    .await;
    expect_ack(&mut ws, "a", "u").await;
    subscribe(&mut ws, "c", 0).await;

    assert_eq!(server.delete_json("/topics/b").await.0, 200);
    let notice = recv(&mut ws).await;
    assert_eq!(notice["msg"], "topic_deleted", "{notice}");
    subscribe(&mut ws, "a", 0).await;
    assert_eq!(server.subscribers_of("a").await, Some(1));
}

#[tokio::test]
async fn topics_beyond_the_limit_are_refused_until_one_is_deleted() {
    let server = TestServer::start(&["--max-topics", "2"]).await;
    server.create_topic("one").await;
    server.create_topic("two").await;
    let reply = server.post_json("/topics", &json!({"name": "three"})).await;
    assert_error_reply(&reply, 400, "TOPIC_LIMIT", "third topic");
    let duplicate = server.post_json("/topics", &json!({"name": "one"})).await;
    assert_error_reply(&duplicate, 409, "TOPIC_EXISTS", "duplicate at the limit");
    assert_eq!(server.delete_json("/topics/one").await.0, 200);
    server.create_topic("three").await;
}

#[tokio::test]
async fn a_connection_without_a_first_frame_is_closed_with_1008() {
    let server = TestServer::start(&["--first-frame-timeout", "300ms"]).await;
    let mut silent = RawClient::connect(&server).await;
    let mut prompt = server.ws().await;
    ping_pong(&mut prompt, "first frame in time").await;

    assert_eq!(silent.close_code().await, 1008);
    tokio::time::sleep(Duration::from_millis(400)).await;
    ping_pong(&mut prompt, "past the deadline, after a first frame").await;
}

#[tokio::test]
async fn a_half_sent_first_frame_does_not_beat_the_deadline() {
    let server = TestServer::start(&["--first-frame-timeout", "300ms"]).await;
    let mut client = RawClient::connect(&server).await;
    // A text frame header announcing 10 bytes, and only 3 of them.
    client
        .send_partial(&[0x81, 0x80 | 10, 1, 2, 3, 4, b'a', b'b', b'c'])
        .await;
    assert_eq!(client.close_code().await, 1008);
}

#[tokio::test]
async fn request_headers_must_arrive_within_the_upgrade_timeout() {
    let server = TestServer::start(&["--upgrade-timeout", "300ms"]).await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a connection stuck in its request headers was not closed"
    );
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a connection that never sent a byte was not closed"
    );
    let mut ws = server.ws().await;
    ping_pong(&mut ws, "others are unaffected").await;
}

#[tokio::test]
async fn upgrades_from_origins_not_allowed_get_403() {
    let server = TestServer::start(&[
        "--allowed-origins",
        "https://app.example.com,http://localhost:3000",
    ])
    .await;
    for origin in [
        "https://evil.example",
        "null",
        "https://app.example.com.evil.example",
    ] {
        let (status, body, _) = refused(connect_from(&server, Some(origin)).await);
        assert_eq!(status, 403, "{origin}: {body}");
        assert_eq!(
            body["error"]["code"], "FORBIDDEN_ORIGIN",
            "{origin}: {body}"
        );
    }
    for origin in [
        Some("https://app.example.com"),
        Some("http://localhost:3000"),
        None,
    ] {
        let mut ws = connect_from(&server, origin)
            .await
            .unwrap_or_else(|err| panic!("{origin:?} refused: {err}"));
        ping_pong(&mut ws, "allowed").await;
    }
}

#[tokio::test]
async fn without_allowed_origins_any_origin_may_upgrade() {
    let server = TestServer::start(&[]).await;
    let mut ws = connect_from(&server, Some("https://anywhere.example"))
        .await
        .expect("no allow-list, no refusal");
    ping_pong(&mut ws, "open").await;
}

#[tokio::test]
async fn rest_requests_from_origins_not_allowed_get_403() {
    let server = TestServer::start(&["--allowed-origins", "https://app.example.com"]).await;
    let post = |origin: Option<&'static str>, name: &'static str| {
        let mut builder = server
            .http
            .post(server.url("/topics"))
            .json(&json!({ "name": name }));
        if let Some(origin) = origin {
            builder = builder.header("Origin", origin);
        }
        async move { json_reply(builder.send().await.unwrap()).await }
    };
    let reply = post(Some("https://evil.example"), "evil").await;
    assert_error_reply(&reply, 403, "FORBIDDEN_ORIGIN", "cross-site POST");
    let listing = server
        .http
        .get(server.url("/topics"))
        .header("Origin", "null")
        .send()
        .await
        .unwrap();
    assert_error_reply(
        &json_reply(listing).await,
        403,
        "FORBIDDEN_ORIGIN",
        "GET from null",
    );
    assert_eq!(post(Some("https://app.example.com"), "app").await.0, 201);
    assert_eq!(post(None, "service").await.0, 201, "not a browser");
    assert_eq!(
        server.subscriber_counts().await,
        [("app".to_owned(), 0), ("service".to_owned(), 0)]
    );
}

/// Sends `GET path` on a fresh connection that asks to be closed after,
/// and returns the whole response.
async fn get_on_new_connection(server: &TestServer, path: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(RECV_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("response timed out")
        .expect("read response");
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn http_connections_beyond_the_limit_get_503() {
    let server = TestServer::start(&["--max-http-connections", "2"]).await;
    // WebSockets hold an HTTP slot only while they upgrade.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(server.ws().await);
    }
    let idle = TcpStream::connect(server.addr).await.unwrap();
    let stats = get_on_new_connection(&server, "/stats").await;
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    let mut second_idle = TcpStream::connect(server.addr).await.unwrap();
    second_idle
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_http_head(&mut second_idle)
        .await
        .starts_with("HTTP/1.1 200"));
    // Two connections are open now, idle and keeping alive.
    let refused = get_on_new_connection(&server, "/health").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("TOO_MANY_CONNECTIONS"), "{refused}");
    drop(idle);
    wait_until("a slot is free again", || async {
        let reply = get_on_new_connection(&server, "/stats").await;
        if !reply.starts_with("HTTP/1.1 200") {
            return Err(reply);
        }
        let body: Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        match (&body["connections"], &body["connections_refused"]) {
            (connections, refused) if connections == 3 && refused.as_u64() >= Some(1) => Ok(()),
            _ => Err(body.to_string()),
        }
    })
    .await;
    for ws in &mut sockets {
        ping_pong(ws, "websockets are untouched").await;
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let server = TestServer::start(&["--body-timeout", "300ms"]).await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /topics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 40\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let head = read_http_head(&mut stalled).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(server.subscriber_counts().await.is_empty());
    let created = server
        .post_json("/topics", &json!({ "name": "orders" }))
        .await;
    assert_eq!(created.0, 201, "others are unaffected: {}", created.1);
}
