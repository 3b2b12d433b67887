//! Recovery after a reconnect on a single node: `since_seq` and `epoch` on
//! subscribe, `seq`/`epoch`/`recovered` in its ack, and
//! `GET /topics/{name}/messages`; over real sockets.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Subscribes with extra fields (`since_seq`, `epoch`, ...) and returns the ack.
async fn subscribe_with(ws: &mut Ws, topic: &str, fields: Value) -> Value {
    let mut frame = json!({ "type": "subscribe", "topic": topic, "request_id": "resume" });
    frame
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    send(ws, frame).await;
    let ack = expect_ack(ws, topic, "resume").await;
    assert!(
        ack["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{ack}"
    );
    ack
}

/// The seqs of the next `count` frames, which must be events of `topic`
/// carrying `{"n": seq}`.
async fn next_seqs(ws: &mut Ws, topic: &str, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    for _ in 0..count {
        let event = recv(ws).await;
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["topic"], topic, "{event}");
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(event["message"]["payload"], json!({ "n": seq }), "{event}");
        seqs.push(seq);
    }
    seqs
}

/// Publishes events `{"n": n}` for n in `range`, each acked before the next.
async fn publish_numbered(ws: &mut Ws, topic: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        publish_acked(ws, topic, json!({ "n": n }), &format!("p{n}")).await;
    }
}

/// Records the last seq seen, disconnects, and resumes while a publisher
/// keeps going: the stream continues at the next seq, no gap, no duplicate.
async fn resume_under_concurrent_publishing() {
    const TOTAL: u64 = 400;
    let server = TestServer::start(&["--ring-buffer-size", "1000"]).await;
    server.create_topic("live").await;
    let mut subscriber = server.ws().await;
    let ack = subscribe_with(&mut subscriber, "live", json!({})).await;
    assert_eq!(ack["seq"], 0, "no event yet: {ack}");
    assert!(ack.get("recovered").is_none(), "only with since_seq: {ack}");
    let epoch = ack["epoch"].clone();

    let mut publisher = server.ws().await;
    let publishing = tokio::spawn(async move {
        publish_numbered(&mut publisher, "live", 1..=TOTAL).await;
    });
    let seen = next_seqs(&mut subscriber, "live", 50).await;
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    drop(subscriber);
    tokio::time::sleep(Duration::from_millis(30)).await;

    let mut resumed = server.ws().await;
    let ack = subscribe_with(
        &mut resumed,
        "live",
        json!({ "since_seq": 50, "epoch": epoch }),
    )
    .await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], epoch, "{ack}");
    let at_join = ack["seq"].as_u64().unwrap();
    assert!((50..=TOTAL).contains(&at_join), "{ack}");
    let rest = next_seqs(&mut resumed, "live", (TOTAL - 50) as usize).await;
    assert_eq!(rest, (51..=TOTAL).collect::<Vec<_>>(), "gap or duplicate");
    publishing.await.unwrap();
    ping_pong(&mut resumed, "nothing more").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_under_concurrent_publishing_continues_exactly() {
    resume_under_concurrent_publishing().await;
}

#[tokio::test(flavor = "current_thread")]
async fn resume_under_concurrent_publishing_on_one_thread() {
    resume_under_concurrent_publishing().await;
}

