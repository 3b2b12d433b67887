//! Bad input over WebSocket: malformed frames get an `error` frame and the
//! connection stays open; oversized messages close with 1009 and invalid
//! UTF-8 text with 1007 (the latter sent by a raw socket client, since
//! tungstenite refuses to send invalid UTF-8).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const UUID: &str = "550e8400-e29b-41d4-a716-446655440000";

/// Whether `ts` looks like `2025-08-25T10:00:00.123Z`.
fn is_rfc3339_utc_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let number = |range: std::ops::Range<usize>| ts[range].parse::<u32>().unwrap_or(u32::MAX);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
        && (1..=12).contains(&number(5..7))
        && (1..=31).contains(&number(8..10))
        && number(11..13) < 24
        && number(14..16) < 60
        && number(17..19) < 61
}

/// Receives the next frame and asserts it is a well-formed `error` with
/// `code`, echoing `request_id` (or carrying none when `None`).
async fn expect_error(ws: &mut Ws, code: &str, request_id: Option<&str>, context: &str) {
    let frame = recv(ws).await;
    assert_eq!(frame["type"], "error", "{context}: {frame}");
    assert_eq!(frame["error"]["code"], code, "{context}: {frame}");
    let message = frame["error"]["message"].as_str();
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "{context}: error.message: {frame}"
    );
    let ts = frame["ts"].as_str().unwrap_or_default();
    assert!(
        is_rfc3339_utc_millis(ts),
        "{context}: ts {ts:?} is not RFC 3339 UTC with millis"
    );
    match request_id {
        Some(id) => assert_eq!(frame["request_id"], id, "{context}: {frame}"),
        None => assert!(
            frame.get("request_id").is_none_or(Value::is_null),
            "{context}: {frame}"
        ),
    }
}

/// Asserts a reply frame's `type` and echoed `request_id`.
#[track_caller]
fn assert_reply(frame: &Value, kind: &str, request_id: &str) {
    assert_eq!(frame["type"], kind, "{frame}");
    assert_eq!(frame["request_id"], request_id, "{frame}");
}

/// Proves the connection is still open and in sync: ping gets its pong.
async fn expect_alive(ws: &mut Ws, context: &str) {
    let request_id = format!("alive-{context}");
    send(ws, json!({ "type": "ping", "request_id": request_id })).await;
    let pong = recv(ws).await;
    assert_eq!(
        pong["type"], "pong",
        "{context}: connection not usable after the error: {pong}"
    );
    assert_eq!(pong["request_id"], request_id.as_str(), "{context}: {pong}");
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

/// A WebSocket client on a bare TCP socket, for frames tungstenite won't send.
struct RawClient(TcpStream);

impl RawClient {
    async fn connect(server: &TestServer) -> Self {
        let mut stream = TcpStream::connect(server.addr).await.expect("tcp connect");
        let handshake = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(handshake.as_bytes()).await.unwrap();
        let head = read_http_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        Self(stream)
    }

    /// Writes one masked frame; `first` is FIN/RSV/opcode.
    async fn write_frame(&mut self, first: u8, payload: &[u8]) {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ MASK[i % 4]),
        );
        self.0.write_all(&frame).await.expect("raw write");
    }

    /// Reads one unmasked server frame: (opcode, payload), or None at EOF.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let mut head = [0u8; 2];
            self.0.read_exact(&mut head).await.ok()?;
            let len = match head[1] & 0x7f {
                126 => u64::from(self.0.read_u16().await.ok()?),
                127 => self.0.read_u64().await.ok()?,
                short => u64::from(short),
            };
            assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
            let mut payload = vec![0; len as usize];
            self.0.read_exact(&mut payload).await.ok()?;
            Some((head[0] & 0x0f, payload))
        };
        tokio::time::timeout(RECV_TIMEOUT, read)
            .await
            .expect("timed out reading a raw frame")
    }

    /// The next JSON text frame.
    async fn read_json(&mut self) -> Value {
        loop {
            let (opcode, payload) = self.read_frame().await.expect("connection ended");
            if opcode == 0x1 {
                return serde_json::from_slice(&payload).expect("server sent JSON");
            }
        }
    }

    /// Reads frames until the close frame and returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self
                .read_frame()
                .await
                .expect("connection ended without a close frame");
            if opcode == 0x8 {
                assert!(payload.len() >= 2, "close frame without a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

/// Reads an HTTP response head byte by byte up to the blank line.
async fn read_http_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(RECV_TIMEOUT, stream.read_u8())
            .await
            .expect("timed out")
            .expect("read");
        head.push(byte);
    }
    String::from_utf8(head).expect("ASCII response head")
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
    let deleted = server
        .http
        .delete(server.url("/topics/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
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
    let ack = recv(&mut sub).await;
    assert_reply(&ack, "ack", "bs");
    assert_eq!(ack["topic"], "orders", "{ack}");
    let mut publisher = server.ws().await;
    publisher
        .send(binary(publish_frame(
            "orders",
            json!({ "via": "binary" }),
            "bp",
        )))
        .await
        .unwrap();
    assert_reply(&recv(&mut publisher).await, "ack", "bp");
    let event = recv(&mut sub).await;
    assert_eq!(
        (&event["type"], &event["message"]["payload"]),
        (&json!("event"), &json!({ "via": "binary" }))
    );
    publisher
        .send(binary(json!({ "type": "ping", "request_id": "bping" })))
        .await
        .unwrap();
    assert_reply(&recv(&mut publisher).await, "pong", "bping");
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
    assert_reply(&recv(&mut ws).await, "pong", "edge");
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
    raw.write_frame(0x81, &[b' '; 1025]).await;
    assert_eq!(raw.close_code().await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_closes_with_1009() {
    let server = TestServer::start(&["--max-message-size", "1024"]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.write_frame(0x01, &[b' '; 600]).await; // text, not final
    raw.write_frame(0x80, &[b' '; 600]).await; // final continuation
    assert_eq!(raw.close_code().await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.write_frame(0x81, &[0xff, 0xfe]).await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_across_fragments_closes_with_1007() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    // Each fragment alone is a valid prefix; together they are not UTF-8.
    raw.write_frame(0x01, b"{\"type\":\"ping\",\"request_id\":\"\xc3")
        .await;
    raw.write_frame(0x80, b"(\"}").await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn fragmented_valid_messages_are_reassembled() {
    let server = TestServer::start(&[]).await;
    let mut raw = RawClient::connect(&server).await;
    raw.write_frame(0x01, b"{\"type\":\"ping\",").await;
    raw.write_frame(0x00, b"\"request_id\":\"fr").await;
    raw.write_frame(0x80, "\u{e9}\"}".as_bytes()).await;
    assert_reply(&raw.read_json().await, "pong", "fré");
    // An unfragmented frame with invalid UTF-8 still closes the connection.
    raw.write_frame(0x81, &[0xc0, 0xaf]).await;
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
