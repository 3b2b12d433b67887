//! Shared harness: a real ringcast server on port 0 in this process, and
//! real WebSocket and HTTP clients talking to it over loopback sockets.
#![allow(dead_code)] // each test binary uses a different subset

pub mod sse;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use ringcast::ws::Route;
use ringcast::{Config, Server, Shutdown};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `wait_until` polls before failing.
pub const POLL_DEADLINE: Duration = Duration::from_secs(5);
/// How long a REST request may take before it fails.
pub const REST_DEADLINE: Duration = Duration::from_secs(30);
/// How long `wait_until` sleeps between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub task: JoinHandle<()>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with extra flags, e.g. `["--api-key", "k"]`.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_on(0, args).await
    }

    /// Starts a server on 127.0.0.1:`port`, e.g. where one ran before.
    pub async fn start_on(port: u16, args: &[&str]) -> Self {
        Self::start_routed(port, args, None).await
    }

    /// Starts a server on 127.0.0.1:0 that also upgrades at `route`'s path.
    pub async fn start_with_route(args: &[&str], route: Route) -> Self {
        Self::start_routed(0, args, Some(route)).await
    }

    async fn start_routed(port: u16, args: &[&str], route: Option<Route>) -> Self {
        let port = port.to_string();
        let mut all = vec!["--host", "127.0.0.1", "--port", &port];
        all.extend_from_slice(args);
        let config = Config::from_args(&all)
            .unwrap_or_else(|err| panic!("invalid test flags {args:?}: {err}"));
        let mut server = Server::bind(config).await.expect("bind");
        if let Some(route) = route {
            server = server.route(route);
        }
        let addr = server.local_addr().unwrap();
        let shutdown = server.shutdown();
        let task = tokio::spawn(server.run());
        Self {
            addr,
            shutdown,
            task,
            // A request the server never answers fails the test, not hangs it.
            http: reqwest::Client::builder()
                .timeout(REST_DEADLINE)
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Opens a WebSocket connection to `/ws`.
    pub async fn ws(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("ws connect");
        ws
    }

    /// Creates a topic over REST and asserts 201.
    pub async fn create_topic(&self, name: &str) {
        self.create_topic_as(name, None).await;
    }

    /// Creates a topic over REST with `X-API-Key: key` and asserts 201.
    pub async fn create_topic_with_key(&self, name: &str, key: &str) {
        self.create_topic_as(name, Some(key)).await;
    }

    async fn create_topic_as(&self, name: &str, key: Option<&str>) {
        let mut request = self.http.post(self.url("/topics"));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let response = request.json(&json!({ "name": name })).send().await.unwrap();
        assert_eq!(response.status(), 201, "creating topic {name}");
    }

    /// GET a path and return status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        json_reply(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// GET a path and return its body as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// POST a JSON body to a path and return status and JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        json_reply(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// DELETE a path and return status and JSON body.
    pub async fn delete_json(&self, path: &str) -> (u16, Value) {
        json_reply(self.http.delete(self.url(path)).send().await.unwrap()).await
    }

    /// `GET /topics` as (name, subscriber count) pairs sorted by name;
    /// asserts 200 and that every row has a string name and integer count.
    pub async fn subscriber_counts(&self) -> Vec<(String, u64)> {
        let (status, body) = self.get_json("/topics").await;
        assert_eq!(status, 200, "{body}");
        let rows = body["topics"]
            .as_array()
            .unwrap_or_else(|| panic!("topics must be an array: {body}"));
        let mut counts: Vec<(String, u64)> = rows
            .iter()
            .map(|row| {
                let name = row["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("name: {row}"))
                    .to_owned();
                let subscribers = row["subscribers"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("subscribers: {row}"));
                (name, subscribers)
            })
            .collect();
        counts.sort();
        counts
    }

    /// Subscriber count of `topic` per `GET /topics`, None if it is not listed.
    pub async fn subscribers_of(&self, topic: &str) -> Option<u64> {
        self.subscriber_counts()
            .await
            .into_iter()
            .find(|(name, _)| name == topic)
            .map(|(_, count)| count)
    }

    /// Polls `GET /topics` until `topic` is listed with `expected` subscribers.
    pub async fn wait_for_subscribers(&self, topic: &str, expected: u64) {
        wait_until(
            &format!("{topic} to have {expected} subscribers"),
            move || async move {
                match self.subscribers_of(topic).await {
                    Some(count) if count == expected => Ok(()),
                    seen => Err(format!("subscribers of {topic}: {seen:?}")),
                }
            },
        )
        .await;
    }

    /// Polls `GET /health` until no subscriptions and no connections are left.
    pub async fn wait_until_idle(&self) {
        wait_until(
            "the server to have no subscriptions and no connections",
            move || async move {
                let (_, health) = self.get_json("/health").await;
                if health["subscribers"] == 0 && health["connections"] == 0 {
                    Ok(())
                } else {
                    Err(format!("server still busy: {health}"))
                }
            },
        )
        .await;
    }

    /// `GET /stats`, asserting 200.
    pub async fn stats(&self) -> Value {
        let (status, body) = self.get_json("/stats").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A process-wide counter of `GET /stats` (`published`, `delivered`,
    /// `dropped`, `slow_consumer_disconnects`, ...), read from a `totals`
    /// object when the server nests them there, else from the top level.
    pub async fn counter(&self, name: &str) -> u64 {
        let stats = self.stats().await;
        let totals = stats.get("totals").filter(|totals| totals.is_object());
        totals
            .unwrap_or(&stats)
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("/stats without an integer {name}: {stats}"))
    }

    /// Cancels the server and waits for it to finish shutting down.
    pub async fn stop(self) {
        self.shutdown.begin();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shutdown in time")
            .unwrap();
    }
}

/// Status and JSON body of a response; fails on a body that is not JSON.
pub async fn json_reply(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("non-JSON body {text:?}: {err}"));
    (status, json)
}

/// Asserts a REST `{"error":{"code","message"}}` reply with the given status
/// and a non-empty message.
#[track_caller]
pub fn assert_error_reply(reply: &(u16, Value), status: u16, code: &str, context: &str) {
    assert_eq!(reply.0, status, "{context}: {}", reply.1);
    assert_eq!(reply.1["error"]["code"], code, "{context}: {}", reply.1);
    let message = reply.1["error"]["message"].as_str();
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "{context}: error.message missing: {}",
        reply.1
    );
}

/// Calls `probe` every POLL_INTERVAL until it returns `Ok`, failing after
/// POLL_DEADLINE with `what` and the last thing the probe saw instead.
pub async fn wait_until<F, Fut>(what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    wait_until_within(what, POLL_DEADLINE, probe).await;
}

/// Like `wait_until`, failing after `within` instead of POLL_DEADLINE.
pub async fn wait_until_within<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(()) => return,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether `ts` looks like `2025-08-25T10:00:00.123Z`: RFC 3339, UTC,
/// exactly three fraction digits, and field values in range.
pub fn is_rfc3339_utc_millis(ts: &str) -> bool {
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

/// Asserts `frame["ts"]` is a string in RFC 3339 UTC with milliseconds.
#[track_caller]
pub fn assert_ts(frame: &Value) {
    let ts = frame["ts"]
        .as_str()
        .unwrap_or_else(|| panic!("frame without a string ts: {frame}"));
    assert!(
        is_rfc3339_utc_millis(ts),
        "ts {ts:?} is not RFC 3339 UTC with milliseconds, in {frame}"
    );
}

/// Sends one JSON text frame.
pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("ws send");
}

/// The next text frame as received and parsed, skipping heartbeats and
/// non-text frames. `ws` is a `Ws` or its read half.
async fn next_text<S>(ws: &mut S) -> (String, Value)
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("ws error");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("server sent JSON");
            if value["type"] == "info" && value["msg"] == "ping" {
                continue;
            }
            return (text.as_str().to_owned(), value);
        }
    }
}

