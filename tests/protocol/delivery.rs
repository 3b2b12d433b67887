//! Delivery guarantees over real sockets: fan-out, isolation, ordering with
//! concurrent publishers, replay, unsubscribe, topic deletion and ping.

use crate::common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::sync::{watch, Barrier};
use tokio_tungstenite::tungstenite::Message;

/// Receives the next frame and asserts it is a well-formed event.
async fn recv_event(ws: &mut Ws) -> Value {
    let frame = recv(ws).await;
    assert_eq!(frame["type"], "event", "expected an event: {frame}");
    assert!(
        frame["message"]["id"].is_string(),
        "event without message.id: {frame}"
    );
    assert!(frame["seq"].is_u64(), "event without integer seq: {frame}");
    assert_ts(&frame);
    frame
}

/// Receives exactly `count` events, all of which must belong to `topic`.
async fn recv_events(ws: &mut Ws, topic: &str, count: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let event = recv_event(ws).await;
        assert_eq!(event["topic"], topic, "event from the wrong topic: {event}");
        events.push(event);
    }
    events
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect()
}

/// Publishes `{"topic": t, "n": n}` to every topic in turn for n in 1..=rounds,
/// each acked before the next.
async fn publish_rounds(publisher: &mut Ws, topics: &[&str], rounds: u64) {
    for n in 1..=rounds {
        for &topic in topics {
            let payload = json!({ "topic": topic, "n": n });
            publish_acked(publisher, topic, payload, &format!("{topic}-{n}")).await;
        }
    }
}

/// Pings and asserts the pong is the very next frame: nothing else (no
/// duplicate or stray event) was queued for this connection before it.
async fn assert_nothing_pending(ws: &mut Ws) {
    ping_pong(ws, "quiet?").await;
}

/// A payload written as raw JSON text: nesting, escapes, unicode, floats,
/// negative and very large integers. It travels verbatim inside the frame.
fn rich_payload(i: usize) -> String {
    format!(
        concat!(
            r#"{{"i":{i},"nested":{{"list":[1,{{"deep":[null,true,false,"x"]}},[]],"empty":{{}}}},"#,
            r#""text":"héllo ☃ 😀 \u00e9\u2603 \"quoted\" back\\slash\ttab\nline","#,
            r#""float":3.14159,"small":-0.00025,"exp":6.02e23,"neg":-{neg},"min":-9007199254740993,"#,
            r#""big":123456789012345678901234567890}}"#
        ),
        i = i,
        neg = i + 1,
    )
}

