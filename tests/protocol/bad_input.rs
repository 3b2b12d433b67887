//! Bad input over WebSocket: malformed frames get an `error` frame and the
//! connection stays open; oversized messages close with 1009 and invalid
//! UTF-8 text with 1007 (the latter sent by a raw socket client, since
//! tungstenite refuses to send invalid UTF-8).

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const UUID: &str = "550e8400-e29b-41d4-a716-446655440000";

/// Proves the connection is still open and in sync: ping gets its pong.
async fn expect_alive(ws: &mut Ws, context: &str) {
    ping_pong(ws, &format!("alive-{context}")).await;
}

/// Sends a raw text frame, expects an error, then proves the connection is open.
async fn reject(ws: &mut Ws, text: &str, code: &str, request_id: Option<&str>) {
    ws.send(Message::Text(text.into())).await.expect("ws send");
    expect_error(ws, code, request_id, text).await;
    expect_alive(ws, text).await;
}

/// Reads until the server's close frame and returns its code, failing if
/// the stream ends without one.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("connection failed before a close frame: {err}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// A server with a topic `orders`, and one WebSocket client.
async fn start() -> (TestServer, Ws) {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    server.create_topic("orders").await;
    let ws = server.ws().await;
    (server, ws)
}

#[test]
fn timestamp_shape_check_is_strict() {
    assert!(is_rfc3339_utc_millis("2025-08-25T10:00:00.123Z"));
    for bad in [
        "2025-08-25T10:00:00Z",
        "2025-08-25T10:00:00.123+00:00",
        "2025-08-25 10:00:00.123Z",
        "2025-13-25T10:00:00.123Z",
        "2025-08-25T10:00:00.1234Z",
        "2025-08-25T10:00:00.12Z",
        "2025-08-25T24:00:00.123Z",
        "2025-08-25T10:60:00.123Z",
        "2025-08-00T10:00:00.123Z",
        "2025-08-25T10:00:00.123z",
        "2025-08-25T10:00:0a.123Z",
        "",
    ] {
        assert!(!is_rfc3339_utc_millis(bad), "{bad}");
    }
}