/// Receives the next JSON text frame, skipping heartbeats and control
/// frames, from a `Ws` or its read half.
pub async fn recv<S>(ws: &mut S) -> Value
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    next_text(ws).await.1
}

/// Like `recv`, but returns the frame's text exactly as the server sent it.
pub async fn recv_text(ws: &mut Ws) -> String {
    next_text(ws).await.0
}

/// The close frame's code and reason, after any frames before it.
pub async fn close_frame_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for the close frame")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

/// Asserts `frame` is the `ack` of `request_id` on `topic`.
#[track_caller]
pub fn assert_ack(frame: &Value, topic: &str, request_id: &str) {
    assert_eq!(
        frame["type"], "ack",
        "expected the ack of {request_id}: {frame}"
    );
    assert_eq!(frame["request_id"], request_id, "{frame}");
    assert_eq!(frame["topic"], topic, "{frame}");
    assert_eq!(frame["status"], "ok", "{frame}");
    assert_ts(frame);
}

/// Receives the next frame and asserts it is the ack of `request_id` on `topic`.
pub async fn expect_ack(ws: &mut Ws, topic: &str, request_id: &str) -> Value {
    let ack = recv(ws).await;
    assert_ack(&ack, topic, request_id);
    ack
}

/// Asserts `frame` is the `pong` echoing `request_id`.
#[track_caller]
pub fn assert_pong(frame: &Value, request_id: &str) {
    assert_eq!(
        frame["type"], "pong",
        "expected the pong of {request_id:?}: {frame}"
    );
    assert_eq!(frame["request_id"], request_id, "{frame}");
    assert_ts(frame);
}