/// A publish frame whose payload is raw JSON text.
fn raw_publish_frame(topic: &str, id: &str, payload: &str, request_id: &str) -> String {
    format!(
        r#"{{"type":"publish","topic":"{topic}","request_id":"{request_id}","message":{{"id":"{id}","payload":{payload}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_every_event_to_every_subscriber_once_in_order() {
    const SUBSCRIBERS: usize = 50;
    const EVENTS: usize = 200;
    let server = TestServer::start(&[]).await;
    server.create_topic("fanout").await;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut ws = server.ws().await;
        let ack = subscribe(&mut ws, "fanout", 0).await;
        assert_eq!(ack["topic"], "fanout", "{ack}");
        readers.push(tokio::spawn(async move {
            let events = recv_events(&mut ws, "fanout", EVENTS).await;
            (ws, events)
        }));
    }
    assert_eq!(
        server.subscribers_of("fanout").await,
        Some(SUBSCRIBERS as u64)
    );

    let mut publisher = server.ws().await;
    let mut expected = Vec::new();
    for i in 0..EVENTS {
        let id = uuid::Uuid::new_v4().to_string();
        let payload = rich_payload(i);
        let request_id = format!("p{i}");
        let frame = raw_publish_frame("fanout", &id, &payload, &request_id);
        publisher.send(Message::Text(frame.into())).await.unwrap();
        expect_ack(&mut publisher, "fanout", &request_id).await;
        let payload: Value = serde_json::from_str(&payload).expect("test payload is JSON");
        expected.push((id, payload));
    }

    for reader in readers {
        let (mut ws, events) = reader.await.unwrap();
        let expected_seqs: Vec<u64> = (1..=EVENTS as u64).collect();
        assert_eq!(seqs(&events), expected_seqs);
        for (event, (id, payload)) in events.iter().zip(&expected) {
            assert_eq!(event["message"]["id"], id.as_str(), "{event}");
            assert_eq!(
                event["message"]["payload"], *payload,
                "payload changed in transit"
            );
        }
        assert_nothing_pending(&mut ws).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_isolated() {
    const EVENTS: u64 = 30;
    let server = TestServer::start(&[]).await;
    let topics = ["iso.a", "iso.b"];
    let mut subscribers = Vec::new();
    for topic in topics {
        server.create_topic(topic).await;
        let mut ws = server.ws().await;
        subscribe(&mut ws, topic, 0).await;
        subscribers.push(ws);
    }
    let mut publisher = server.ws().await;
    publish_rounds(&mut publisher, &topics, EVENTS).await;
    for (ws, topic) in subscribers.iter_mut().zip(topics) {
        let events = recv_events(ws, topic, EVENTS as usize).await;
        for (event, n) in events.iter().zip(1..) {
            assert_eq!(event["seq"], n, "{event}");
            assert_eq!(
                event["message"]["payload"],
                json!({ "topic": topic, "n": n })
            );
        }
        assert_nothing_pending(ws).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_give_every_subscriber_one_identical_gapless_order() {
    const PUBLISHERS: u64 = 8;
    const PER_PUBLISHER: u64 = 200;
    const BATCH: u64 = 20;
    const SUBSCRIBERS: usize = 4;
    const TOTAL: u64 = PUBLISHERS * PER_PUBLISHER;
    let server = TestServer::start(&[]).await;
    server.create_topic("busy").await;

    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut ws = server.ws().await;
        subscribe(&mut ws, "busy", 0).await;
        readers.push(tokio::spawn(async move {
            recv_events(&mut ws, "busy", TOTAL as usize).await
        }));
    }

    let start = std::sync::Arc::new(Barrier::new(PUBLISHERS as usize));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut ws = server.ws().await;
        let start = start.clone();
        publishers.push(tokio::spawn(async move {
            start.wait().await;
            // Pipelined batches: the server must keep this connection's order.
            for first in (0..PER_PUBLISHER).step_by(BATCH as usize) {
                let batch = first..first + BATCH;
                for n in batch.clone() {
                    send(
                        &mut ws,
                        publish_frame(
                            "busy",
                            json!({ "publisher": p, "n": n }),
                            &format!("{p}-{n}"),
                        ),
                    )
                    .await;
                }
                for n in batch {
                    expect_ack(&mut ws, "busy", &format!("{p}-{n}")).await;
                }
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let mut reference: Option<Vec<(u64, String)>> = None;
    for reader in readers {
        let events = reader.await.unwrap();
        let mut next_n = vec![0u64; PUBLISHERS as usize];
        for (event, seq) in events.iter().zip(1u64..) {
            assert_eq!(event["seq"], seq, "gap or reordering: {event}");
            let payload = &event["message"]["payload"];
            let p = payload["publisher"].as_u64().expect("publisher") as usize;
            assert_eq!(
                payload["n"], next_n[p],
                "publisher {p}'s order broken at seq {seq}"
            );
            next_n[p] += 1;
        }
        assert_eq!(
            next_n,
            vec![PER_PUBLISHER; PUBLISHERS as usize],
            "every publisher's events, once each"
        );
        let order: Vec<(u64, String)> = events
            .iter()
            .map(|event| {
                (
                    event["seq"].as_u64().unwrap(),
                    event["message"]["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        match &reference {
            None => reference = Some(order),
            Some(first) => assert!(first == &order, "subscribers saw different orders"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_many_subscriptions() {
    const ROUNDS: u64 = 10;
    let server = TestServer::start(&[]).await;
    let topics = ["multi.0", "multi.1", "multi.2"];
    let mut subscriber = server.ws().await;
    for topic in topics {
        server.create_topic(topic).await;
        let ack = subscribe(&mut subscriber, topic, 0).await;
        assert_eq!(ack["topic"], topic, "{ack}");
    }
    let mut publisher = server.ws().await;
    publish_rounds(&mut publisher, &topics, ROUNDS).await;
    // Each publish is acked only once its event is queued for the subscriber,
    // so the one connection sees them in exactly the publishing order.
    for round in 1..=ROUNDS {
        for topic in topics {
            let event = recv_event(&mut subscriber).await;
            assert_eq!(event["topic"], topic, "{event}");
            assert_eq!(event["seq"], round, "{event}");
            assert_eq!(
                event["message"]["payload"],
                json!({ "topic": topic, "n": round })
            );
        }
    }
    assert_nothing_pending(&mut subscriber).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_ack_then_last_n_oldest_first_then_live() {
    const PUBLISHED: u64 = 30;
    let server = TestServer::start(&["--ring-buffer-size", "20"]).await;
    server.create_topic("replay").await;
    let mut publisher = server.ws().await;
    let mut ids = vec![String::new()]; // ids[seq]
    for n in 1..=PUBLISHED {
        ids.push(
            publish_acked(
                &mut publisher,
                "replay",
                json!({ "n": n }),
                &format!("r{n}"),
            )
            .await,
        );
    }

    // (last_n, first replayed seq): within the ring, beyond the ring, none.
    let cases = [(5, 26), (100, 11), (0, PUBLISHED + 1)];
    let mut subscribers = Vec::new();
    for (last_n, first) in cases {
        let mut ws = server.ws().await;
        let ack = subscribe(&mut ws, "replay", last_n).await;
        assert_eq!(ack["request_id"], "sub-replay", "{ack}");
        assert_eq!(ack["topic"], "replay", "{ack}");
        assert_eq!(ack["status"], "ok", "{ack}");
        let expected: Vec<u64> = (first..=PUBLISHED).collect();
        let replayed = recv_events(&mut ws, "replay", expected.len()).await;
        assert_eq!(seqs(&replayed), expected, "replay for last_n={last_n}");
        for event in &replayed {
            let seq = event["seq"].as_u64().unwrap();
            assert_eq!(event["message"]["payload"], json!({ "n": seq }), "{event}");
            assert_eq!(
                event["message"]["id"],
                ids[seq as usize].as_str(),
                "{event}"
            );
        }
        subscribers.push(ws);
    }

    publish_acked(
        &mut publisher,
        "replay",
        json!({ "n": PUBLISHED + 1 }),
        "live",
    )
    .await;
    for ws in &mut subscribers {
        let live = recv_events(ws, "replay", 1).await;
        assert_eq!(
            live[0]["seq"],
            PUBLISHED + 1,
            "first live event follows the replay: {}",
            live[0]
        );
        assert_nothing_pending(ws).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_while_publishing_has_no_gap_or_duplicate() {
    const TOTAL: u64 = 2000;
    const BATCH: u64 = 20;
    const LAST_N: u64 = 50;
    const JOIN_AFTER: [u64; 5] = [0, 300, 800, 1300, 1800];
    let server = TestServer::start(&[]).await;
    server.create_topic("live").await;
    let (progress, acked) = watch::channel(0u64);

    let mut subscribers = Vec::new();
    for join_after in JOIN_AFTER {
        let mut ws = server.ws().await;
        let mut acked = acked.clone();
        subscribers.push(tokio::spawn(async move {
            acked.wait_for(|&count| count >= join_after).await.unwrap();
            subscribe(&mut ws, "live", LAST_N).await;
            let mut seqs = Vec::new();
            while seqs.last() != Some(&TOTAL) {
                seqs.push(
                    recv_events(&mut ws, "live", 1).await[0]["seq"]
                        .as_u64()
                        .unwrap(),
                );
            }
            (join_after, seqs)
        }));
    }

    let mut publisher = server.ws().await;
    for first in (1..=TOTAL).step_by(BATCH as usize) {
        let batch = first..first + BATCH;
        for n in batch.clone() {
            send(
                &mut publisher,
                publish_frame("live", json!({ "n": n }), &format!("l{n}")),
            )
            .await;
        }
        for n in batch {
            expect_ack(&mut publisher, "live", &format!("l{n}")).await;
        }
        progress.send_replace(first + BATCH - 1);
    }

    for subscriber in subscribers {
        let (join_after, seqs) = subscriber.await.unwrap();
        let first = seqs[0];
        // At least `join_after` events existed when it subscribed, and the
        // replay holds at most LAST_N of them.
        assert!(
            first >= join_after.saturating_sub(LAST_N - 1).max(1),
            "joined after {join_after}: starts at {first}"
        );
        let expected: Vec<u64> = (first..=TOTAL).collect();
        assert!(
            seqs == expected,
            "joined after {join_after}: sequence has a gap or duplicate: {seqs:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_after_its_ack() {
    let server = TestServer::start(&[]).await;
    let mut subscriber = server.ws().await;
    for topic in ["un.a", "un.b"] {
        server.create_topic(topic).await;
        subscribe(&mut subscriber, topic, 0).await;
    }
    let mut publisher = server.ws().await;
    publish_acked(&mut publisher, "un.a", json!("before"), "a1").await;
    assert_eq!(recv_events(&mut subscriber, "un.a", 1).await[0]["seq"], 1);

    send(
        &mut subscriber,
        json!({ "type": "unsubscribe", "topic": "un.a", "request_id": "unsub-a" }),
    )
    .await;
    expect_ack(&mut subscriber, "un.a", "unsub-a").await;
    assert_eq!(server.subscribers_of("un.a").await, Some(0));

    for n in 2..=6 {
        publish_acked(&mut publisher, "un.a", json!("after"), &format!("a{n}")).await;
    }
    publish_acked(&mut publisher, "un.b", json!("marker"), "b1").await;
    // The un.a events were published first; had any been delivered, they
    // would arrive before this one.
    let marker = recv_event(&mut subscriber).await;
    assert_eq!(marker["topic"], "un.b", "event after unsubscribe: {marker}");
    assert_eq!(marker["message"]["payload"], "marker");
    assert_nothing_pending(&mut subscriber).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_notifies_subscribers_and_keeps_them_connected() {
    let server = TestServer::start(&[]).await;
    server.create_topic("doomed").await;
    server.create_topic("survivor").await;
    let mut both = server.ws().await;
    subscribe(&mut both, "doomed", 0).await;
    subscribe(&mut both, "survivor", 0).await;
    let mut only = server.ws().await;
    subscribe(&mut only, "doomed", 0).await;

    assert_eq!(
        server.delete_json("/topics/doomed").await,
        (200, json!({ "status": "deleted", "topic": "doomed" }))
    );

    for ws in [&mut both, &mut only] {
        let notice = recv(ws).await;
        assert_eq!(notice["type"], "info", "{notice}");
        assert_eq!(notice["topic"], "doomed", "{notice}");
        assert_eq!(notice["msg"], "topic_deleted", "{notice}");
        assert_ts(&notice);
        assert_nothing_pending(ws).await;

        send(
            ws,
            json!({ "type": "subscribe", "topic": "doomed", "request_id": "again" }),
        )
        .await;
        expect_error(ws, "TOPIC_NOT_FOUND", Some("again"), "resubscribing").await;
    }
    assert_eq!(server.subscribers_of("doomed").await, None);

    // The other subscription of the same connection still works.
    let mut publisher = server.ws().await;
    publish_acked(&mut publisher, "survivor", json!("still here"), "s1").await;
    let event = recv_events(&mut both, "survivor", 1).await;
    assert_eq!(event[0]["message"]["payload"], "still here");
    assert_nothing_pending(&mut only).await;
    server.stop().await;
}

#[tokio::test]
async fn ping_gets_pong() {
    let server = TestServer::start(&[]).await;
    let mut ws = server.ws().await;
    ping_pong(&mut ws, "r-42").await;

    send(&mut ws, json!({ "type": "ping" })).await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert!(
        pong.get("request_id").is_none(),
        "no request_id to echo: {pong}"
    );
    assert_ts(&pong);
    server.stop().await;
}

#[tokio::test]
async fn integers_beyond_f64_precision_pass_through_exactly() {
    let server = TestServer::start(&[]).await;
    server.create_topic("digits").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "digits", 0).await;
    let mut publisher = server.ws().await;
    let id = uuid::Uuid::new_v4().to_string();
    let frame = raw_publish_frame("digits", &id, &rich_payload(7), "d1");
    publisher.send(Message::Text(frame.into())).await.unwrap();
    expect_ack(&mut publisher, "digits", "d1").await;
    // serde_json would round these through f64, so look at the raw text.
    let raw = recv_text(&mut subscriber).await;
    for literal in ["123456789012345678901234567890", "-9007199254740993"] {
        assert!(
            raw.contains(literal),
            "{literal} not passed through verbatim: {raw}"
        );
    }
    server.stop().await;
}
