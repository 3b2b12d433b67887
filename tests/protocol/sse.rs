//! Server-sent events (`GET /sse`) over real sockets: the `subscribed`
//! event, events as the JSON `/ws` sends, the cursor's resume across a
//! dropped connection and across a restart, bad input before the stream,
//! the slow-consumer cut, shutdown, presence and the heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::sse::SseClient;
use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

async fn open(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> SseClient {
    SseClient::open(request(server, query, headers).await).await
}

async fn request(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = server.http.get(server.url(&format!("/sse?{query}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Waits until `/health` reports `count` for `field`.
async fn wait_for_health(server: &TestServer, field: &str, count: u64) {
    wait_until(&format!("/health {field} {count}"), || async {
        let (_, health) = server.get_json("/health").await;
        match health[field] == count {
            true => Ok(()),
            false => Err(health.to_string()),
        }
    })
    .await;
}

async fn publish_rest(server: &TestServer, topic: &str, payload: Value) -> u64 {
    let (status, body) = server
        .post_json(&format!("/topics/{topic}/messages"), &message_body(payload))
        .await;
    assert_eq!(status, 200, "{body}");
    body["seq"].as_u64().unwrap()
}

#[test]
fn events_arrive_in_order_as_the_json_websocket_subscribers_get() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&[]).await;
        server.create_topic("orders").await;
        publish_rest(&server, "orders", json!({"before": true})).await;
        let mut ws = server.ws().await;
        let ack = subscribe(&mut ws, "orders", 0).await;
        let mut stream = open(&server, "topic=orders&client_id=sse-1", &[]).await;
        let subscribed = stream.subscribed().await;
        assert_eq!(subscribed["orders"]["seq"], 1);
        assert_eq!(subscribed["orders"]["epoch"], ack["epoch"]);
        assert!(subscribed["orders"].get("recovered").is_none());
        let payloads = [
            json!({"n": 1}),
            json!("text\nwith a line break"),
            json!([1, 2.5]),
        ];
        for payload in &payloads {
            publish_rest(&server, "orders", payload.clone()).await;
        }
        // A payload sent with line breaks in it is passed through as sent.
        let mut raw = server.ws().await;
        send(
            &mut raw,
            publish_frame("orders", json!({"pretty": [1, 2]}), "p"),
        )
        .await;
        expect_ack(&mut raw, "orders", "p").await;
        for seq in 2..=5 {
            let over_ws = recv_text(&mut ws).await;
            let (id, event) = stream.event().await;
            assert_eq!(event, serde_json::from_str::<Value>(&over_ws).unwrap());
            assert_eq!(event["seq"], seq);
            assert!(!id.is_empty());
        }
        server.stop().await;
    });
}

#[tokio::test]
async fn last_n_replays_before_the_live_events() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    for n in 1..=5 {
        publish_rest(&server, "a", json!(n)).await;
    }
    let mut stream = open(&server, "topic=a&last_n=2", &[]).await;
    assert_eq!(stream.subscribed().await["a"]["seq"], 5);
    publish_rest(&server, "a", json!(6)).await;
    for seq in 4..=6 {
        assert_eq!(stream.event().await.1["seq"], seq);
    }
    server.stop().await;
}

