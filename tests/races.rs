//! Races over real sockets: topic deletion under publish load, unsubscribe
//! and resubscribe during replay, connections dropping mid-frame, shutdown
//! under full publish load, and subscribe/unsubscribe/disconnect churn.
//!
//! After each race the server must still answer and accept connections,
//! its subscriber and connection counts must come back to what is really
//! connected, `/stats` must agree with the acks the clients received, and
//! every acknowledged publish must have reached every subscriber that stayed,
//! exactly once and in `seq` order.
//!
//! Randomised choices come from a seed printed at the start of each test
//! (`RACES_SEED=<n>` replays one).
//!
//! A test binary of its own, not a module of an area's binary like most
//! tests: its runtimes have 4 and 12 worker threads on purpose, and it
//! holds a shutdown under full publish load to `SHUTDOWN_TIMEOUT`. In a
//! shared binary, tests of other modules would run beside these (the
//! harness runs as many tests at once as the machine has cores), each
//! timed under the other's load.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;
use tokio_util::sync::CancellationToken;

/// Large enough that no subscriber of these tests is ever a slow consumer:
/// the races under test are not backpressure.
const NO_BACKPRESSURE: &str = "1000000";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// xorshift64*: reproducible choices without a dependency.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Self {
        let seed = std::env::var("RACES_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
        eprintln!("{test}: RACES_SEED={seed}");
        Self(seed | 1)
    }

    fn fork(&mut self) -> Self {
        Self(self.next() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a WebSocket client reads next (heartbeats and control frames skipped).
#[derive(Debug)]
enum Got {
    Json(Value),
    Close(Option<u16>),
    Ended(String),
}

async fn next_got(ws: &mut Ws) -> Got {
    loop {
        let next = timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for a frame");
        match next {
            None => return Got::Ended("stream ended".into()),
            Some(Err(err)) => return Got::Ended(err.to_string()),
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("server sent JSON");
                if frame["type"] == "info" && frame["msg"] == "ping" {
                    continue;
                }
                return Got::Json(frame);
            }
            Some(Ok(Message::Close(close))) => {
                return Got::Close(close.map(|close| u16::from(close.code)))
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// `(seq, message id)` of an event frame of `topic`; fails on anything else.
#[track_caller]
fn event_of(frame: &Value, topic: &str) -> (u64, String) {
    assert_eq!(
        frame["type"], "event",
        "expected an event of {topic}: {frame}"
    );
    assert_eq!(frame["topic"], topic, "event of the wrong topic: {frame}");
    let seq = frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without seq: {frame}"));
    let id = frame["message"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("event without message.id: {frame}"))
        .to_owned();
    (seq, id)
}

/// Asserts that `events` are numbered `first, first+1, …` with no gap,
/// duplicate or reordering.
#[track_caller]
fn assert_contiguous(events: &[(u64, String)], first: u64, who: &str) {
    for (offset, (seq, id)) in events.iter().enumerate() {
        assert_eq!(
            *seq,
            first + offset as u64,
            "{who}: event {id} out of sequence (gap, duplicate or reorder) at position {offset}; \
             seqs around it: {:?}",
            events[offset.saturating_sub(3)..(offset + 3).min(events.len())]
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>()
        );
    }
}

async fn stats(server: &TestServer) -> Value {
    let (status, body) = server.get_json("/stats").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("/stats without integer {name}: {stats}"))
}

/// `/health` answers 200 `ok`, no connection task panicked, and a brand-new
/// WebSocket connection works.
async fn assert_server_alive(server: &TestServer, context: &str) {
    let (status, health) = server.get_json("/health").await;
    assert_eq!(status, 200, "{context}: /health: {health}");
    assert_eq!(health["status"], "ok", "{context}: {health}");
    // Panics in connection tasks are contained and only show up here.
    let stats = stats(server).await;
    assert_eq!(
        stats["panics"], 0,
        "{context}: a connection task panicked: {stats}"
    );
    let mut ws = server.ws().await;
    ping_pong(&mut ws, &format!("{context}-alive")).await;
    ws.close(None).await.expect("close");
}

/// Polls until `/health` reports exactly these counts, `/topics` and
/// `/stats` list `topic` with `subscribers`, and `/stats` agrees on the
/// connection count.
async fn wait_for_counts(server: &TestServer, topic: &str, subscribers: u64, connections: u64) {
    wait_until(
        &format!("{subscribers} subscribers on {topic} and {connections} connections"),
        move || async move {
            let (_, health) = server.get_json("/health").await;
            let listed = server.subscribers_of(topic).await;
            let stats = stats(server).await;
            let in_stats = stats["topics"][topic]["subscribers"].as_u64();
            if health["subscribers"] == subscribers
                && health["connections"] == connections
                && listed == Some(subscribers)
                && in_stats == Some(subscribers)
                && stats["connections"] == connections
            {
                Ok(())
            } else {
                Err(format!(
                    "/health {health}; /topics {topic}: {listed:?}; /stats {topic}: {in_stats:?}, \
                     connections {}",
                    stats["connections"]
                ))
            }
        },
    )
    .await;
}

/// Sleeps briefly until `counter` reaches `target` (fails after a while).
async fn wait_for_count(counter: &AtomicU64, target: u64, what: &str) {
    let deadline = Instant::now() + POLL_DEADLINE;
    while counter.load(SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {target} {what}; got {}",
            counter.load(SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn join<T>(handle: JoinHandle<T>) -> T {
    timeout(Duration::from_secs(30), handle)
        .await
        .expect("task did not finish")
        .expect("task panicked")
}

// ---------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------

/// Publishes sent and acknowledged so far, shared with the test.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Acked,
    /// A refusal: the WebSocket error code, or the REST status and code.
    Refused(String),
}

/// One publisher's history: what it sent, when, and what came back.
#[derive(Debug, Default)]
struct PublishLog {
    who: String,
    topic: String,
    /// Message ids in the order sent, with the time each was sent.
    sent: Vec<(String, Instant)>,
    /// Replies in request order, with the time each arrived; shorter than
    /// `sent` when the connection closed first.
    outcomes: Vec<(Outcome, Instant)>,
    /// REST only: the seq of each acked publish, by message id.
    seqs: HashMap<String, u64>,
    /// WebSocket only: the close code, if the server closed the connection.
    close: Option<Option<u16>>,
    /// When the publisher first got a refusal or the close frame.
    first_refusal: Option<Instant>,
}

impl PublishLog {
    fn acked_ids(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .zip(&self.sent)
            .filter(|((outcome, _), _)| *outcome == Outcome::Acked)
            .map(|(_, (id, _))| id.clone())
            .collect()
    }

    /// Replies are acks, then only refusals with `code`: once refused, a
    /// publisher is never acked again.
    #[track_caller]
    fn assert_acks_then_refusals(&self, code: &str) {
        let first_refusal = self
            .outcomes
            .iter()
            .position(|(outcome, _)| *outcome != Outcome::Acked)
            .unwrap_or(self.outcomes.len());
        for (index, (outcome, _)) in self.outcomes.iter().enumerate().skip(first_refusal) {
            assert_eq!(
                *outcome,
                Outcome::Refused(code.into()),
                "{}: publish #{index} ({}) after the first refusal (#{first_refusal}) must be \
                 refused with {code}",
                self.who,
                self.sent[index].0
            );
        }
    }

    fn refusals(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(outcome, _)| *outcome != Outcome::Acked)
            .count()
    }
}

struct PublisherSpec {
    who: String,
    topic: String,
    /// Publishes in flight at once (WebSocket only).
    window: usize,
    /// Bytes of padding in each payload.
    pad: usize,
    /// Publishes sent after the first refusal before stopping.
    after_refusal: usize,
    stop: CancellationToken,
    progress: Arc<Progress>,
}

impl PublisherSpec {
    fn new(who: &str, topic: &str, progress: &Arc<Progress>) -> Self {
        Self {
            who: who.into(),
            topic: topic.into(),
            window: 8,
            pad: 16,
            after_refusal: 3,
            stop: CancellationToken::new(),
            progress: progress.clone(),
        }
    }
}

/// A WebSocket publisher with up to `window` publishes in flight. It stops
/// when `stop` is cancelled, or `after_refusal` publishes after its first
/// refusal, or when the server closes the connection; it reads every reply
/// of what it sent (until a close) and checks they come in request order.
async fn ws_publisher(mut ws: Ws, spec: PublisherSpec) -> (Ws, PublishLog) {
    let mut log = PublishLog {
        who: spec.who.clone(),
        topic: spec.topic.clone(),
        ..PublishLog::default()
    };
    let pad = "x".repeat(spec.pad);
    let mut in_flight = 0;
    let mut extra_left: Option<usize> = None;
    let mut sending = true;
    loop {
        while sending && in_flight < spec.window {
            if spec.stop.is_cancelled() || extra_left == Some(0) {
                sending = false;
                break;
            }
            if let Some(left) = extra_left.as_mut() {
                *left -= 1;
            }
            let n = log.sent.len();
            let frame = publish_frame(
                &spec.topic,
                json!({ "who": spec.who, "n": n, "pad": pad }),
                &format!("{}-{n}", spec.who),
            );
            let id = frame["message"]["id"].as_str().unwrap().to_owned();
            spec.progress.sent.fetch_add(1, SeqCst);
            log.sent.push((id, Instant::now()));
            if ws
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                sending = false;
                break;
            }
            in_flight += 1;
        }
        if in_flight == 0 {
            if sending {
                continue;
            }
            break;
        }
        match next_got(&mut ws).await {
            Got::Json(frame) => {
                let index = log.outcomes.len();
                let request_id = format!("{}-{index}", spec.who);
                assert_eq!(
                    frame["request_id"], request_id,
                    "{}: replies must come in request order: {frame}",
                    spec.who
                );
                let now = Instant::now();
                match frame["type"].as_str() {
                    Some("ack") => {
                        assert_ack(&frame, &spec.topic, &request_id);
                        log.outcomes.push((Outcome::Acked, now));
                        spec.progress.acked.fetch_add(1, SeqCst);
                    }
                    Some("error") => {
                        let code = frame["error"]["code"].as_str().unwrap_or("?").to_owned();
                        log.outcomes.push((Outcome::Refused(code), now));
                        log.first_refusal.get_or_insert(now);
                        extra_left.get_or_insert(spec.after_refusal);
                    }
                    _ => panic!("{}: unexpected reply to a publish: {frame}", spec.who),
                }
                in_flight -= 1;
            }
            Got::Close(code) => {
                log.first_refusal.get_or_insert(Instant::now());
                log.close = Some(code);
                break;
            }
            Got::Ended(why) => panic!("{}: connection ended without a close: {why}", spec.who),
        }
    }
    (ws, log)
}

/// A REST publisher, one request at a time, with the same stop rules as
/// `ws_publisher`; a failed request (server gone) also stops it.
async fn rest_publisher(server_addr: std::net::SocketAddr, spec: PublisherSpec) -> PublishLog {
    let http = reqwest::Client::new();
    let url = format!("http://{server_addr}/topics/{}/messages", spec.topic);
    let mut log = PublishLog {
        who: spec.who.clone(),
        topic: spec.topic.clone(),
        ..PublishLog::default()
    };
    let pad = "x".repeat(spec.pad);
    let mut extra_left: Option<usize> = None;
    while !spec.stop.is_cancelled() && extra_left != Some(0) {
        if let Some(left) = extra_left.as_mut() {
            *left -= 1;
        }
        let body = message_body(json!({ "who": spec.who, "n": log.sent.len(), "pad": pad }));
        let id = body["id"].as_str().unwrap().to_owned();
        spec.progress.sent.fetch_add(1, SeqCst);
        log.sent.push((id.clone(), Instant::now()));
        let response = match http.post(&url).json(&body).send().await {
            Ok(response) => response,
            // Not acknowledged: the server is going away. Not a sign that
            // publishes have stopped, though: REST connections close as soon
            // as the shutdown begins, before publishes are stopped.
            Err(_) => break,
        };
        let (status, reply) = json_reply(response).await;
        let now = Instant::now();
        if status == 200 {
            assert_eq!(reply["status"], "published", "{reply}");
            assert_eq!(reply["topic"], spec.topic.as_str(), "{reply}");
            let seq = reply["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("publish reply without seq: {reply}"));
            log.seqs.insert(id, seq);
            log.outcomes.push((Outcome::Acked, now));
            spec.progress.acked.fetch_add(1, SeqCst);
        } else {
            let code = reply["error"]["code"].as_str().unwrap_or("?");
            log.outcomes
                .push((Outcome::Refused(format!("{status} {code}")), now));
            log.first_refusal.get_or_insert(now);
            extra_left.get_or_insert(spec.after_refusal);
        }
    }
    log
}

/// Which publisher sent message `id`, as which publish, and what came back.
fn describe_publish(logs: &[PublishLog], id: &str) -> String {
    for log in logs {
        if let Some(index) = log.sent.iter().position(|(sent, _)| sent == id) {
            let acks = log.acked_ids().len();
            let seq = log
                .seqs
                .get(id)
                .map_or(String::new(), |seq| format!(", REST seq {seq}"));
            return format!(
                "{id}: {} publish #{index} of {} ({acks} acked{seq})",
                log.who,
                log.sent.len()
            );
        }
    }
    format!("{id}: sent by no publisher")
}

/// Subscribes with `last_n` and request id `request_id`; the ack must come
/// first.
async fn subscribe_as(ws: &mut Ws, topic: &str, last_n: u64, request_id: &str) {
    send(
        ws,
        json!({ "type": "subscribe", "topic": topic, "last_n": last_n, "request_id": request_id }),
    )
    .await;
    expect_ack(ws, topic, request_id).await;
}

// ---------------------------------------------------------------------------
// 1. Deleting a topic under load
// ---------------------------------------------------------------------------

/// Reads events of `topic` until its `topic_deleted` notice, then proves
/// nothing else follows (the pong is the very next frame).
async fn read_until_deleted(mut ws: Ws, topic: &str, who: String) -> (Ws, Vec<(u64, String)>) {
    let mut events = Vec::new();
    loop {
        let frame = match next_got(&mut ws).await {
            Got::Json(frame) => frame,
            other => panic!("{who}: connection closed before topic_deleted: {other:?}"),
        };
        if frame["type"] == "info" {
            assert_eq!(frame["msg"], "topic_deleted", "{who}: {frame}");
            assert_eq!(frame["topic"], topic, "{who}: {frame}");
            assert_ts(&frame);
            break;
        }
        events.push(event_of(&frame, topic));
    }
    // Nothing more for the deleted topic, and the connection stays open.
    ping_pong(&mut ws, &format!("{who}-after-notice")).await;
    (ws, events)
}

/// Each round recreates the topic, subscribes everyone, starts publishers
/// and deletes the topic under them. Twelve worker threads on purpose (more
/// than the machine's cores): preemption widens the window between a
/// publish's topic lookup and its fan-out, which is what this race is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 12)]
async fn deleting_a_topic_under_publish_load_delivers_every_ack_then_the_notice_only() {
    const TOPIC: &str = "doomed";
    const SUBSCRIBERS: usize = 12;
    const WS_PUBLISHERS: usize = 10;
    const ROUNDS: usize = 40;
    let mut rng = Rng::new("delete_under_load");
    let server = TestServer::start(&["--subscriber-queue-size", NO_BACKPRESSURE]).await;
    let messages_path = format!("/topics/{TOPIC}/messages");
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscribers.push(server.ws().await);
    }

    for round in 0..ROUNDS {
        // (Re)create: a fresh topic numbers its events from 1 again...
        server.create_topic(TOPIC).await;
        let first = message_body(json!({ "round": round, "first": true }));
        let first_id = first["id"].as_str().unwrap().to_owned();
        let (status, reply) = server.post_json(&messages_path, &first).await;
        assert_eq!(status, 200, "round {round}: {reply}");
        assert_eq!(
            reply["seq"], 1,
            "round {round}: a recreated topic must start again at seq 1: {reply}"
        );
        // ...and the old incarnation's subscribers are not subscribed to it:
        // the seq 1 event was queued for none of them.
        assert_eq!(server.subscribers_of(TOPIC).await, Some(0), "round {round}");
        for (i, ws) in subscribers.iter_mut().enumerate() {
            ping_pong(ws, &format!("fresh-{round}-{i}")).await;
        }
        for ws in subscribers.iter_mut() {
            subscribe_as(ws, TOPIC, 1, &format!("sub-{round}")).await;
            let (seq, id) = event_of(&recv(ws).await, TOPIC);
            assert_eq!(
                (seq, id.as_str()),
                (1, first_id.as_str()),
                "replay of seq 1"
            );
        }
        server.wait_for_subscribers(TOPIC, SUBSCRIBERS as u64).await;
        let before = stats(&server).await;

        // WebSocket publishers (assorted pipelining windows) and two REST
        // publishers publish until refused.
        let progress = Arc::new(Progress::default());
        let mut ws_publishers = Vec::new();
        for p in 0..WS_PUBLISHERS {
            let mut spec = PublisherSpec::new(&format!("ws{p}"), TOPIC, &progress);
            spec.window = 1 + rng.below(12) as usize;
            ws_publishers.push(tokio::spawn(ws_publisher(server.ws().await, spec)));
        }
        let rest_publishers: Vec<_> = (0..2)
            .map(|p| {
                let spec = PublisherSpec::new(&format!("rest{p}"), TOPIC, &progress);
                tokio::spawn(rest_publisher(server.addr, spec))
            })
            .collect();
        let readers: Vec<_> = subscribers
            .drain(..)
            .enumerate()
            .map(|(i, ws)| tokio::spawn(read_until_deleted(ws, TOPIC, format!("sub{i}"))))
            .collect();

        // Delete while they are in full swing.
        wait_for_count(&progress.acked, 5 + rng.below(60), "acks").await;
        let deleted = server.delete_json(&format!("/topics/{TOPIC}")).await;
        assert_eq!(deleted.0, 200, "{}", deleted.1);
        assert_eq!(
            deleted.1,
            json!({ "status": "deleted", "topic": TOPIC }),
            "round {round}"
        );

        let mut logs = Vec::new();
        let mut publisher_sockets = Vec::new();
        for handle in ws_publishers {
            let (ws, log) = join(handle).await;
            publisher_sockets.push(ws);
            logs.push(log);
        }
        for handle in rest_publishers {
            logs.push(join(handle).await);
        }
        let mut received = Vec::new();
        for handle in readers {
            let (ws, events) = join(handle).await;
            subscribers.push(ws);
            // The seq 1 event came by replay before the race started.
            received.push([vec![(1, first_id.clone())], events].concat());
        }

        // Publishes are acked until the deletion, then refused with
        // TOPIC_NOT_FOUND (WebSocket) or 404 (REST), never acked again.
        let mut acked: Vec<String> = vec![first_id.clone()];
        let mut rest_seqs: HashMap<String, u64> = HashMap::new();
        for log in &logs {
            assert_eq!(
                log.outcomes.len(),
                log.sent.len(),
                "{}: every publish gets a reply",
                log.who
            );
            let code = if log.who.starts_with("ws") {
                "TOPIC_NOT_FOUND"
            } else {
                "404 TOPIC_NOT_FOUND"
            };
            log.assert_acks_then_refusals(code);
            assert!(log.refusals() >= 1, "{}: never refused", log.who);
            acked.extend(log.acked_ids());
            rest_seqs.extend(log.seqs.iter().map(|(id, seq)| (id.clone(), *seq)));
        }
        let acked_set: HashSet<&String> = acked.iter().collect();
        assert_eq!(acked_set.len(), acked.len(), "message ids are unique");
        let mut seen_rest_seqs: Vec<u64> = rest_seqs.values().copied().collect();
        seen_rest_seqs.sort_unstable();
        seen_rest_seqs.dedup();
        assert_eq!(
            seen_rest_seqs.len(),
            rest_seqs.len(),
            "round {round}: two REST publishes were acknowledged with the same seq: {rest_seqs:?}"
        );

        // Every subscriber got exactly the acknowledged events, numbered
        // 1..=n, before its notice.
        for (i, events) in received.iter().enumerate() {
            let who = format!("round {round} sub{i}");
            let ids: HashSet<&String> = events.iter().map(|(_, id)| id).collect();
            let missing: Vec<_> = acked_set.difference(&ids).collect();
            let unacked: Vec<_> = ids.difference(&acked_set).collect();
            assert!(
                missing.is_empty(),
                "{who}: {} acknowledged publishes never reached this subscriber before \
                 topic_deleted (ack without delivery): {:?}",
                missing.len(),
                missing
                    .iter()
                    .map(|id| describe_publish(&logs, id))
                    .collect::<Vec<_>>()
            );
            assert!(
                unacked.is_empty(),
                "{who}: events delivered that no publisher got acked: {unacked:?}"
            );
            assert_eq!(events.len(), acked.len(), "{who}: duplicates");
            assert_contiguous(events, 1, &who);
            for (seq, id) in events {
                if let Some(rest_seq) = rest_seqs.get(id) {
                    assert_eq!(
                        rest_seq, seq,
                        "{who}: REST reply seq differs from the event's"
                    );
                }
            }
            // A publisher's events keep its order.
            let seq_of: HashMap<&String, u64> = events.iter().map(|(seq, id)| (id, *seq)).collect();
            for log in &logs {
                let seqs: Vec<u64> = log.acked_ids().iter().map(|id| seq_of[id]).collect();
                assert!(
                    seqs.windows(2).all(|pair| pair[0] < pair[1]),
                    "{who}: {}'s events out of its publish order: {seqs:?}",
                    log.who
                );
            }
        }

        // Counters agree with the acks: every acked publish counted once and
        // delivered to each subscriber.
        let after = stats(&server).await;
        let raced = acked.len() as u64 - 1;
        assert_eq!(
            counter(&after, "published") - counter(&before, "published"),
            raced,
            "round {round}: /stats published vs acks: before {before}, after {after}"
        );
        assert_eq!(
            counter(&after, "delivered") - counter(&before, "delivered"),
            raced * SUBSCRIBERS as u64,
            "round {round}: /stats delivered vs acks x subscribers"
        );
        assert!(
            after["topics"].get(TOPIC).is_none(),
            "deleted topic still in /stats: {after}"
        );
        assert_eq!(server.subscribers_of(TOPIC).await, None);
        for ws in &mut publisher_sockets {
            ws.close(None).await.expect("close publisher");
        }
        wait_until("publishers to disconnect", || async {
            let (_, health) = server.get_json("/health").await;
            if health["connections"] == SUBSCRIBERS as u64 && health["subscribers"] == 0 {
                Ok(())
            } else {
                Err(health.to_string())
            }
        })
        .await;
    }

    for ws in &mut subscribers {
        ws.close(None).await.expect("close subscriber");
    }
    server.wait_until_idle().await;
    assert_server_alive(&server, "after deletions").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 2. Unsubscribe and resubscribe with replay while publishing
// ---------------------------------------------------------------------------

const CYCLE_RING: u64 = 50;

/// What one cycling subscriber saw: every event with the cycle it came in.
struct CycleRecord {
    who: String,
    /// (cycle, seq, id) for every event received.
    events: Vec<(usize, u64, String)>,
}

/// Subscribes and unsubscribes `cycles` times with assorted `last_n`,
/// reading only part of each replay before unsubscribing, and checks each
/// cycle as it goes:
///
/// - the subscribe ack comes before any event of the cycle, and no event
///   comes between an unsubscribe ack and the next subscribe ack;
/// - the first event of a cycle is the oldest of the `min(last_n, ring)`
///   replayed ones: its seq lies between (acked before subscribing) - r + 1
///   and (sent when the ack arrived) - r + 1, so `last_n: 0` replays nothing;
/// - from there seqs are contiguous up to the unsubscribe ack, across a
///   duplicate subscribe (a no-op: its ack, no second replay).
///
/// It ends subscribed when `end_subscribed`, else unsubscribed with the
/// strict check: after the unsubscribe ack nothing published later arrives.
async fn cycle_subscriber(
    mut ws: Ws,
    who: String,
    cycles: usize,
    mut rng: Rng,
    progress: Arc<Progress>,
    end_subscribed: bool,
) -> (Ws, CycleRecord) {
    const TOPIC: &str = "cycle";
    let mut record = CycleRecord {
        who: who.clone(),
        events: Vec::new(),
    };
    for cycle in 0..=cycles {
        let final_cycle = cycle == cycles;
        if final_cycle && !end_subscribed {
            break;
        }
        let last_n = [0, 1, 3, 10, 49, 50, 51, 200][rng.below(8) as usize];
        let replayed = last_n.min(CYCLE_RING);
        let acked_before = progress.acked.load(SeqCst);
        let sub_id = format!("{who}-s{cycle}");
        send(
            &mut ws,
            json!({ "type": "subscribe", "topic": TOPIC, "last_n": last_n, "request_id": sub_id }),
        )
        .await;
        // Nothing between the previous unsubscribe ack and this ack.
        assert_ack(&recv(&mut ws).await, TOPIC, &sub_id);
        let sent_at_ack = progress.sent.load(SeqCst);

        let mut last: Option<u64> = None;
        let mut take = |frame: &Value, record: &mut CycleRecord| {
            let (seq, id) = event_of(frame, TOPIC);
            match last {
                None => {
                    let low = (acked_before + 1).saturating_sub(replayed);
                    let high = (sent_at_ack + 1).saturating_sub(replayed);
                    assert!(
                        (low..=high).contains(&seq),
                        "{who} cycle {cycle}: subscribe with last_n {last_n} starts at seq {seq}, \
                         expected {low}..={high} (acked before subscribing {acked_before}, sent \
                         when the ack arrived {sent_at_ack}, ring {CYCLE_RING})"
                    );
                }
                Some(previous) => assert_eq!(
                    seq,
                    previous + 1,
                    "{who} cycle {cycle} (last_n {last_n}): gap or duplicate between replay and live"
                ),
            }
            last = Some(seq);
            record.events.push((cycle, seq, id));
        };
        // Read part of the replay (or some live events), sometimes with a
        // duplicate subscribe in the middle, then leave mid-stream.
        // The final cycle of one that stays subscribed reads at least one
        // event and sends no duplicate, so the test can resume from there.
        let reads = rng.below(replayed + 8).max(u64::from(final_cycle));
        let duplicate_at = (!final_cycle && rng.below(4) == 0).then(|| rng.below(reads + 1));
        let mut duplicate_acked = duplicate_at.is_none();
        let dup_id = format!("{who}-d{cycle}");
        for read in 0..=reads {
            if duplicate_at == Some(read) {
                send(
                    &mut ws,
                    json!({ "type": "subscribe", "topic": TOPIC, "last_n": 100, "request_id": dup_id }),
                )
                .await;
            }
            if read == reads {
                break;
            }
            let frame = recv(&mut ws).await;
            if frame["type"] == "ack" && !duplicate_acked {
                assert_ack(&frame, TOPIC, &dup_id);
                duplicate_acked = true;
                continue;
            }
            take(&frame, &mut record);
        }
        if final_cycle {
            break;
        }
        let unsub_id = format!("{who}-u{cycle}");
        send(
            &mut ws,
            json!({ "type": "unsubscribe", "topic": TOPIC, "request_id": unsub_id }),
        )
        .await;
        loop {
            let frame = recv(&mut ws).await;
            if frame["type"] == "ack" && frame["request_id"] == unsub_id {
                assert_ack(&frame, TOPIC, &unsub_id);
                break;
            }
            if frame["type"] == "ack" && !duplicate_acked {
                assert_ack(&frame, TOPIC, &dup_id);
                duplicate_acked = true;
                continue;
            }
            take(&frame, &mut record);
        }
        assert!(
            duplicate_acked,
            "{who} cycle {cycle}: duplicate subscribe not acked"
        );
    }

    if !end_subscribed {
        // Unsubscribe is strict: nothing arrives after its ack.
        let fence = progress.sent.load(SeqCst);
        wait_for_count(&progress.acked, fence + 20, "acks past the fence").await;
        send(&mut ws, json!({ "type": "ping", "request_id": "fence" })).await;
        assert_pong(&recv(&mut ws).await, "fence");
    }
    (ws, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsubscribe_and_resubscribe_with_replay_while_publishing() {
    const TOPIC: &str = "cycle";
    const CYCLERS: usize = 4;
    const CYCLES: usize = 60;
    let mut rng = Rng::new("resubscribe_cycles");
    let ring = CYCLE_RING.to_string();
    let server = TestServer::start(&[
        "--ring-buffer-size",
        &ring,
        "--subscriber-queue-size",
        NO_BACKPRESSURE,
    ])
    .await;
    server.create_topic(TOPIC).await;

    // One publisher, so seq n is its n-th publish.
    let progress = Arc::new(Progress::default());
    let mut spec = PublisherSpec::new("pub", TOPIC, &progress);
    spec.window = 4;
    let stop = spec.stop.clone();
    let publisher = tokio::spawn(ws_publisher(server.ws().await, spec));
    // A full ring before anyone subscribes.
    wait_for_count(&progress.acked, CYCLE_RING + 10, "acks").await;

    let mut cyclers = Vec::new();
    for c in 0..CYCLERS {
        let ws = server.ws().await;
        cyclers.push(tokio::spawn(cycle_subscriber(
            ws,
            format!("c{c}"),
            CYCLES,
            rng.fork(),
            progress.clone(),
            c == 0,
        )));
    }
    let mut sockets = Vec::new();
    let mut records = Vec::new();
    for handle in cyclers {
        let (ws, record) = join(handle).await;
        sockets.push(ws);
        records.push(record);
    }
    stop.cancel();
    let (publisher_ws, log) = join(publisher).await;
    assert_eq!(log.refusals(), 0, "{log:?}");
    assert_eq!(log.outcomes.len(), log.sent.len());

    // Every event was the right one for its seq, replayed or live.
    for record in &records {
        for (cycle, seq, id) in &record.events {
            assert_eq!(
                Some(id),
                log.sent.get(*seq as usize - 1).map(|(id, _)| id),
                "{} cycle {cycle}: event seq {seq} carries the wrong message",
                record.who
            );
        }
    }
    let acked = log.sent.len() as u64;
    let stats = stats(&server).await;
    assert_eq!(
        stats["topics"][TOPIC]["messages"], acked,
        "/stats messages vs acks: {stats}"
    );
    assert_eq!(counter(&stats, "published"), acked, "{stats}");

    // c0 ended subscribed, the others unsubscribed.
    wait_for_counts(&server, TOPIC, 1, CYCLERS as u64 + 1).await;
    drop(publisher_ws);
    // c0 stayed subscribed: it gets every later event, in order, to the end.
    let mut last = sockets.remove(0);
    let mut seq = records[0].events.last().map_or(0, |(_, seq, _)| *seq);
    while seq < acked {
        let (next, id) = event_of(&recv(&mut last).await, TOPIC);
        assert_eq!(
            next,
            seq + 1,
            "c0 after its last subscribe: gap or duplicate"
        );
        assert_eq!(
            id,
            log.sent[next as usize - 1].0,
            "c0: wrong message for seq {next}"
        );
        seq = next;
    }
    ping_pong(&mut last, "c0-still-open").await;
    drop(sockets);
    wait_for_counts(&server, TOPIC, 1, 1).await;
    drop(last);
    wait_for_counts(&server, TOPIC, 0, 0).await;
    assert_server_alive(&server, "after resubscribe cycles").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Connections dropping mid-frame
// ---------------------------------------------------------------------------

fn upgrade_request(addr: std::net::SocketAddr) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads one unmasked server frame as (opcode, payload); None at EOF or reset.
async fn raw_read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let mut head = [0; 2];
        stream.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => u64::from(stream.read_u16().await.ok()?),
            127 => stream.read_u64().await.ok()?,
            short => u64::from(short),
        };
        let mut payload = vec![0; len as usize];
        stream.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    };
    timeout(RECV_TIMEOUT, read)
        .await
        .expect("timed out reading a raw frame")
}

/// Upgrades a raw socket to a WebSocket and subscribes it to `topic`.
async fn raw_subscriber(addr: std::net::SocketAddr, topic: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream.write_all(&upgrade_request(addr)).await.unwrap();
    let head = read_http_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    let subscribe = json!({ "type": "subscribe", "topic": topic, "request_id": "raw" });
    stream
        .write_all(&masked_frame(0x1, true, subscribe.to_string().as_bytes()))
        .await
        .unwrap();
    loop {
        let (opcode, payload) = raw_read_frame(&mut stream)
            .await
            .expect("connection ended before the subscribe ack");
        if opcode != 0x1 {
            continue;
        }
        let frame: Value = serde_json::from_slice(&payload).expect("JSON");
        if frame["type"] == "ack" {
            assert_ack(&frame, topic, "raw");
            return stream;
        }
        assert_eq!(frame["type"], "event", "{frame}");
    }
}

/// One misbehaving client: it leaves in the middle of an upgrade request
/// or of a WebSocket frame, with a FIN or (when `reset`) an RST.
async fn mid_frame_dropper(addr: std::net::SocketAddr, kind: u64, reset: bool, topic: &str) {
    let publish = publish_frame(topic, json!({ "never": "completed" }), "half");
    let frame = masked_frame(0x1, true, publish.to_string().as_bytes());
    let request = upgrade_request(addr);
    let mut stream = match kind {
        // Half an upgrade request: cut inside the request line or a header.
        0 | 1 => {
            let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
            let cut = if kind == 0 { 7 } else { request.len() - 20 };
            stream.write_all(&request[..cut]).await.unwrap();
            stream
        }
        // The whole upgrade and half a frame in one write, 101 never read.
        2 => {
            let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
            let mut bytes = request;
            bytes.extend_from_slice(&frame[..frame.len() / 2]);
            stream.write_all(&bytes).await.unwrap();
            stream
        }
        // A subscriber that then sends: the first header byte only; the
        // header without its mask; header and mask only; part of the
        // payload; an extended length cut in the middle.
        _ => {
            let mut stream = raw_subscriber(addr, topic).await;
            let long = masked_frame(0x1, true, &[b' '; 300]);
            let part: &[u8] = match kind {
                3 => &frame[..1],
                4 => &frame[..2],
                5 => &frame[..6],
                6 => &frame[..frame.len() - 5],
                _ => &long[..3],
            };
            stream.write_all(part).await.unwrap();
            stream
        }
    };
    // Give the server a moment to park on the incomplete input.
    tokio::time::sleep(Duration::from_millis(kind % 3 * 5)).await;
    if reset {
        stream.set_zero_linger().expect("SO_LINGER 0");
    } else if kind.is_multiple_of(2) {
        // Half-close and wait: the server must hang up by itself.
        stream.shutdown().await.expect("shutdown");
        let mut sink = Vec::new();
        let read = timeout(RECV_TIMEOUT, stream.read_to_end(&mut sink)).await;
        assert!(
            read.is_ok(),
            "kind {kind}: the server kept a half-closed connection open"
        );
    }
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_dropping_mid_frame_leave_no_trace() {
    const TOPIC: &str = "steady";
    const WAVES: u64 = 8;
    const PER_WAVE: u64 = 32;
    let server = TestServer::start(&["--subscriber-queue-size", NO_BACKPRESSURE]).await;
    server.create_topic(TOPIC).await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, TOPIC, 0).await;
    let progress = Arc::new(Progress::default());
    let spec = PublisherSpec::new("pub", TOPIC, &progress);
    let stop = spec.stop.clone();
    let publisher = tokio::spawn(ws_publisher(server.ws().await, spec));
    let reader = tokio::spawn(async move {
        // Reads up to the sentinel, published once the publisher stopped.
        let mut events = Vec::new();
        loop {
            let frame = recv(&mut subscriber).await;
            events.push(event_of(&frame, TOPIC));
            if frame["message"]["payload"] == "sentinel" {
                return (subscriber, events);
            }
        }
    });

    for wave in 0..WAVES {
        let droppers: Vec<_> = (0..PER_WAVE)
            .map(|i| {
                let kind = (wave * PER_WAVE + i) % 8;
                let reset = (wave + i) % 3 == 0;
                tokio::spawn(mid_frame_dropper(server.addr, kind, reset, TOPIC))
            })
            .collect();
        for handle in droppers {
            join(handle).await;
        }
    }

    stop.cancel();
    let (publisher_ws, log) = join(publisher).await;
    assert_eq!(log.refusals(), 0, "{log:?}");
    let reply = publish_sentinel(&server, TOPIC).await;
    let (mut subscriber, events) = join(reader).await;

    // The steady subscriber got every acked event, in order, nothing else.
    let acked = log.acked_ids();
    assert!(
        acked.len() > 20,
        "the publisher barely ran: {} acks",
        acked.len()
    );
    assert_contiguous(&events, 1, "steady subscriber");
    let received: Vec<&String> = events.iter().map(|(_, id)| id).collect();
    assert_eq!(
        received[..received.len() - 1],
        acked.iter().collect::<Vec<_>>()[..],
        "steady subscriber vs acked publishes"
    );
    assert_eq!(reply["seq"], events.len() as u64);
    ping_pong(&mut subscriber, "steady-after").await;

    // Only the subscriber and the publisher are left.
    wait_for_counts(&server, TOPIC, 1, 2).await;
    let stats = stats(&server).await;
    let total = acked.len() as u64 + 1;
    assert_eq!(stats["topics"][TOPIC]["messages"], total, "{stats}");
    assert_eq!(counter(&stats, "published"), total, "{stats}");
    assert!(
        counter(&stats, "delivered") >= total,
        "fewer deliveries than the steady subscriber received: {stats}"
    );
    assert!(
        counter(&stats, "connections_total") >= 2 + WAVES * PER_WAVE / 2,
        "the droppers' upgrades did not happen: {stats}"
    );
    eprintln!(
        "{} acked publishes during {} dropped connections; /stats {stats}",
        acked.len(),
        WAVES * PER_WAVE
    );
    assert_server_alive(&server, "after mid-frame drops").await;
    let mut late = server.ws().await;
    subscribe(&mut late, TOPIC, 0).await;
    wait_for_counts(&server, TOPIC, 2, 3).await;
    drop((late, subscriber, publisher_ws));
    server.wait_until_idle().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// 4. Shutdown under full publish load
// ---------------------------------------------------------------------------

/// Reads until the server's close frame: every event per topic, and the
/// close code.
async fn read_until_close(
    mut ws: Ws,
    who: String,
    start: CancellationToken,
) -> (HashMap<String, Vec<(u64, String)>>, u16) {
    start.cancelled().await;
    let mut events: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    loop {
        match next_got(&mut ws).await {
            Got::Json(frame) => {
                let topic = frame["topic"].as_str().unwrap_or("?").to_owned();
                let event = event_of(&frame, &topic);
                events.entry(topic).or_default().push(event);
            }
            Got::Close(code) => {
                return (
                    events,
                    code.unwrap_or_else(|| panic!("{who}: close frame without a code")),
                )
            }
            Got::Ended(why) => panic!("{who}: connection ended without a close frame: {why}"),
        }
    }
}

/// One server: subscribers on two topics, WebSocket and REST publishers at
/// full speed, then shutdown in the middle of it.
async fn shutdown_under_load(rng: &mut Rng, attempt: usize) {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
    const TOPICS: [&str; 2] = ["load-a", "load-b"];
    const SUBSCRIBERS: usize = 32;
    const WS_PUBLISHERS: usize = 4;
    const REST_PUBLISHERS: usize = 4;
    let server = TestServer::start(&[
        "--shutdown-timeout",
        "3s",
        "--subscriber-queue-size",
        NO_BACKPRESSURE,
    ])
    .await;
    for topic in TOPICS {
        server.create_topic(topic).await;
    }
    // A quarter of the subscribers read all along; the others only once the
    // shutdown has begun, so the server's time goes to fanning out rather
    // than to waiting for readers, and their backlog is what is flushed.
    let mut readers = Vec::new();
    let shutting_down = CancellationToken::new();
    for s in 0..SUBSCRIBERS {
        let mut ws = server.ws().await;
        for topic in TOPICS {
            subscribe(&mut ws, topic, 0).await;
        }
        let start = if s % 4 == 0 {
            CancellationToken::new()
        } else {
            shutting_down.child_token()
        };
        if s % 4 == 0 {
            start.cancel();
        }
        readers.push(tokio::spawn(read_until_close(ws, format!("sub{s}"), start)));
    }
    server
        .wait_for_subscribers(TOPICS[1], SUBSCRIBERS as u64)
        .await;

    // Every publisher connects first, then all start at once.
    let progress = Arc::new(Progress::default());
    let mut specs = Vec::new();
    for topic in TOPICS {
        for p in 0..WS_PUBLISHERS {
            let mut spec = PublisherSpec::new(&format!("ws-{topic}-{p}"), topic, &progress);
            spec.window = 16;
            spec.after_refusal = 2;
            spec.pad = 64 * (1 + rng.below(16) as usize);
            specs.push((spec, Some(server.ws().await)));
        }
        for p in 0..REST_PUBLISHERS {
            let mut spec = PublisherSpec::new(&format!("rest-{topic}-{p}"), topic, &progress);
            spec.after_refusal = 2;
            specs.push((spec, None));
        }
    }
    let mut ws_publishers = Vec::new();
    let mut rest_publishers = Vec::new();
    for (spec, ws) in specs {
        match ws {
            Some(ws) => ws_publishers.push(tokio::spawn(ws_publisher(ws, spec))),
            None => rest_publishers.push(tokio::spawn(rest_publisher(server.addr, spec))),
        }
    }
    // Shut down in steady state, at a random moment.
    let load_started = Instant::now();
    wait_for_count(&progress.acked, 100 + rng.below(200), "acks").await;
    let load = Duration::from_millis(50 + rng.below(100));
    tokio::time::sleep(load.saturating_sub(load_started.elapsed())).await;

    let TestServer {
        addr,
        shutdown,
        task,
        ..
    } = server;
    let shutdown_started = Instant::now();
    shutdown.begin();
    shutting_down.cancel();
    let finished = timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(5), task).await;
    let took = shutdown_started.elapsed();
    finished
        .expect("the server task never finished")
        .expect("the server task panicked");
    assert!(
        took < SHUTDOWN_TIMEOUT,
        "attempt {attempt}: shutdown took {took:?}, past SHUTDOWN_TIMEOUT {SHUTDOWN_TIMEOUT:?}, \
         though every client kept reading"
    );

    let mut logs = Vec::new();
    for handle in ws_publishers {
        let (mut ws, mut log) = join(handle).await;
        if log.close.is_none() {
            // It stopped after its refusals; the close frame comes next.
            log.close = Some(match next_got(&mut ws).await {
                Got::Close(code) => code,
                other => panic!("{}: expected the close frame, got {other:?}", log.who),
            });
        }
        assert_eq!(
            log.close,
            Some(Some(1001)),
            "attempt {attempt}: {} was not closed with 1001",
            log.who
        );
        log.assert_acks_then_refusals("INTERNAL");
        logs.push(log);
    }
    for handle in rest_publishers {
        let log = join(handle).await;
        log.assert_acks_then_refusals("503 SHUTTING_DOWN");
        logs.push(log);
    }

    // Once any client has seen that publishes stopped (a refusal, or the
    // close frame, which comes after), no publish sent later is acknowledged.
    let shutdown_seen = logs
        .iter()
        .filter_map(|log| log.first_refusal)
        .min()
        .expect("no publisher noticed the shutdown");
    for log in &logs {
        for ((id, sent_at), (outcome, _)) in log.sent.iter().zip(&log.outcomes) {
            assert!(
                !(*outcome == Outcome::Acked && *sent_at > shutdown_seen),
                "attempt {attempt}: {} publish {id} was sent {:?} after a client saw the \
                 shutdown, yet acknowledged",
                log.who,
                *sent_at - shutdown_seen
            );
        }
    }

    // Every subscriber got every acknowledged event before its 1001.
    let mut acked_total = 0;
    for handle in readers {
        let (events, code) = join(handle).await;
        assert_eq!(code, 1001, "attempt {attempt}: subscriber close code");
        for topic in TOPICS {
            let received = events.get(topic).map(Vec::as_slice).unwrap_or_default();
            assert_contiguous(received, 1, &format!("attempt {attempt} {topic}"));
            let ids: HashSet<&String> = received.iter().map(|(_, id)| id).collect();
            let topic_logs: Vec<&PublishLog> =
                logs.iter().filter(|log| log.topic == topic).collect();
            let sent: HashSet<&String> = topic_logs
                .iter()
                .flat_map(|log| log.sent.iter().map(|(id, _)| id))
                .collect();
            assert!(
                ids.is_subset(&sent),
                "attempt {attempt}: {topic}: events nobody published"
            );
            let acked: Vec<String> = topic_logs.iter().flat_map(|log| log.acked_ids()).collect();
            acked_total += acked.len();
            let missing: Vec<String> = acked
                .iter()
                .filter(|id| !ids.contains(id))
                .map(|id| describe_publish(&logs, id))
                .collect();
            assert!(
                missing.is_empty(),
                "attempt {attempt}: {topic}: a subscriber closed with 1001 without {} \
                 acknowledged events (it got {} events): {missing:?}",
                missing.len(),
                received.len()
            );
        }
    }
    assert!(acked_total > 0);

    let refused = TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "attempt {attempt}: the listener still accepts after shutdown"
    );
}

/// More worker threads than the machine has cores on purpose: the OS then
/// preempts threads in the middle of a fan-out, which is what widens the
/// window between the shutdown's "stop publishes" and a publish already
/// past that check (with 2 threads this race is rarely hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 12)]
async fn shutdown_under_full_publish_load_flushes_every_acked_event_then_closes_1001() {
    let mut rng = Rng::new("shutdown_under_load");
    for attempt in 0..4 {
        shutdown_under_load(&mut rng, attempt).await;
    }
}

// ---------------------------------------------------------------------------
// 5. Subscribe / unsubscribe / disconnect churn
// ---------------------------------------------------------------------------

/// What a churning connection has seen, to check its stream as it goes.
#[derive(Default)]
struct ChurnState {
    subscribed: bool,
    /// Last event seq received in the current (or just ended) subscription.
    last: Option<u64>,
}

/// Sends a request and reads until its reply (`ack` or `pong`); the events
/// read on the way must be gapless within a subscription (a fresh
/// subscription's replay may start anywhere), and none may come after an
/// unsubscribe ack. Returns false if
/// the connection went away (the peer may have been reset).
async fn request(ws: &mut Ws, frame: Value, who: &str, state: &mut ChurnState) -> bool {
    const TOPIC: &str = "churn";
    let request_id = frame["request_id"].as_str().unwrap().to_owned();
    let kind = frame["type"].as_str().unwrap().to_owned();
    if ws
        .send(Message::Text(frame.to_string().into()))
        .await
        .is_err()
    {
        return false;
    }
    loop {
        let frame = match next_got(ws).await {
            Got::Json(frame) => frame,
            Got::Close(_) | Got::Ended(_) => return false,
        };
        if frame["request_id"] == request_id.as_str() {
            match kind.as_str() {
                "ping" => assert_pong(&frame, &request_id),
                _ => assert_ack(&frame, TOPIC, &request_id),
            }
            match kind.as_str() {
                "subscribe" if !state.subscribed => {
                    state.subscribed = true;
                    state.last = None;
                }
                "unsubscribe" if state.subscribed => state.subscribed = false,
                _ => {}
            }
            return true;
        }
        let (seq, _) = event_of(&frame, TOPIC);
        if let Some(last) = state.last {
            assert_eq!(
                seq,
                last + 1,
                "{who}: gap or duplicate within a subscription"
            );
        }
        assert!(
            state.subscribed,
            "{who}: event {seq} after the unsubscribe ack"
        );
        state.last = Some(seq);
    }
}

/// One churning client: connects, subscribes (with assorted `last_n`),
/// unsubscribes, resubscribes, pings, sometimes stops reading, then leaves
/// by a close handshake, by dropping the socket or by a reset; again and
/// again until `until`. Returns how many connections it made.
async fn churner(addr: String, who: String, until: Instant, mut rng: Rng) -> u64 {
    const TOPIC: &str = "churn";
    let mut connections = 0;
    while Instant::now() < until {
        let (mut ws, _) = tokio_tungstenite::connect_async(addr.as_str())
            .await
            .expect("ws connect");
        connections += 1;
        let mut state = ChurnState::default();
        for op in 0..1 + rng.below(6) {
            let request_id = format!("{who}-{connections}-{op}");
            let frame = match rng.below(5) {
                0 | 1 => json!({ "type": "subscribe", "topic": TOPIC,
                    "last_n": rng.below(20), "request_id": request_id }),
                2 | 3 => json!({ "type": "unsubscribe", "topic": TOPIC, "request_id": request_id }),
                _ => json!({ "type": "ping", "request_id": request_id }),
            };
            if rng.below(4) == 0 {
                // Fire and forget: leave with the reply (and events) unread.
                let _ = ws.send(Message::Text(frame.to_string().into())).await;
                break;
            }
            if !request(&mut ws, frame, &who, &mut state).await {
                break;
            }
        }
        match rng.below(3) {
            0 => {
                let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
            }
            1 => {
                if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
                    let _ = tcp.set_zero_linger();
                }
            }
            _ => {}
        }
        drop(ws);
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_unsubscribe_disconnect_churn_leaks_no_subscriber() {
    const TOPIC: &str = "churn";
    const CHURNERS: usize = 24;
    const CHURN: Duration = Duration::from_secs(2);
    let mut rng = Rng::new("churn");
    let server = TestServer::start(&["--subscriber-queue-size", NO_BACKPRESSURE]).await;
    server.create_topic(TOPIC).await;

    let progress = Arc::new(Progress::default());
    let spec = PublisherSpec::new("pub", TOPIC, &progress);
    let stop = spec.stop.clone();
    let publisher = tokio::spawn(ws_publisher(server.ws().await, spec));
    wait_for_count(&progress.acked, 20, "acks").await;

    let until = Instant::now() + CHURN;
    let churners: Vec<_> = (0..CHURNERS)
        .map(|c| tokio::spawn(churner(server.ws_url(), format!("c{c}"), until, rng.fork())))
        .collect();

    // The stable subscriber joins while the churn and the publishing run.
    tokio::time::sleep(CHURN / 4).await;
    let mut stable = server.ws().await;
    subscribe(&mut stable, TOPIC, 0).await;
    // Publishes sent from here on were sent after the subscribe was acked.
    let sent_at_ack = progress.sent.load(SeqCst);
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        loop {
            let frame = recv(&mut stable).await;
            events.push(event_of(&frame, TOPIC));
            if frame["message"]["payload"] == "sentinel" {
                return (stable, events);
            }
        }
    });

    let mut connections = 0;
    for handle in churners {
        connections += join(handle).await;
    }
    stop.cancel();
    let (publisher_ws, log) = join(publisher).await;
    assert_eq!(log.refusals(), 0, "{log:?}");
    let reply = publish_sentinel(&server, TOPIC).await;
    let (mut stable, events) = join(reader).await;

    // The stable subscriber got a gapless run of the publisher's acked
    // events, in order, from no later than the first publish sent after its
    // ack, to the sentinel.
    let acked = log.acked_ids();
    assert_eq!(acked.len(), log.sent.len());
    let (first_seq, _) = events[0].clone();
    assert!(
        first_seq <= sent_at_ack + 1,
        "the stable subscriber's first event is seq {first_seq}, but publishes from #{} on were \
         sent after its subscribe was acked",
        sent_at_ack + 1
    );
    assert_contiguous(&events, first_seq, "stable subscriber");
    let total = acked.len() as u64 + 1;
    assert_eq!(reply["seq"], total, "{reply}");
    assert_eq!(
        events.last().unwrap().0,
        total,
        "sentinel is the last event"
    );
    for (seq, id) in &events[..events.len() - 1] {
        assert_eq!(
            id,
            &acked[*seq as usize - 1],
            "stable subscriber: seq {seq} carries the wrong message"
        );
    }
    ping_pong(&mut stable, "stable-after").await;

    // Every churner is gone: only the stable subscriber and the publisher.
    wait_for_counts(&server, TOPIC, 1, 2).await;
    let stats = stats(&server).await;
    assert_eq!(stats["topics"][TOPIC]["messages"], total, "{stats}");
    assert_eq!(counter(&stats, "published"), total, "{stats}");
    assert!(
        counter(&stats, "connections_total") >= connections + 2,
        "{connections} churn connections, {stats}"
    );
    eprintln!(
        "{connections} churn connections, {} acked publishes; /stats {stats}",
        acked.len()
    );
    assert_server_alive(&server, "after churn").await;
    drop((stable, publisher_ws));
    wait_for_counts(&server, TOPIC, 0, 0).await;
    server.stop().await;
}

/// Publishes the `"sentinel"` payload over REST: the last event readers
/// wait for once the publisher has stopped. Returns the reply (with `seq`).
async fn publish_sentinel(server: &TestServer, topic: &str) -> Value {
    let (status, reply) = server
        .post_json(
            &format!("/topics/{topic}/messages"),
            &message_body(json!("sentinel")),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}