/// Pings and asserts the pong is the very next frame: the connection is
/// open and in sync, and nothing else (no stray event, duplicate or error)
/// was queued for it before.
pub async fn ping_pong(ws: &mut Ws, request_id: &str) {
    send(ws, json!({ "type": "ping", "request_id": request_id })).await;
    assert_pong(&recv(ws).await, request_id);
}

/// Receives the next frame and asserts it is a well-formed `error` with
/// `code` and a non-empty message, echoing `request_id` (or carrying none
/// when `None`).
pub async fn expect_error(ws: &mut Ws, code: &str, request_id: Option<&str>, context: &str) {
    let frame = recv(ws).await;
    assert_eq!(frame["type"], "error", "{context}: {frame}");
    assert_eq!(frame["error"]["code"], code, "{context}: {frame}");
    let message = frame["error"]["message"].as_str();
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "{context}: error.message: {frame}"
    );
    assert_ts(&frame);
    match request_id {
        Some(id) => assert_eq!(frame["request_id"], id, "{context}: {frame}"),
        None => assert!(
            frame.get("request_id").is_none_or(Value::is_null),
            "{context}: {frame}"
        ),
    }
}

/// Subscribes with request id `sub-{topic}` and returns the ack.
pub async fn subscribe(ws: &mut Ws, topic: &str, last_n: u64) -> Value {
    let request_id = format!("sub-{topic}");
    send(
        ws,
        json!({ "type": "subscribe", "topic": topic, "last_n": last_n, "request_id": request_id }),
    )
    .await;
    expect_ack(ws, topic, &request_id).await
}

/// Subscribes as `client_id` with request id `sub-{topic}-{client_id}`.
pub async fn subscribe_as(ws: &mut Ws, topic: &str, client_id: &str) {
    let request_id = format!("sub-{topic}-{client_id}");
    send(
        ws,
        json!({ "type": "subscribe", "topic": topic, "client_id": client_id, "request_id": request_id }),
    )
    .await;
    expect_ack(ws, topic, &request_id).await;
}