#[tokio::test]
async fn unparseable_frames_get_bad_request_and_the_connection_stays_open() {
    let (server, mut ws) = start().await;
    let frames = [
        "not json",
        "{",
        "",
        "{\"type\":}",
        "[1,2]",
        "\"ping\"",
        "42",
        "null",
        "true",
    ];
    for text in frames {
        reject(&mut ws, text, "BAD_REQUEST", None).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_fields_get_bad_request_echoing_request_id() {
    let (server, mut ws) = start().await;
    let cases = [
        json!({ "type": "dance", "topic": "orders" }),
        json!({ "topic": "orders" }),
        json!({ "type": 7 }),
        json!({ "type": "subscribe" }),
        json!({ "type": "unsubscribe" }),
        json!({ "type": "publish", "message": { "id": UUID, "payload": 1 } }),
        json!({ "type": "subscribe", "topic": 5 }),
        json!({ "type": "subscribe", "topic": ["orders"] }),
        json!({ "type": "subscribe", "topic": "orders", "last_n": -1 }),
        json!({ "type": "subscribe", "topic": "orders", "last_n": 1.5 }),
        json!({ "type": "subscribe", "topic": "orders", "last_n": "3" }),
        json!({ "type": "subscribe", "topic": "orders", "client_id": 9 }),
        json!({ "type": "publish", "topic": "orders" }),
        json!({ "type": "publish", "topic": "orders", "message": "hello" }),
        json!({ "type": "publish", "topic": "orders", "message": { "id": "not-a-uuid", "payload": 1 } }),
        json!({ "type": "publish", "topic": "orders", "message": { "id": 12, "payload": 1 } }),
        json!({ "type": "publish", "topic": "orders", "message": { "payload": 1 } }),
        json!({ "type": "publish", "topic": "orders", "message": { "id": UUID } }),
    ];
    for (index, mut frame) in cases.into_iter().enumerate() {
        let request_id = format!("r{index}");
        frame["request_id"] = json!(request_id);
        reject(
            &mut ws,
            &frame.to_string(),
            "BAD_REQUEST",
            Some(&request_id),
        )
        .await;
    }
    // None of the rejected subscribes or publishes took effect.
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(
        stats["topics"]["orders"],
        json!({ "messages": 0, "subscribers": 0 }),
        "{stats}"
    );
    server.stop().await;
}

#[tokio::test]
async fn non_string_request_id_is_bad_request() {
    let (server, mut ws) = start().await;
    reject(
        &mut ws,
        r#"{"type":"ping","request_id":5}"#,
        "BAD_REQUEST",
        None,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_topic_gets_topic_not_found_echoing_request_id() {
    let (server, mut ws) = start().await;
    let cases = [
        json!({ "type": "subscribe", "topic": "nope", "request_id": "s" }),
        json!({ "type": "subscribe", "topic": "nope", "last_n": 5, "request_id": "s5" }),
        json!({ "type": "unsubscribe", "topic": "nope", "request_id": "u" }),
        publish_frame("nope", json!({ "n": 1 }), "p"),
    ];
    for frame in cases {
        let request_id = frame["request_id"].as_str().unwrap().to_owned();
        reject(
            &mut ws,
            &frame.to_string(),
            "TOPIC_NOT_FOUND",
            Some(&request_id),
        )
        .await;
    }
    // Without a request_id the error carries none.
    reject(
        &mut ws,
        r#"{"type":"unsubscribe","topic":"nope"}"#,
        "TOPIC_NOT_FOUND",
        None,
    )
    .await;
    // A deleted topic is unknown too.
    server.create_topic("gone").await;
    assert_eq!(server.delete_json("/topics/gone").await.0, 200);
    reject(
        &mut ws,
        &publish_frame("gone", json!(1), "g").to_string(),
        "TOPIC_NOT_FOUND",
        Some("g"),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_carrying_json_are_accepted() {
    let (server, mut sub) = start().await;
    let binary = |value: Value| Message::Binary(value.to_string().into_bytes().into());
    sub.send(binary(
        json!({ "type": "subscribe", "topic": "orders", "request_id": "bs" }),
    ))
    .await
    .unwrap();
    expect_ack(&mut sub, "orders", "bs").await;
    let mut publisher = server.ws().await;
    publisher
        .send(binary(publish_frame(
            "orders",
            json!({ "via": "binary" }),
            "bp",
        )))
        .await
        .unwrap();
    expect_ack(&mut publisher, "orders", "bp").await;
    let event = recv(&mut sub).await;
    assert_eq!(
        (&event["type"], &event["message"]["payload"]),
        (&json!("event"), &json!({ "via": "binary" }))
    );
    publisher
        .send(binary(json!({ "type": "ping", "request_id": "bping" })))
        .await
        .unwrap();
    assert_pong(&recv(&mut publisher).await, "bping");
    // A binary frame that is not JSON is a bad request like a text one.
    publisher
        .send(Message::Binary(vec![0xff, 0x00, 0x01].into()))
        .await
        .unwrap();
    expect_error(&mut publisher, "BAD_REQUEST", None, "binary garbage").await;
    expect_alive(&mut publisher, "binary garbage").await;
    server.stop().await;
}

#[tokio::test]
async fn a_message_at_the_size_limit_is_accepted() {
    let (server, mut ws) = start().await;
    let ping = r#"{"type":"ping","request_id":"edge"}"#;
    let text = format!("{ping}{}", " ".repeat(1024 - ping.len()));
    assert_eq!(text.len(), 1024);
    ws.send(Message::Text(text.into())).await.unwrap();
    assert_pong(&recv(&mut ws).await, "edge");
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let (server, mut ws) = start().await;
    let text = json!({ "type": "ping", "request_id": "x".repeat(1025) }).to_string();
    ws.send(Message::Text(text.into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn a_message_one_byte_over_the_limit_closes_with_1009() {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.send_frame(OP_TEXT, true, &[b' '; 1025]).await;
    assert_eq!(raw.close_code().await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_closes_with_1009() {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.send_frame(OP_TEXT, false, &[b' '; 600]).await; // text, not final
    raw.send_frame(OP_CONTINUATION, true, &[b' '; 600]).await; // final continuation
    assert_eq!(raw.close_code().await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.send_frame(OP_TEXT, true, &[0xff, 0xfe]).await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_across_fragments_closes_with_1007() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    // Each fragment alone is a valid prefix; together they are not UTF-8.
    raw.send_frame(OP_TEXT, false, b"{\"type\":\"ping\",\"request_id\":\"\xc3")
        .await;
    raw.send_frame(OP_CONTINUATION, true, b"(\"}").await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

/// Autobahn 6.4.1 and 6.4.2 rated this NON-STRICT: the message failed only
/// once its last fragment came, so this test, whose last fragment never
/// comes, timed out waiting for the close.
#[tokio::test]
async fn invalid_utf8_fails_a_message_at_its_fragment_not_at_its_end() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.send_frame(OP_TEXT, false, "{\"type\":\"κόσμε".as_bytes())
        .await;
    // U+110000 in UTF-8's scheme: no code point.
    raw.send_frame(OP_CONTINUATION, false, &[0xf4, 0x90, 0x80, 0x80])
        .await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn fragmented_valid_messages_are_reassembled() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.send_frame(OP_TEXT, false, b"{\"type\":\"ping\",").await;
    raw.send_frame(OP_CONTINUATION, false, b"\"request_id\":\"fr")
        .await;
    raw.send_frame(OP_CONTINUATION, true, "\u{e9}\"}".as_bytes())
        .await;
    assert_pong(&raw.read_json().await, "fré");
    // An unfragmented frame with invalid UTF-8 still closes the connection.
    raw.send_frame(OP_TEXT, true, &[0xc0, 0xaf]).await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn chunked_rest_body_over_the_limit_is_413() {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("tcp connect");
    let body = format!("{{\"name\":\"big{}\"}}", " ".repeat(1100));
    let request = format!(
        "POST /topics HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        server.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_http_head(&mut stream).await;
    assert!(
        head.starts_with("HTTP/1.1 413"),
        "expected 413 without Content-Length: {head}"
    );
    let (status, topics) = server.get_json("/topics").await;
    assert_eq!((status, topics), (200, json!({ "topics": [] })));
    server.stop().await;
}

#[tokio::test]
async fn json_mistakes_are_named_in_the_error() {
    let (server, mut ws) = start().await;
    let ping = r#"{"type":"ping","request_id":"p"}"#;
    let mistakes = [
        (format!("{ping}{ping}"), "second JSON value"),
        (format!("{ping}\n{ping}"), "second JSON value"),
        (format!("\u{feff}{ping}"), "byte order mark"),
        (
            format!("{ping} trailing"),
            "after the end of the JSON value",
        ),
        (format!("{ping},"), "after the end of the JSON value"),
    ];
    for (text, named) in &mistakes {
        ws.send(Message::Text(text.as_str().into())).await.unwrap();
        let frame = recv(&mut ws).await;
        assert_eq!(frame["error"]["code"], "BAD_REQUEST", "{text}: {frame}");
        let message = frame["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{text:?}: {message}");
        expect_alive(&mut ws, text).await;
    }
    // The same words over REST.
    for (text, named) in &mistakes {
        let reply = server
            .http
            .post(server.url("/topics"))
            .header("content-type", "application/json")
            .body(text.replace(ping, r#"{"name":"x"}"#))
            .send()
            .await
            .unwrap();
        let reply = json_reply(reply).await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", text);
        let message = reply.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{text:?}: {message}");
    }
    server.stop().await;
}