/// Publishes `per_topic` events to each of `topics` over REST, in turns.
fn publish_in_background(
    server: &TestServer,
    topics: &'static [&'static str],
    per_topic: u64,
) -> tokio::task::JoinHandle<()> {
    let (http, base) = (server.http.clone(), server.url(""));
    tokio::spawn(async move {
        for n in 1..=per_topic {
            for topic in topics {
                let response = http
                    .post(format!("{base}/topics/{topic}/messages"))
                    .json(&message_body(json!(n)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    })
}

#[test]
fn last_event_id_resumes_every_topic_with_no_gap_and_no_duplicate() {
    on_both_runtimes(|| async {
        const TOPICS: &[&str] = &["left", "right"];
        const PER_TOPIC: u64 = 200;
        let server = TestServer::start(&[]).await;
        for topic in TOPICS {
            server.create_topic(topic).await;
        }
        let query = "topic=left&topic=right&last_n=1000";
        let publishing = publish_in_background(&server, TOPICS, PER_TOPIC);
        let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        let mut reconnects = 0;
        while seen.values().map(Vec::len).sum::<usize>() < TOPICS.len() * PER_TOPIC as usize {
            let headers: Vec<(&str, &str)> = cursor
                .as_deref()
                .map(|id| ("Last-Event-ID", id))
                .into_iter()
                .collect();
            let mut stream = open(&server, query, &headers).await;
            let subscribed = stream.subscribed().await;
            if cursor.is_some() {
                reconnects += 1;
                for topic in TOPICS {
                    assert_eq!(subscribed[*topic]["recovered"], true, "{subscribed:?}");
                }
            }
            // Each connection takes a few events, then is dropped.
            for _ in 0..37 {
                if seen.values().map(Vec::len).sum::<usize>() == TOPICS.len() * PER_TOPIC as usize {
                    break;
                }
                let (id, event) = stream.event().await;
                seen.entry(event["topic"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(event["seq"].as_u64().unwrap());
                cursor = Some(id);
            }
        }
        publishing.await.unwrap();
        assert!(reconnects >= 5, "{reconnects}");
        for topic in TOPICS {
            assert_eq!(seen[*topic], (1..=PER_TOPIC).collect::<Vec<_>>(), "{topic}");
        }
        server.stop().await;
    });
}

#[tokio::test]
async fn the_query_cursor_resumes_too_and_the_header_wins() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    let mut stream = open(&server, "topic=a", &[]).await;
    stream.subscribed().await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        publish_rest(&server, "a", json!(n)).await;
        ids.push(stream.event().await.0);
    }
    drop(stream);
    let encoded = |id: &str| form_encode(id);
    let mut resumed = open(
        &server,
        &format!("topic=a&last_event_id={}", encoded(&ids[0])),
        &[],
    )
    .await;
    assert_eq!(resumed.subscribed().await["a"]["recovered"], true);
    assert_eq!(resumed.event().await.1["seq"], 2);
    let mut resumed = open(
        &server,
        &format!("topic=a&last_n=10&last_event_id={}", encoded(&ids[0])),
        &[("Last-Event-ID", &ids[1])],
    )
    .await;
    resumed.subscribed().await;
    assert_eq!(
        resumed.event().await.1["seq"],
        3,
        "the header's cursor, not last_n"
    );
    server.stop().await;
}

fn form_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn after_a_restart_on_the_same_port_the_cursor_is_not_recovered() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    let mut stream = open(&server, "topic=a", &[]).await;
    let before = stream.subscribed().await;
    publish_rest(&server, "a", json!(1)).await;
    let (id, _) = stream.event().await;
    drop(stream);
    let port = server.addr.port();
    server.stop().await;
    let server = TestServer::start_on(port, &[]).await;
    server.create_topic("a").await;
    publish_rest(&server, "a", json!("after")).await;
    let mut stream = open(&server, "topic=a", &[("Last-Event-ID", &id)]).await;
    let after = stream.subscribed().await;
    assert_eq!(after["a"]["recovered"], false, "{after:?}");
    assert_ne!(after["a"]["epoch"], before["a"]["epoch"]);
    publish_rest(&server, "a", json!("live")).await;
    assert_eq!(
        stream.event().await.1["seq"],
        2,
        "nothing of another history is replayed"
    );
    server.stop().await;
}

/// The largest stream: 100 topics with long names, whose cursor (some 25
/// KiB) still comes back as a header.
#[tokio::test]
async fn a_hundred_topics_resume_from_one_cursor() {
    let server = TestServer::start(&[]).await;
    let names: Vec<String> = (0..100)
        .map(|n| format!("{n:03}{}", "t".repeat(250)))
        .collect();
    for name in &names {
        server.create_topic(name).await;
    }
    let query: Vec<String> = names.iter().map(|name| format!("topic={name}")).collect();
    let query = query.join("&");
    let mut stream = open(&server, &query, &[]).await;
    assert_eq!(stream.subscribed().await.len(), 100);
    publish_rest(&server, &names[99], json!(1)).await;
    let (id, _) = stream.event().await;
    assert!(id.len() > 25_000, "{}", id.len());
    drop(stream);
    publish_rest(&server, &names[0], json!(2)).await;
    let mut resumed = open(&server, &query, &[("Last-Event-ID", &id)]).await;
    let subscribed = resumed.subscribed().await;
    assert!(subscribed.values().all(|topic| topic["recovered"] == true));
    let (_, event) = resumed.event().await;
    assert_eq!(
        (&event["topic"], &event["seq"]),
        (&json!(names[0]), &json!(1))
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_the_stream_starts() {
    let server = TestServer::start(&[]).await;
    server.create_topic("a").await;
    let too_many: String = (0..101).map(|n| format!("topic=t{n}&")).collect();
    for (query, status, code) in [
        ("topic=a&topic=missing", 404, "TOPIC_NOT_FOUND"),
        ("", 400, "BAD_REQUEST"),
        ("last_n=2", 400, "BAD_REQUEST"),
        (too_many.as_str(), 400, "BAD_REQUEST"),
        ("topic=a&last_n=-1", 400, "BAD_REQUEST"),
        ("topic=a&last_n=many", 400, "BAD_REQUEST"),
        ("topic=a&last_event_id=nonsense", 400, "BAD_REQUEST"),
        ("topic=a%20b", 400, "BAD_REQUEST"),
    ] {
        let reply = json_reply(request(&server, query, &[]).await).await;
        assert_error_reply(&reply, status, code, query);
    }
    let reply = json_reply(request(&server, "topic=a", &[("Last-Event-ID", "a.e")]).await).await;
    assert_error_reply(&reply, 400, "BAD_REQUEST", "a malformed Last-Event-ID");
    assert_eq!(server.get_json("/health").await.1["connections"], 0);
    server.stop().await;
}

const SECRET: &str = "sse-secret-sse-secret-sse-secret";

/// An HS256 token signed with `secret` that may subscribe to `topics`,
/// expiring in `seconds`.
fn token(secret: &str, topics: Value, seconds: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + seconds;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "exp": exp, "subscribe": topics }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn credentials_come_in_a_header_or_the_query_and_tokens_need_subscribe() {
    let server = TestServer::start(&[
        "--api-key",
        "key",
        "--jwt-secret",
        SECRET,
        "--allowed-origins",
        "https://app.example",
    ])
    .await;
    server.create_topic_with_key("a", "key").await;
    let reply = json_reply(request(&server, "topic=a", &[]).await).await;
    assert_error_reply(&reply, 401, "UNAUTHORIZED", "no credential");
    let reply = json_reply(request(&server, "topic=a&api_key=wrong", &[]).await).await;
    assert_error_reply(&reply, 401, "UNAUTHORIZED", "a wrong key");
    open(&server, "topic=a&api_key=key", &[])
        .await
        .subscribed()
        .await;
    open(&server, "topic=a", &[("X-API-Key", "key")])
        .await
        .subscribed()
        .await;
    let allowed = token(SECRET, json!(["a"]), 300);
    open(&server, &format!("topic=a&token={allowed}"), &[])
        .await
        .subscribed()
        .await;
    let other = token(SECRET, json!(["b*"]), 300);
    let reply = json_reply(request(&server, &format!("topic=a&token={other}"), &[]).await).await;
    assert_error_reply(
        &reply,
        403,
        "FORBIDDEN",
        "a token without subscribe on the topic",
    );
    let reply = json_reply(
        request(
            &server,
            "topic=a&api_key=key",
            &[("Origin", "https://evil.example")],
        )
        .await,
    )
    .await;
    assert_error_reply(
        &reply,
        403,
        "FORBIDDEN_ORIGIN",
        "an origin ALLOWED_ORIGINS lacks",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--api-key", "key"]).await;
    server.create_topic_with_key("a", "key").await;
    let short = token(SECRET, json!(["a"]), 1);
    let mut stream = open(&server, &format!("topic=a&token={short}"), &[]).await;
    stream.subscribed().await;
    let last = stream.expect_next().await;
    assert_eq!(last.event.as_deref(), Some("error"), "{last:?}");
    assert_eq!(last.json()["error"]["code"], "UNAUTHORIZED");
    assert!(stream.next().await.is_none(), "the stream ends");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_counts_as_a_connection_with_its_subscriptions_and_limits() {
    let server = TestServer::start(&[
        "--max-connections",
        "1",
        "--max-subscriptions-per-connection",
        "2",
    ])
    .await;
    server.create_topic("a").await;
    server.create_topic("b").await;
    server.create_topic("c").await;
    let reply = json_reply(request(&server, "topic=a&topic=b&topic=c", &[]).await).await;
    assert_error_reply(
        &reply,
        400,
        "BAD_REQUEST",
        "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    );
    let mut stream = open(&server, "topic=a&topic=b&client_id=dash", &[]).await;
    stream.subscribed().await;
    let (_, health) = server.get_json("/health").await;
    assert_eq!(
        (&health["connections"], &health["subscribers"]),
        (&json!(1), &json!(2))
    );
    let (_, presence) = server.get_json("/subscriptions").await;
    let rows = presence["subscriptions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{presence}");
    assert!(
        rows.iter().all(|row| row["client_id"] == "dash"),
        "{presence}"
    );
    let reply = json_reply(request(&server, "topic=a", &[]).await).await;
    assert_error_reply(
        &reply,
        503,
        "TOO_MANY_CONNECTIONS",
        "MAX_CONNECTIONS is full",
    );
    drop(stream);
    wait_for_health(&server, "subscribers", 0).await;
    assert_eq!(server.get_json("/health").await.1["connections"], 0);
    server.stop().await;
}

#[test]
fn shutdown_ends_the_stream_after_server_shutdown() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&[]).await;
        server.create_topic("a").await;
        let mut stream = open(&server, "topic=a", &[]).await;
        stream.subscribed().await;
        publish_rest(&server, "a", json!(1)).await;
        let stopping = tokio::spawn(server.stop());
        assert_eq!(
            stream.event().await.1["seq"],
            1,
            "queued events are flushed"
        );
        let last = stream.expect_next().await;
        assert_eq!(last.event.as_deref(), Some("info"), "{last:?}");
        assert_eq!(last.json()["msg"], "server_shutdown");
        assert!(stream.next().await.is_none(), "the stream ends");
        stopping.await.unwrap();
    });
}

#[tokio::test]
async fn the_heartbeat_is_a_comment_line() {
    let server = TestServer::start(&["--heartbeat-interval", "100ms"]).await;
    server.create_topic("a").await;
    let mut stream = open(&server, "topic=a", &[]).await;
    stream.subscribed().await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    publish_rest(&server, "a", json!(1)).await;
    assert_eq!(stream.event().await.1["seq"], 1);
    assert!(stream.comments.len() >= 2, "{:?}", stream.comments);
    assert!(stream.comments.iter().all(|comment| comment == "ping"));
    server.stop().await;
}

/// A stream that stops reading is cut; its socket is closed once it has
/// taken nothing for `WRITE_TIMEOUT`; another stream is not held back.
#[test]
fn a_client_that_never_reads_is_cut_as_a_slow_consumer() {
    on_both_runtimes(|| async {
        let server = TestServer::start(&[
            "--subscriber-queue-size",
            "8",
            "--max-message-size",
            "4194304",
            "--write-timeout",
            "300ms",
        ])
        .await;
        server.create_topic("a").await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(server.addr).await.unwrap();
        stalled
            .write_all(b"GET /sse?topic=a HTTP/1.1\r\nHost: ringcast\r\n\r\n")
            .await
            .unwrap();
        server.wait_for_subscribers("a", 1).await;
        let mut reader = open(&server, "topic=a", &[]).await;
        reader.subscribed().await;
        let payload = json!("x".repeat(64 * 1024));
        let mut published = 0;
        while server.counter("slow_consumer_disconnects").await == 0 {
            published = publish_rest(&server, "a", payload.clone()).await;
            assert!(published < 1000, "the stalled stream was never cut");
        }
        for seq in 1..=published {
            assert_eq!(
                reader.event().await.1["seq"],
                seq,
                "the reader is not held back"
            );
        }
        server.wait_for_subscribers("a", 1).await;
        wait_for_health(&server, "connections", 1).await;
        // Its socket still held what hyper had taken; past WRITE_TIMEOUT
        // the server gives up on it rather than keep the connection.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut unread = Vec::new();
        let read = tokio::time::timeout(RECV_TIMEOUT, stalled.read_to_end(&mut unread)).await;
        assert!(read.is_ok(), "the server closed the stalled connection");
        assert!(
            !unread.ends_with(b"0\r\n\r\n"),
            "the response was cut, not finished"
        );
        server.stop().await;
    });
}