/// Runs `test` on a multi-thread and on a current-thread runtime.
pub fn on_both_runtimes<F: std::future::Future<Output = ()>>(test: impl Fn() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

/// A message object (REST publish body) with a fresh UUID.
pub fn message_body(payload: Value) -> Value {
    json!({ "id": uuid::Uuid::new_v4().to_string(), "payload": payload })
}

/// A publish frame with a fresh UUID.
pub fn publish_frame(topic: &str, payload: Value, request_id: &str) -> Value {
    json!({
        "type": "publish",
        "topic": topic,
        "request_id": request_id,
        "message": message_body(payload),
    })
}

/// Publishes one event, waits for its ack and returns the message id.
pub async fn publish_acked(ws: &mut Ws, topic: &str, payload: Value, request_id: &str) -> String {
    let frame = publish_frame(topic, payload, request_id);
    let id = frame["message"]["id"].as_str().unwrap().to_owned();
    send(ws, frame).await;
    expect_ack(ws, topic, request_id).await;
    id
}

/// A payload of about `size` bytes carrying its event number `n`, so a
/// reader can check that nothing was lost, reordered or truncated.
pub fn padded_payload(n: u64, size: usize) -> Value {
    json!({ "n": n, "pad": "x".repeat(size) })
}

/// Checks that `event` is an event whose `padded_payload` matches its seq
/// and has `size` bytes of padding, and returns the seq.
#[track_caller]
pub fn padded_seq(event: &Value, size: usize) -> u64 {
    assert_eq!(event["type"], "event", "{event}");
    let seq = event["seq"].as_u64().expect("seq");
    let payload = &event["message"]["payload"];
    assert_eq!(payload["n"], seq, "payload does not match seq");
    assert_eq!(
        payload["pad"].as_str().map(str::len),
        Some(size),
        "payload truncated at seq {seq}"
    );
    seq
}

/// WebSocket opcodes, for `RawClient`.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;

/// A WebSocket client on a bare TCP socket, for frames tungstenite won't
/// send (invalid UTF-8, hand-made fragments) and peers that never answer.
pub struct RawClient(TcpStream);

impl RawClient {
    /// Opens `/ws` with a hand-written upgrade request and checks the 101.
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_at(server, "/ws").await
    }

    /// Opens a WebSocket at `path` as `connect` opens `/ws`.
    pub async fn connect_at(server: &TestServer, path: &str) -> Self {
        let stream = TcpStream::connect(server.addr).await.expect("tcp connect");
        Self::upgrade(server, stream, path).await
    }

    /// Like `connect`, with the socket's receive buffer (SO_RCVBUF) set to
    /// `bytes` before connecting, so the advertised window stays that small:
    /// a reader that never reads then stops the server's writes quickly.
    pub async fn connect_with_recv_buffer(server: &TestServer, bytes: u32) -> Self {
        let socket = TcpSocket::new_v4().expect("tcp socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(server.addr).await.expect("tcp connect");
        Self::upgrade(server, stream, "/ws").await
    }

    async fn upgrade(server: &TestServer, mut stream: TcpStream, path: &str) -> Self {
        let handshake = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(handshake.as_bytes()).await.unwrap();
        let head = read_http_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        // RFC 6455's worked example: this key's accept value.
        let accept = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim())
        });
        assert_eq!(
            accept,
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept: {head}"
        );
        Self(stream)
    }

    /// Writes one masked frame with the given opcode, FIN bit and payload.
    pub async fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let frame = masked_frame(opcode, fin, payload);
        self.0.write_all(&frame).await.expect("raw write");
    }

    /// Writes raw bytes, e.g. part of a frame.
    pub async fn send_partial(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.expect("raw write");
    }

    /// Reads one unmasked server frame as (opcode, payload), or None when
    /// the server ends the stream on a frame boundary. A stream that ends
    /// inside a frame fails the test.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let first = match self.0.read_u8().await {
                Ok(byte) => byte,
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(err) => panic!("raw read failed: {err}"),
            };
            fn truncated<T>(err: std::io::Error) -> T {
                panic!("truncated server frame: {err}")
            }
            let second = self.0.read_u8().await.unwrap_or_else(truncated);
            assert_eq!(second & 0x80, 0, "server frames must not be masked");
            let len = match second & 0x7f {
                126 => u64::from(self.0.read_u16().await.unwrap_or_else(truncated)),
                127 => self.0.read_u64().await.unwrap_or_else(truncated),
                short => u64::from(short),
            };
            let mut payload = vec![0; len as usize];
            self.0
                .read_exact(&mut payload)
                .await
                .unwrap_or_else(truncated);
            Some((first & 0x0f, payload))
        };
        tokio::time::timeout(RECV_TIMEOUT, read)
            .await
            .expect("timed out reading a raw frame")
    }

    /// The next JSON text frame.
    pub async fn read_json(&mut self) -> Value {
        loop {
            let (opcode, payload) = self.read_frame().await.expect("connection ended");
            if opcode == OP_TEXT {
                return serde_json::from_slice(&payload).expect("server sent JSON");
            }
        }
    }

    /// Reads frames until the close frame and returns its code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self
                .read_frame()
                .await
                .expect("connection ended without a close frame");
            if opcode == OP_CLOSE {
                return close_code_of(&payload);
            }
        }
    }

    /// Reads every frame until the server ends the stream.
    pub async fn read_to_eof(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(frame) = self.read_frame().await {
            frames.push(frame);
        }
        frames
    }

    /// Reads whatever the server sent until it ends the connection (EOF,
    /// or a reset: a server cutting a slow peer may abandon what it had
    /// queued) or `within` passes; a frame cut short at the end is ignored.
    pub async fn drain(&mut self, within: Duration) -> Drained {
        let deadline = Instant::now() + within;
        let mut bytes = Vec::new();
        let mut chunk = vec![0; 1 << 16];
        let ending = loop {
            match tokio::time::timeout_at(deadline, self.0.read(&mut chunk)).await {
                Err(_elapsed) => break Ending::StillOpen,
                Ok(Ok(0)) => break Ending::Eof,
                Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
                Ok(Err(err)) => break Ending::Reset(err.kind()),
            }
        };
        Drained {
            frames: split_server_frames(&bytes),
            ending,
        }
    }
}