#[tokio::test]
async fn a_ring_overrun_is_not_recovered_and_replays_the_retained_tail() {
    let server = TestServer::start(&["--ring-buffer-size", "5"]).await;
    let mut publisher = server.ws().await;
    // (since_seq, recovered, replayed), each on a topic of 20 events: 16..=20
    // are retained, 15 was the last evicted.
    let cases: [(u64, bool, Vec<u64>); 5] = [
        (2, false, (16..=20).collect()),
        (14, false, (16..=20).collect()),
        (15, true, (16..=20).collect()),
        (18, true, vec![19, 20]),
        (20, true, vec![]),
    ];
    for (since, recovered, replayed) in cases {
        let topic = &format!("small-{since}");
        server.create_topic(topic).await;
        publish_numbered(&mut publisher, topic, 1..=20).await;
        let epoch = subscribe_with(&mut server.ws().await, topic, json!({})).await["epoch"].clone();
        let mut ws = server.ws().await;
        let ack = subscribe_with(&mut ws, topic, json!({ "since_seq": since })).await;
        assert_eq!(ack["recovered"], recovered, "since {since}: {ack}");
        assert_eq!((&ack["seq"], &ack["epoch"]), (&json!(20), &epoch), "{ack}");
        assert_eq!(next_seqs(&mut ws, topic, replayed.len()).await, replayed);
        publish_numbered(&mut publisher, topic, 21..=21).await;
        assert_eq!(next_seqs(&mut ws, topic, 1).await, [21], "then live");
        ping_pong(&mut ws, "no duplicate").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_since_seq_ahead_of_the_topic_or_a_foreign_epoch_replays_nothing() {
    let server = TestServer::start(&[]).await;
    server.create_topic("t").await;
    let mut publisher = server.ws().await;
    publish_numbered(&mut publisher, "t", 1..=3).await;
    for fields in [
        json!({ "since_seq": 4 }),
        json!({ "since_seq": 1, "epoch": "another-history" }),
    ] {
        let mut ws = server.ws().await;
        let ack = subscribe_with(&mut ws, "t", fields.clone()).await;
        assert_eq!(ack["recovered"], false, "{fields}: {ack}");
        assert_eq!(ack["seq"], 3, "{ack}");
        ping_pong(&mut ws, "nothing replayed").await;
    }
    let mut ws = server.ws().await;
    let ack = subscribe_with(&mut ws, "t", json!({ "since_seq": 0, "last_n": null })).await;
    assert_eq!(ack["recovered"], true, "everything is retained: {ack}");
    assert_eq!(next_seqs(&mut ws, "t", 3).await, [1, 2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn a_recreated_topic_or_a_restarted_server_has_a_new_epoch() {
    let server = TestServer::start(&[]).await;
    server.create_topic("again").await;
    let mut publisher = server.ws().await;
    publish_numbered(&mut publisher, "again", 1..=3).await;
    let first = subscribe_with(&mut server.ws().await, "again", json!({})).await["epoch"].clone();
    server.delete_json("/topics/again").await;
    server.create_topic("again").await;
    publish_numbered(&mut publisher, "again", 1..=2).await;

    let mut ws = server.ws().await;
    let ack = subscribe_with(&mut ws, "again", json!({ "since_seq": 1, "epoch": first })).await;
    assert_ne!(ack["epoch"], first, "{ack}");
    assert_eq!((&ack["recovered"], &ack["seq"]), (&json!(false), &json!(2)));
    ping_pong(&mut ws, "nothing replayed").await;
    publish_numbered(&mut publisher, "again", 3..=3).await;
    assert_eq!(next_seqs(&mut ws, "again", 1).await, [3], "then live");
    server.stop().await;

    let restarted = TestServer::start(&[]).await;
    restarted.create_topic("again").await;
    let ack = subscribe_with(&mut restarted.ws().await, "again", json!({})).await;
    assert_ne!(ack["epoch"], first, "{ack}");
    restarted.stop().await;
}

#[tokio::test]
async fn since_seq_must_be_a_count_and_excludes_last_n() {
    let server = TestServer::start(&[]).await;
    server.create_topic("t").await;
    let mut ws = server.ws().await;
    for (frame, context) in [
        (
            json!({ "since_seq": 1, "last_n": 2 }),
            "since_seq with last_n",
        ),
        (json!({ "since_seq": -1 }), "negative since_seq"),
        (json!({ "since_seq": "1" }), "since_seq as a string"),
        (json!({ "since_seq": 1, "epoch": 5 }), "epoch as a number"),
    ] {
        let mut subscribe = json!({ "type": "subscribe", "topic": "t", "request_id": "bad" });
        subscribe
            .as_object_mut()
            .unwrap()
            .extend(frame.as_object().unwrap().clone());
        send(&mut ws, subscribe).await;
        expect_error(&mut ws, "BAD_REQUEST", Some("bad"), context).await;
    }
    ping_pong(&mut ws, "still open").await;
    assert_eq!(server.subscribers_of("t").await, Some(0));
    server.stop().await;
}

#[tokio::test]
async fn rest_history_pages_through_the_ring() {
    let server = TestServer::start(&["--ring-buffer-size", "8"]).await;
    server.create_topic("h").await;
    let mut publisher = server.ws().await;
    publish_numbered(&mut publisher, "h", 1..=10).await;
    let epoch = subscribe_with(&mut server.ws().await, "h", json!({})).await["epoch"].clone();
    let raw = r#"{"é":"☃ \"q\"","big":123456789012345678901234567890,"f":1.50}"#;
    let sent = message_body(json!(null));
    let body = format!(
        r#"{{"id":"{}","payload":{raw}}}"#,
        sent["id"].as_str().unwrap()
    );
    let response = server
        .http
        .post(server.url("/topics/h/messages"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let seqs = |body: &Value| -> Vec<u64> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["seq"].as_u64().unwrap())
            .collect()
    };
    let (status, body) = server.get_json("/topics/h/messages").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["topic"], &body["epoch"]), (&json!("h"), &epoch));
    assert_eq!(body["seq"], 11, "{body}");
    assert!(body.get("recovered").is_none(), "{body}");
    assert_eq!(seqs(&body), (4..=11).collect::<Vec<_>>(), "oldest first");
    let first = &body["messages"][0];
    assert_eq!(first["payload"], json!({ "n": 4 }), "{first}");
    assert!(first["id"].as_str().is_some_and(|id| id.len() == 36));
    assert_ts(&json!({ "ts": first["ts"] }));
    let last = &body["messages"][7];
    assert_eq!(last["id"], sent["id"], "{last}");

    // The payload comes back verbatim, as in an event frame.
    let text = server.get_text("/topics/h/messages?limit=1").await;
    assert!(
        text.contains(&format!(r#""payload":{raw},"seq":11,"ts":""#)),
        "{text}"
    );

    // (query, recovered, seqs)
    let cases: [(&str, Value, Vec<u64>); 6] = [
        ("limit=3", Value::Null, vec![9, 10, 11]),
        ("since_seq=4&limit=2", json!(true), vec![5, 6]),
        ("since_seq=3&limit=100", json!(true), (4..=11).collect()),
        ("since_seq=1&limit=2", json!(false), vec![4, 5]),
        ("since_seq=11&limit=5&_=cache-buster", json!(true), vec![]),
        ("since_seq=12", json!(false), vec![]),
    ];
    for (query, recovered, expected) in cases {
        let (status, body) = server
            .get_json(&format!("/topics/h/messages?{query}"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(
            body.get("recovered").unwrap_or(&Value::Null),
            &recovered,
            "{query}: {body}"
        );
        assert_eq!(seqs(&body), expected, "{query}");
    }

    for query in [
        "limit=0",
        "limit=x",
        "since_seq=-1",
        "since_seq=1.5",
        "since_seq=1&since_seq=2",
    ] {
        let reply = server
            .get_json(&format!("/topics/h/messages?{query}"))
            .await;
        assert_error_reply(&reply, 400, "BAD_REQUEST", query);
    }
    let reply = server.get_json("/topics/nope/messages").await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "unknown topic");
    let reply = server.get_json("/topics/bad%20name/messages").await;
    assert_error_reply(&reply, 400, "BAD_REQUEST", "bad name");
    server.stop().await;
}

/// The README's browser snippet, step for step: remember the last `seq`
/// and `epoch`; on a drop, reconnect with backoff and resubscribe with
/// them; when the ack says `recovered: false`, reload (here from
/// `GET /topics/{name}/messages`) and go on from the ack's `seq`.
struct Resumer {
    url: String,
    topic: &'static str,
    last_seq: Option<u64>,
    epoch: Option<Value>,
    /// What the application holds: each event's `n`, by seq.
    state: Vec<u64>,
    reloads: usize,
}

impl Resumer {
    /// Connects and subscribes, backing off while the server is away (or
    /// has not got the topic yet).
    async fn connect(&mut self, http: &reqwest::Client, rest: &str) -> Ws {
        let mut delay = Duration::from_millis(20);
        let (ws, ack) = loop {
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&self.url).await {
                let mut subscribe =
                    json!({ "type": "subscribe", "topic": self.topic, "request_id": "s" });
                if let Some(seq) = self.last_seq {
                    subscribe["since_seq"] = json!(seq);
                    subscribe["epoch"] = self.epoch.clone().unwrap();
                }
                send(&mut ws, subscribe).await;
                let reply = recv(&mut ws).await;
                if reply["type"] == "ack" {
                    break (ws, reply);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        };
        if self.last_seq.is_none() || ack["recovered"] == false {
            if self.last_seq.is_some() {
                self.reload(http, rest).await;
            }
            self.last_seq = ack["seq"].as_u64();
        }
        self.epoch = Some(ack["epoch"].clone());
        ws
    }

    /// Events were lost: the state is fetched again (from the topic's
    /// history here; an application would ask its own backend).
    async fn reload(&mut self, http: &reqwest::Client, rest: &str) {
        self.reloads += 1;
        let url = format!("{rest}/topics/{}/messages", self.topic);
        let (_, body) = json_reply(http.get(url).send().await.unwrap()).await;
        self.state = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["payload"]["n"].as_u64().unwrap())
            .collect();
    }

    /// Applies the next event unless it is one the state already has.
    async fn on_event(&mut self, ws: &mut Ws) {
        let event = recv(ws).await;
        assert_eq!(event["type"], "event", "{event}");
        let seq = event["seq"].as_u64().unwrap();
        if self.last_seq.is_some_and(|last| seq <= last) {
            return;
        }
        self.last_seq = Some(seq);
        self.state
            .push(event["message"]["payload"]["n"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn the_readme_reconnect_loop_resumes_or_reloads() {
    let server = TestServer::start(&["--ring-buffer-size", "10"]).await;
    server.create_topic("feed").await;
    let rest = server.url("");
    let mut client = Resumer {
        url: server.ws_url(),
        topic: "feed",
        last_seq: None,
        epoch: None,
        state: Vec::new(),
        reloads: 0,
    };
    let mut publisher = server.ws().await;
    let mut ws = client.connect(&server.http, &rest).await;
    publish_numbered(&mut publisher, "feed", 1..=5).await;
    for _ in 1..=5 {
        client.on_event(&mut ws).await;
    }

    // Dropped while 5 events go by: they fit the ring, so it resumes.
    drop(ws);
    publish_numbered(&mut publisher, "feed", 6..=10).await;
    let mut ws = client.connect(&server.http, &rest).await;
    publish_numbered(&mut publisher, "feed", 11..=11).await;
    for _ in 6..=11 {
        client.on_event(&mut ws).await;
    }
    assert_eq!(client.reloads, 0);
    assert_eq!(client.state, (1..=11).collect::<Vec<_>>());

    // Dropped while 30 go by: more than the ring, so it reloads.
    drop(ws);
    publish_numbered(&mut publisher, "feed", 12..=41).await;
    let mut ws = client.connect(&server.http, &rest).await;
    assert_eq!(client.reloads, 1);
    assert_eq!(client.state, (32..=41).collect::<Vec<_>>());
    for _ in 32..=41 {
        client.on_event(&mut ws).await;
    }
    publish_numbered(&mut publisher, "feed", 42..=42).await;
    client.on_event(&mut ws).await;
    assert_eq!(
        client.state,
        (32..=42).collect::<Vec<_>>(),
        "replay skipped"
    );
    drop(ws);

    // The server restarts on the same port: history is gone, the epoch
    // changes, the client backs off until it is back, then reloads.
    let port = server.addr.port();
    server.stop().await;
    let restarting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let server = TestServer::start_on(port, &[]).await;
        server.create_topic("feed").await;
        server
    });
    let reconnecting = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let ws = client.connect(&http, &rest).await;
        (client, ws)
    });
    let server = restarting.await.unwrap();
    let (mut client, mut ws) = reconnecting.await.unwrap();
    assert_eq!(client.reloads, 2);
    assert!(client.state.is_empty());
    let mut publisher = server.ws().await;
    publish_numbered(&mut publisher, "feed", 1..=1).await;
    client.on_event(&mut ws).await;
    assert_eq!(
        (client.state.as_slice(), client.last_seq),
        (&[1][..], Some(1))
    );
    server.stop().await;
}
