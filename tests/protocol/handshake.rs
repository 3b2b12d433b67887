//! The WebSocket handshake (RFC 6455 §4): what is refused before the
//! upgrade and with which headers, and the `ringcast.v1` subprotocol.

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SUBPROTOCOL: &str = "ringcast.v1";

/// A response to a hand-written request: status, headers and body.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    /// Every value of header `name`, in order.
    fn headers(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        let values = self.headers(name);
        assert!(values.len() <= 1, "{name} more than once: {}", self.head);
        values.first().copied()
    }

    /// Whether header `name` lists `token` (case-insensitively, as
    /// `Upgrade` and `Connection` compare).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.headers(name)
            .iter()
            .flat_map(|value| value.split(','))
            .any(|listed| listed.trim().eq_ignore_ascii_case(token))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("non-JSON body {:?}: {err}", self.body))
    }
}

/// Sends `request_line` and `headers` (each a whole `Name: value` line) on
/// a new connection, followed by a valid upgrade's headers unless one of
/// `headers` replaces them, and reads the reply (its body per
/// `Content-Length`, none after a 101).
async fn handshake(server: &TestServer, request_line: &str, headers: &[&str]) -> Reply {
    let mut request = format!("{request_line}\r\nHost: {}\r\n", server.addr);
    let defaults = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];
    let replaced = |default: &str| {
        let name = default.split_once(':').expect("a header line").0;
        headers.iter().any(|header| {
            header
                .split_once(':')
                .is_some_and(|(given, _)| given.eq_ignore_ascii_case(name))
        })
    };
    for line in defaults.iter().filter(|default| !replaced(default)) {
        request.push_str(&format!("{line}\r\n"));
    }
    for line in headers {
        request.push_str(&format!("{line}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(server.addr).await.expect("tcp connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_http_head(&mut stream).await;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let mut reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    if status != 101 {
        let length = reply
            .header("content-length")
            .map_or(0, |length| length.parse().expect("numeric Content-Length"));
        reply.body = vec![0; length];
        stream.read_exact(&mut reply.body).await.expect("body");
    }
    reply
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_with_400() {
    let server = TestServer::start(&[]).await;
    let reply = handshake(&server, "GET /ws HTTP/1.0", &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.head);
    assert_eq!(reply.json()["error"]["code"], "BAD_REQUEST");
    server.stop().await;
}

#[tokio::test]
async fn an_upgrade_with_a_method_other_than_get_is_refused_with_400() {
    let server = TestServer::start(&[]).await;
    for method in ["POST", "PUT", "DELETE"] {
        let request_line = format!("{method} /ws HTTP/1.1");
        let reply = handshake(&server, &request_line, &["Content-Length: 0"]).await;
        assert_eq!(reply.status, 400, "{method}: {}", reply.head);
        assert_eq!(reply.json()["error"]["code"], "BAD_REQUEST", "{method}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_request_without_upgrade_headers_gets_426_naming_websocket() {
    let server = TestServer::start(&[]).await;
    let reply = handshake(
        &server,
        "GET /ws HTTP/1.1",
        &["Upgrade: h2c", "Connection: keep-alive"],
    )
    .await;
    assert_eq!(reply.status, 426, "{}", reply.head);
    assert_eq!(reply.header("upgrade"), Some("websocket"), "{}", reply.head);
    assert!(reply.lists("connection", "upgrade"), "{}", reply.head);
    server.stop().await;
}

#[tokio::test]
async fn an_unsupported_version_is_refused_naming_version_13() {
    let server = TestServer::start(&[]).await;
    for version in ["8", "14", "13, 8"] {
        let header = format!("Sec-WebSocket-Version: {version}");
        let reply = handshake(&server, "GET /ws HTTP/1.1", &[&header]).await;
        // RFC 6455 §4.2.2: "such as 426 Upgrade Required", naming the
        // versions the server speaks.
        assert_eq!(reply.status, 426, "version {version}: {}", reply.head);
        assert_eq!(
            reply.header("sec-websocket-version"),
            Some("13"),
            "version {version}: {}",
            reply.head
        );
        assert_eq!(reply.header("upgrade"), Some("websocket"), "{}", reply.head);
    }
    server.stop().await;
}

#[tokio::test]
async fn an_upgrade_without_a_valid_key_gets_401_with_a_challenge() {
    let server = TestServer::start(&["--api-key", "secret"]).await;
    for credentials in [&[][..], &["X-API-Key: wrong"]] {
        let reply = handshake(&server, "GET /ws HTTP/1.1", credentials).await;
        assert_eq!(reply.status, 401, "{credentials:?}: {}", reply.head);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("ApiKey ") && challenge.contains("realm=\"ringcast\""),
            "{credentials:?}: {}",
            reply.head
        );
        assert_eq!(reply.json()["error"]["code"], "UNAUTHORIZED");
    }
    let reply = handshake(&server, "GET /ws HTTP/1.1", &["X-API-Key: secret"]).await;
    assert_eq!(reply.status, 101, "{}", reply.head);
    let stats = server
        .http
        .get(server.url("/stats"))
        .header("X-API-Key", "secret")
        .send()
        .await
        .unwrap();
    let (_, stats) = json_reply(stats).await;
    assert_eq!(stats["auth_failures"], 2, "both refusals counted: {stats}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_offering_ringcast_v1_gets_it_selected() {
    let server = TestServer::start(&[]).await;
    // tungstenite, like browsers, fails a connection whose offered
    // subprotocol the server does not select.
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("chat, ringcast.v1"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect offering ringcast.v1");
    assert_eq!(
        response.headers().get("sec-websocket-protocol"),
        Some(&HeaderValue::from_static(SUBPROTOCOL))
    );
    ping_pong(&mut ws, "subprotocol").await;

    // An offer may span several header lines.
    let reply = handshake(
        &server,
        "GET /ws HTTP/1.1",
        &[
            "Sec-WebSocket-Protocol: chat",
            "Sec-WebSocket-Protocol: other, ringcast.v1",
        ],
    )
    .await;
    assert_eq!(reply.status, 101, "{}", reply.head);
    assert_eq!(
        reply.header("sec-websocket-protocol"),
        Some(SUBPROTOCOL),
        "{}",
        reply.head
    );
    server.stop().await;
}

#[tokio::test]
async fn an_offer_without_ringcast_v1_is_answered_without_a_subprotocol() {
    let server = TestServer::start(&[]).await;
    for offer in [
        None,
        Some("chat"),
        Some("RingCast.V1"),
        Some("ringcast.v1x, ringcast"),
    ] {
        let header = offer.map(|offer| format!("Sec-WebSocket-Protocol: {offer}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        let reply = handshake(&server, "GET /ws HTTP/1.1", &headers).await;
        assert_eq!(reply.status, 101, "{offer:?}: {}", reply.head);
        assert_eq!(
            reply.header("sec-websocket-protocol"),
            None,
            "{offer:?}: {}",
            reply.head
        );
    }
    server.stop().await;
}
