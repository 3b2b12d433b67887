//! Shared harness: a real ringcast server on port 0 in this process, and
//! real WebSocket and HTTP clients talking to it over loopback sockets.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringcast::{Config, Server};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for a frame it expects before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with extra flags, e.g. `["--api-key", "k"]`.
    pub async fn start(args: &[&str]) -> Self {
        let mut all = vec!["--host", "127.0.0.1", "--port", "0"];
        all.extend_from_slice(args);
        let config = Config::from_args(all).expect("valid test flags");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let shutdown = server.shutdown_token();
        let task = tokio::spawn(server.run());
        Self {
            addr,
            shutdown,
            task,
            http: reqwest::Client::new(),
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
        let response = self
            .http
            .post(self.url("/topics"))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "creating topic {name}");
    }

    /// GET a path and return status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Cancels the server and waits for it to finish shutting down.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shutdown in time")
            .unwrap();
    }
}

/// Sends one JSON text frame.
pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("ws send");
}

/// Receives the next JSON text frame, skipping heartbeats and control frames.
pub async fn recv(ws: &mut Ws) -> Value {
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
            return value;
        }
    }
}

/// Subscribes and returns the ack.
pub async fn subscribe(ws: &mut Ws, topic: &str, last_n: u64) -> Value {
    send(ws, json!({ "type": "subscribe", "topic": topic, "last_n": last_n, "request_id": format!("sub-{topic}") })).await;
    let ack = recv(ws).await;
    assert_eq!(ack["type"], "ack", "subscribe ack: {ack}");
    ack
}

/// A publish frame with a fresh UUID.
pub fn publish_frame(topic: &str, payload: Value, request_id: &str) -> Value {
    json!({
        "type": "publish",
        "topic": topic,
        "request_id": request_id,
        "message": { "id": uuid::Uuid::new_v4().to_string(), "payload": payload },
    })
}