/// How the server ended a connection that `RawClient::drain` read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Eof,
    /// A read failed, e.g. `ConnectionReset`.
    Reset(std::io::ErrorKind),
    /// Neither, before the deadline.
    StillOpen,
}

/// Everything a `RawClient` read until the server ended the connection.
pub struct Drained {
    /// Complete frames as (opcode, payload).
    pub frames: Vec<(u8, Vec<u8>)>,
    pub ending: Ending,
}

impl Drained {
    /// The code of the close frame, if one came.
    pub fn close_code(&self) -> Option<u16> {
        self.frames
            .iter()
            .find(|(opcode, _)| *opcode == OP_CLOSE)
            .map(|(_, payload)| close_code_of(payload))
    }

    /// The text frames as JSON, heartbeats left out.
    pub fn json(&self) -> Vec<Value> {
        self.frames
            .iter()
            .filter(|(opcode, _)| *opcode == OP_TEXT)
            .map(|(_, payload)| serde_json::from_slice(payload).expect("server sent JSON"))
            .filter(|frame: &Value| !(frame["type"] == "info" && frame["msg"] == "ping"))
            .collect()
    }
}

/// Splits unmasked server frames out of a byte stream; an incomplete last
/// frame is left out.
fn split_server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        assert_eq!(bytes[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => {
                let len: [u8; 8] = bytes[2..10].try_into().unwrap();
                (u64::from_be_bytes(len), 10)
            }
            126 | 127 => break,
            short => (u64::from(short), 2),
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header))
            .filter(|&end| end <= bytes.len())
        else {
            break;
        };
        frames.push((bytes[0] & 0x0f, bytes[header..end].to_vec()));
        bytes = &bytes[end..];
    }
    frames
}

/// The status code of a close frame's payload; fails if it has none.
#[track_caller]
pub fn close_code_of(payload: &[u8]) -> u16 {
    assert!(payload.len() >= 2, "close frame without a code");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Reads an HTTP response head byte by byte up to the blank line.
pub async fn read_http_head(stream: &mut TcpStream) -> String {
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

/// A client frame as RFC 6455 wants it: masked, with the shortest length.
pub fn masked_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
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
    frame
}
