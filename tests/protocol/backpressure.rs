//! Backpressure: bounded subscriber queues, the `disconnect` and
//! `drop_oldest` slow-consumer policies, and slow readers never holding back
//! fast readers or publishers.
//!
//! A "stalled" subscriber is a tokio-tungstenite client that is simply not
//! polled: the server's writes first fill the kernel socket buffers, then the
//! subscriber's queue.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Payload padding: 250 events of this size (16 MB) are several times what
/// the loopback socket buffers of a stalled reader hold (about 4 MB here).
const LARGE: usize = 64 * 1024;
/// How long a publisher may wait for one ack; a publisher held back by a
/// stalled subscriber would never get it.
const ACK_DEADLINE: Duration = Duration::from_secs(5);

/// Publishes events `1..=count` one at a time, each acked within ACK_DEADLINE.
async fn publish_padded(publisher: &mut Ws, topic: &str, count: u64, size: usize) {
    for n in 1..=count {
        let request_id = format!("p{n}");
        let publish = publish_acked(publisher, topic, padded_payload(n, size), &request_id);
        tokio::time::timeout(ACK_DEADLINE, publish)
            .await
            .unwrap_or_else(|_| panic!("publisher blocked: no ack for event {n}"));
    }
}

/// Spawns a reader that must receive seq `1..=count`, complete and in order.
fn read_all(mut ws: Ws, count: u64, size: usize) -> JoinHandle<Ws> {
    tokio::spawn(async move {
        for expected in 1..=count {
            let event = recv(&mut ws).await;
            assert_eq!(
                padded_seq(&event, size),
                expected,
                "reader missed or reordered an event"
            );
        }
        ws
    })
}

/// A fresh server with the given slow-consumer policy and queue bound, a
/// topic, and its cast: a subscriber the test itself reads late or never, a
/// spawned reader that must get events `1..=events` of `size` complete and in
/// order, and a publisher.
async fn cast(
    policy: &str,
    queue_size: &str,
    topic: &str,
    events: u64,
    size: usize,
) -> (TestServer, Ws, JoinHandle<Ws>, Ws) {
    let server = TestServer::start(&[
        "--slow-consumer-policy",
        policy,
        "--subscriber-queue-size",
        queue_size,
        "--max-message-size",
        "4194304",
    ])
    .await;
    server.create_topic(topic).await;
    let mut lagging = server.ws().await;
    subscribe(&mut lagging, topic, 0).await;
    let mut fast = server.ws().await;
    subscribe(&mut fast, topic, 0).await;
    let fast = read_all(fast, events, size);
    let publisher = server.ws().await;
    (server, lagging, fast, publisher)
}

/// Reads a cut-off subscriber to its end: what was already in the socket
/// buffers (a gapless prefix, as the `disconnect` policy drops nothing), then
/// best effort an error SLOW_CONSUMER and a close 1008, then the end of the
/// stream. Returns the last seq received.
async fn read_until_closed(ws: &mut Ws) -> u64 {
    let mut last_seq = 0;
    loop {
        let next = tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("connection was not closed");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "error" {
                    assert_eq!(frame["error"]["code"], "SLOW_CONSUMER", "{frame}");
                } else {
                    assert_eq!(
                        padded_seq(&frame, LARGE),
                        last_seq + 1,
                        "the prefix has a gap"
                    );
                    last_seq += 1;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("close frame carries a code");
                assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
                return last_seq;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return last_seq,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_is_disconnected_while_others_get_everything() {
    const EVENTS: u64 = 250;
    let (server, mut stalled, fast, mut publisher) =
        cast("disconnect", "16", "bp", EVENTS, LARGE).await;

    // While publishing, wait for the stalled subscriber to be dropped from the
    // topic, then resume reading it.
    let cut_off = async {
        server.wait_for_subscribers("bp", 1).await;
        read_until_closed(&mut stalled).await
    };
    let ((), last_seq) = tokio::join!(publish_padded(&mut publisher, "bp", EVENTS, LARGE), cut_off);
    let mut fast = fast
        .await
        .expect("fast subscriber got every event in order");
    assert_eq!(server.stats().await["slow_consumer_disconnects"], 1);
    assert!(last_seq < EVENTS, "the stalled subscriber was not cut off");

    // Others are unaffected: the fast subscriber and the publisher go on.
    publish_acked(&mut publisher, "bp", padded_payload(EVENTS + 1, 8), "after").await;
    assert_eq!(padded_seq(&recv(&mut fast).await, 8), EVENTS + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_a_stalled_subscriber_connected_with_the_newest_events() {
    const EVENTS: u64 = 250;
    let (server, mut stalled, fast, mut publisher) =
        cast("drop_oldest", "16", "lossy", EVENTS, LARGE).await;
    publish_padded(&mut publisher, "lossy", EVENTS, LARGE).await;
    let _fast = fast
        .await
        .expect("fast subscriber got every event in order");

    let totals = server.stats().await;
    assert_eq!(totals["slow_consumer_disconnects"], 0, "{totals}");
    assert!(
        totals["dropped"].as_u64().unwrap() > 0,
        "the stalled subscriber never overflowed: {totals}"
    );
    server.wait_for_subscribers("lossy", 2).await;

    // Resume: increasing seqs, gaps allowed, ending with the last event.
    let mut received = Vec::new();
    while received.last() != Some(&EVENTS) {
        let seq = padded_seq(&recv(&mut stalled).await, LARGE);
        assert!(
            received.last().is_none_or(|&last| seq > last),
            "seq {seq} after {received:?}"
        );
        received.push(seq);
    }
    assert!(
        received.len() < EVENTS as usize,
        "nothing was dropped, yet /stats counts drops"
    );
    // Still usable: a request gets its reply.
    ping_pong(&mut stalled, "still-usable").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_holds_back_neither_fast_reader_nor_publisher() {
    const EVENTS: u64 = 250;
    const SIZE: usize = 32 * 1024;
    const READ_BEFORE_PAUSE: u64 = 5;
    // The default queue bound: the slow reader lags but never overflows.
    let (server, mut slow, fast, mut publisher) =
        cast("disconnect", "1024", "pace", EVENTS, SIZE).await;

    let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
    let slow = tokio::spawn(async move {
        let mut seqs = Vec::new();
        for _ in 0..READ_BEFORE_PAUSE {
            seqs.push(padded_seq(&recv(&mut slow).await, SIZE));
        }
        resumed.await.unwrap();
        while seqs.len() < EVENTS as usize {
            seqs.push(padded_seq(&recv(&mut slow).await, SIZE));
        }
        (slow, seqs)
    });

    publish_padded(&mut publisher, "pace", EVENTS, SIZE).await;
    let _fast = fast
        .await
        .expect("fast subscriber got every event in order");
    // Every ack and every fast delivery happened while the slow reader had
    // read only its first few events.
    resume.send(()).unwrap();
    let (_slow, seqs) = slow.await.unwrap();
    assert_eq!(
        seqs,
        (1..=EVENTS).collect::<Vec<_>>(),
        "the slow reader lost or reordered events"
    );
    server.wait_for_subscribers("pace", 2).await;
    server.stop().await;
}
