//! The send path (issue 10; CONTRACT.md "Backpressure, precisely"): a
//! subscriber is cut only when it does not keep up, i.e. its socket stops
//! taking bytes while its queue is at its bound (in events or in bytes), or
//! `WRITE_TIMEOUT` passes with frames waiting and no byte accepted. A
//! subscriber that reads as fast as it can is never cut and, under
//! `drop_oldest`, loses nothing, whatever bursts publishers send; `last_n`
//! replay never counts against the bound.
//!
//! Every test runs twice, on a two-worker multi-thread runtime and on a
//! current-thread runtime (where the in-process server and the test share
//! one thread). Subscribers that must keep up, and the pipelining publisher,
//! run on threads of their own with their own runtimes, like clients in other
//! processes: the server's scheduling can neither help nor starve them.
//!
//! A "stalled" reader is a raw client with a 4 KiB receive buffer that
//! subscribes and then never reads.
//!
//! A test binary of its own, not a module of an area's binary like most
//! tests: these take turns (`ONE_AT_A_TIME`) so that only one of them runs
//! in the process at a time, as each measures whether readers keep up. In
//! a shared binary, tests of other modules would run beside them.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// How long a publisher may wait for one ack.
const ACK_DEADLINE: Duration = Duration::from_secs(5);
/// How long a reader that keeps up may take to get everything; only a
/// failing test waits this long.
const READ_ALL_DEADLINE: Duration = Duration::from_secs(30);
/// SO_RCVBUF of a stalled reader.
const STALLED_RECV_BUFFER: u32 = 4096;

/// The tests take turns: each one measures whether readers keep up, which
/// several of them running at once on a small machine would blur.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Declares, for each `name => body`, a module `name` with two tests running
/// `body`: `multi_thread` and `current_thread`.
macro_rules! on_both_runtimes {
    ($($(#[$doc:meta])* $name:ident => $body:expr;)+) => {$(
        $(#[$doc])*
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                let _turn = super::ONE_AT_A_TIME.lock().await;
                $body.await;
            }

            #[tokio::test]
            async fn current_thread() {
                let _turn = super::ONE_AT_A_TIME.lock().await;
                $body.await;
            }
        }
    )+};
}

on_both_runtimes! {
    /// (a) Queue 64: a reader on its own thread gets 20,000 1 KiB events from
    /// a pipelining publisher at ~4,000/s while a stalled reader on the same
    /// topic is cut; the publisher gets every ack.
    flat_out_reader_gets_everything_while_a_stalled_reader_is_cut =>
        super::flat_out_reader("disconnect", true);
    /// (f) The same reader under `drop_oldest` loses nothing: without a
    /// stalled reader, any drop counted in `/stats` would be its own.
    flat_out_reader_loses_nothing_under_drop_oldest =>
        super::flat_out_reader("drop_oldest", false);
    /// (b) Bursts of 2×queue pipelined publishes, each in one write, cut
    /// nobody who reads.
    burst_of_twice_the_queue_in_one_write_cuts_no_reader =>
        super::burst_of_twice_the_queue("disconnect");
    /// (b) ... and drop nothing under `drop_oldest`.
    burst_of_twice_the_queue_in_one_write_drops_nothing_under_drop_oldest =>
        super::burst_of_twice_the_queue("drop_oldest");
    /// (c) `last_n` = RING_BUFFER_SIZE (2000) > queue (1024), then live
    /// publishes: the replay does not count against the bound.
    replay_of_a_ring_larger_than_the_queue_cuts_nobody =>
        super::replay_larger_than_the_queue("disconnect");
    /// (c) ... and drops nothing under `drop_oldest`.
    replay_of_a_ring_larger_than_the_queue_drops_nothing_under_drop_oldest =>
        super::replay_larger_than_the_queue("drop_oldest");
    /// (c) The same, the replay queued while the subscriber's writer is
    /// still busy with earlier events, so live publishes find it waiting.
    replay_waiting_behind_a_busy_writer_cuts_nobody =>
        super::replay_behind_a_busy_writer("disconnect");
    /// (c) ... and drops nothing under `drop_oldest`.
    replay_waiting_behind_a_busy_writer_drops_nothing_under_drop_oldest =>
        super::replay_behind_a_busy_writer("drop_oldest");
    /// (d) A stalled reader with fewer events waiting than the bound is cut
    /// within WRITE_TIMEOUT + 1 s.
    stalled_reader_is_cut_after_write_timeout =>
        super::write_timeout("disconnect");
    /// (d) ... under `drop_oldest` too.
    stalled_reader_is_cut_after_write_timeout_under_drop_oldest =>
        super::write_timeout("drop_oldest");
    /// (e) SUBSCRIBER_QUEUE_BYTES cuts a stalled reader long before the
    /// event bound would, while a fast reader gets everything.
    byte_bound_cuts_a_stalled_reader =>
        super::byte_bound("disconnect");
    /// (e) ... and under `drop_oldest` drops its oldest events instead.
    byte_bound_drops_oldest_for_a_stalled_reader =>
        super::byte_bound("drop_oldest");
    /// The acks to publishes read together are written together.
    acks_to_a_burst_of_publishes_go_out_together =>
        super::acks_of_a_burst();
}

// ---------------------------------------------------------------------------
// Test bodies
// ---------------------------------------------------------------------------

/// (a), (f): queue 64, 20,000 events of 1 KiB, published pipelined at
/// ~4,000/s (40 frames per write every 10 ms).
async fn flat_out_reader(policy: &str, with_stalled_reader: bool) {
    const TOPIC: &str = "flat-out";
    const EVENTS: u64 = 20_000;
    const SIZE: usize = 1024;
    const PER_WRITE: u64 = 40;
    let server = TestServer::start(&[
        "--subscriber-queue-size",
        "64",
        "--slow-consumer-policy",
        policy,
    ])
    .await;
    server.create_topic(TOPIC).await;
    let mut stalled = if with_stalled_reader {
        Some(stalled_reader(&server, TOPIC).await)
    } else {
        None
    };
    let reader = FlatOutReader::start("flat-out reader", server.addr, TOPIC, 0, EVENTS, SIZE).await;

    let publisher = paced_publisher(server.addr, TOPIC, EVENTS, SIZE, PER_WRITE);
    let reader = reader.wait_for_all(READ_ALL_DEADLINE).await;
    join_thread(
        publisher,
        "the publisher (every ack, in order)",
        ACK_DEADLINE,
    )
    .await;

    assert_eq!(server.counter("published").await, EVENTS);
    match stalled.as_mut() {
        Some(stalled) => {
            assert_eq!(
                server.counter("slow_consumer_disconnects").await,
                1,
                "the stalled reader, and only it, is cut"
            );
            assert_eq!(server.subscribers_of(TOPIC).await, Some(1));
            let got = assert_cut_off(stalled, SIZE).await;
            assert!(got < EVENTS, "the stalled reader got every event");
        }
        None => {
            assert_eq!(server.counter("slow_consumer_disconnects").await, 0);
            assert_eq!(
                server.counter("dropped").await,
                0,
                "events dropped for a reader that keeps up"
            );
            assert_eq!(server.subscribers_of(TOPIC).await, Some(1));
        }
    }
    reader.close().await;
    server.stop().await;
}

/// (b): queue 64; five times, 128 publishes concatenated into one write;
/// two readers on their own threads.
async fn burst_of_twice_the_queue(policy: &str) {
    const TOPIC: &str = "bursts";
    const QUEUE: u64 = 64;
    const BURST: u64 = 2 * QUEUE;
    const BURSTS: u64 = 5;
    const SIZE: usize = 100;
    let server = TestServer::start(&[
        "--subscriber-queue-size",
        &QUEUE.to_string(),
        "--slow-consumer-policy",
        policy,
    ])
    .await;
    server.create_topic(TOPIC).await;
    let mut readers = Vec::new();
    for name in ["reader 1", "reader 2"] {
        readers.push(FlatOutReader::start(name, server.addr, TOPIC, 0, BURST * BURSTS, SIZE).await);
    }

    let mut publisher = RawClient::connect(&server).await;
    for burst in 0..BURSTS {
        publish_burst(&mut publisher, TOPIC, burst * BURST + 1, BURST, SIZE).await;
    }
    let mut done = Vec::new();
    for reader in readers {
        done.push(reader.wait_for_all(READ_ALL_DEADLINE).await);
    }

    assert_eq!(server.counter("slow_consumer_disconnects").await, 0);
    assert_eq!(server.counter("dropped").await, 0);
    assert_eq!(server.subscribers_of(TOPIC).await, Some(2));
    for reader in done {
        reader.close().await;
    }
    server.stop().await;
}

/// (c): ring 2000, queue 1024: 2000 events, a subscriber with
/// `last_n` = 2000, then 100 more in one write.
async fn replay_larger_than_the_queue(policy: &str) {
    const TOPIC: &str = "replay";
    const RING: u64 = 2000;
    const LIVE: u64 = 100;
    const SIZE: usize = 64;
    let server = TestServer::start(&[
        "--ring-buffer-size",
        &RING.to_string(),
        "--subscriber-queue-size",
        "1024",
        "--slow-consumer-policy",
        policy,
    ])
    .await;
    server.create_topic(TOPIC).await;
    let mut publisher = RawClient::connect(&server).await;
    for first in (1..=RING).step_by(100) {
        publish_burst(&mut publisher, TOPIC, first, 100, SIZE).await;
    }

    let reader = FlatOutReader::start(
        "replaying reader",
        server.addr,
        TOPIC,
        RING,
        RING + LIVE,
        SIZE,
    )
    .await;
    publish_burst(&mut publisher, TOPIC, RING + 1, LIVE, SIZE).await;
    let reader = reader.wait_for_all(READ_ALL_DEADLINE).await;

    assert_eq!(server.counter("slow_consumer_disconnects").await, 0);
    assert_eq!(server.counter("dropped").await, 0);
    assert_eq!(server.subscribers_of(TOPIC).await, Some(1));
    reader.close().await;
    server.stop().await;
}

/// (c) with the replay waiting: a subscriber (4 KiB receive buffer) of a
/// second topic pauses reading while 6 MiB of its events fill its socket
/// buffers, so its writer is busy; then it subscribes with
/// `last_n` = 2000, 100 events are published live, and it resumes reading.
/// The replay and the live events it holds are far below the byte bound.
async fn replay_behind_a_busy_writer(policy: &str) {
    const TOPIC: &str = "replay";
    const FILLER_TOPIC: &str = "filler";
    const RING: u64 = 2000;
    const LIVE: u64 = 100;
    const SIZE: usize = 64;
    const FILLER: u64 = 8;
    const FILLER_SIZE: usize = 768 * 1024;
    let server = TestServer::start(&[
        "--ring-buffer-size",
        &RING.to_string(),
        "--subscriber-queue-size",
        "1024",
        "--slow-consumer-policy",
        policy,
    ])
    .await;
    server.create_topic(TOPIC).await;
    server.create_topic(FILLER_TOPIC).await;
    let mut publisher = RawClient::connect(&server).await;
    for first in (1..=RING).step_by(100) {
        publish_burst(&mut publisher, TOPIC, first, 100, SIZE).await;
    }

    let (subscribed_tx, subscribed) = oneshot::channel();
    let (replay_tx, replay) = oneshot::channel::<()>();
    let (resume_tx, resume) = oneshot::channel::<()>();
    let addr = server.addr;
    let reader = on_own_thread("paused reader", move || async move {
        let who = "paused reader";
        let socket = TcpSocket::new_v4().expect("tcp socket");
        socket
            .set_recv_buffer_size(STALLED_RECV_BUFFER)
            .expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        let (mut ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("ws upgrade");
        subscribe(&mut ws, FILLER_TOPIC, 0).await;
        let _ = subscribed_tx.send(());
        tokio::time::timeout(READ_ALL_DEADLINE, replay)
            .await
            .expect("told to subscribe")
            .expect("told to subscribe");
        let request = json!({
            "type": "subscribe", "topic": TOPIC, "last_n": RING, "request_id": "sub-replay",
        });
        send(&mut ws, request).await;
        tokio::time::timeout(READ_ALL_DEADLINE, resume)
            .await
            .expect("told to resume")
            .expect("told to resume");
        let received = AtomicU64::new(0);
        read_flat_out(&mut ws, who, FILLER, FILLER_SIZE, &received).await;
        expect_ack(&mut ws, TOPIC, "sub-replay").await;
        read_flat_out(&mut ws, who, RING + LIVE, SIZE, &received).await;
        ping_pong(&mut ws, "after-every-event").await;
        let _ = ws.close(None).await;
    });
    if tokio::time::timeout(RECV_TIMEOUT, subscribed)
        .await
        .is_err()
    {
        panic!("the paused reader did not subscribe within {RECV_TIMEOUT:?}");
    }

    // Its writer gets busy: more than its socket buffers take.
    let mut filler_publisher = server.ws().await;
    publish_padded(&mut filler_publisher, FILLER_TOPIC, 1..=FILLER, FILLER_SIZE).await;
    replay_tx.send(()).expect("paused reader alive");
    server.wait_for_subscribers(TOPIC, 1).await;
    // Ack, replay and these wait behind the writer's batch.
    publish_burst(&mut publisher, TOPIC, RING + 1, LIVE, SIZE).await;
    resume_tx.send(()).expect("paused reader alive");
    join_thread(reader, "the paused reader", READ_ALL_DEADLINE).await;

    assert_eq!(server.counter("slow_consumer_disconnects").await, 0);
    assert_eq!(server.counter("dropped").await, 0);
    server.stop().await;
}

/// (d): WRITE_TIMEOUT 2s, queue 1024; 20 events of 256 KiB (5 MiB: more than
/// the socket buffers take, far less than either bound) for a stalled reader.
async fn write_timeout(policy: &str) {
    const TOPIC: &str = "stuck";
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    const EVENTS: u64 = 20;
    const SIZE: usize = 256 * 1024;
    let server = TestServer::start(&[
        "--write-timeout",
        "2s",
        "--subscriber-queue-size",
        "1024",
        "--slow-consumer-policy",
        policy,
    ])
    .await;
    server.create_topic(TOPIC).await;
    let mut stalled = stalled_reader(&server, TOPIC).await;
    let mut publisher = server.ws().await;

    let first_publish = Instant::now();
    publish_padded(&mut publisher, TOPIC, 1..=EVENTS, SIZE).await;
    let last_publish = Instant::now();

    // The socket filled at the latest with the last publish.
    let deadline = last_publish + WRITE_TIMEOUT + Duration::from_secs(1);
    let cut_seen = loop {
        if server.subscribers_of(TOPIC).await == Some(0) {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the stalled reader, with frames waiting, is still subscribed {:?} after \
             the last publish (WRITE_TIMEOUT {WRITE_TIMEOUT:?})",
            last_publish.elapsed()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    // Its socket took bytes at the first publish: no cut before WRITE_TIMEOUT.
    assert!(
        cut_seen + Duration::from_millis(100) >= first_publish + WRITE_TIMEOUT,
        "cut {:?} after the first publish, before WRITE_TIMEOUT ({WRITE_TIMEOUT:?})",
        cut_seen - first_publish
    );
    assert_eq!(server.counter("slow_consumer_disconnects").await, 1);
    let got = assert_cut_off(&mut stalled, SIZE).await;
    assert!(got < EVENTS, "the stalled reader got every event");

    // The publisher goes on.
    publish_acked(
        &mut publisher,
        TOPIC,
        padded_payload(EVENTS + 1, 8),
        "after",
    )
    .await;
    server.stop().await;
}

/// (e): event bound 100,000, byte bound 1 MiB (16 events of 64 KiB);
/// 200 events of 64 KiB (12.5 MiB); WRITE_TIMEOUT out of the way.
async fn byte_bound(policy: &str) {
    const TOPIC: &str = "bytes";
    const EVENTS: u64 = 200;
    const SIZE: usize = 64 * 1024;
    let server = TestServer::start(&[
        "--subscriber-queue-size",
        "100000",
        "--subscriber-queue-bytes",
        "1MiB",
        "--write-timeout",
        "60s",
        "--slow-consumer-policy",
        policy,
    ])
    .await;
    server.create_topic(TOPIC).await;
    let mut stalled = stalled_reader(&server, TOPIC).await;
    let fast = FlatOutReader::start("fast reader", server.addr, TOPIC, 0, EVENTS, SIZE).await;
    let mut publisher = server.ws().await;
    // The fast reader is kept within a few events of the publisher, however
    // its thread is scheduled: only the stalled reader can reach the bound.
    const LEAD: u64 = 4;
    for n in 1..=EVENTS {
        fast.await_received(n.saturating_sub(LEAD)).await;
        publish_padded(&mut publisher, TOPIC, n..=n, SIZE).await;
    }
    let fast = fast.wait_for_all(READ_ALL_DEADLINE).await;

    if policy == "disconnect" {
        assert_eq!(
            server.counter("slow_consumer_disconnects").await,
            1,
            "the stalled reader is cut by the byte bound, {EVENTS} events of {SIZE} B \
             being far below the event bound"
        );
        assert_eq!(server.subscribers_of(TOPIC).await, Some(1));
        let got = assert_cut_off(&mut stalled, SIZE).await;
        assert!(got < EVENTS, "the stalled reader got every event");
    } else {
        assert_eq!(server.counter("slow_consumer_disconnects").await, 0);
        assert!(
            server.counter("dropped").await > 0,
            "the stalled reader's queue never reached the byte bound"
        );
        assert_eq!(server.subscribers_of(TOPIC).await, Some(2));
        // Reading again: increasing seqs with gaps, ending with the newest;
        // then a request still gets its reply.
        let mut seqs = Vec::new();
        while seqs.last() != Some(&EVENTS) {
            let seq = padded_seq(&stalled.read_json().await, SIZE);
            assert!(
                seqs.last().is_none_or(|&last| seq > last),
                "seq {seq} after {:?}",
                &seqs[seqs.len().saturating_sub(3)..]
            );
            seqs.push(seq);
        }
        assert!(seqs.len() < EVENTS as usize, "nothing was dropped");
        let ping = json!({ "type": "ping", "request_id": "still-there" });
        stalled
            .send_frame(OP_TEXT, true, ping.to_string().as_bytes())
            .await;
        assert_pong(&stalled.read_json().await, "still-there");
    }
    fast.close().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// A raw client with a tiny receive buffer, subscribed to `topic`, that
/// reads nothing more until the test drains it.
async fn stalled_reader(server: &TestServer, topic: &str) -> RawClient {
    let mut stalled = RawClient::connect_with_recv_buffer(server, STALLED_RECV_BUFFER).await;
    let request = json!({ "type": "subscribe", "topic": topic, "request_id": "stalled" });
    stalled
        .send_frame(OP_TEXT, true, request.to_string().as_bytes())
        .await;
    assert_ack(&stalled.read_json().await, topic, "stalled");
    stalled
}

/// Reads a stalled reader that must have been cut: the server ended the
/// connection; before that came a gap-free prefix of the events, then at
/// most an `error` `SLOW_CONSUMER` and a close 1008. Returns how many events
/// it got.
async fn assert_cut_off(stalled: &mut RawClient, size: usize) -> u64 {
    let drained = stalled.drain(RECV_TIMEOUT).await;
    assert_ne!(
        drained.ending,
        Ending::StillOpen,
        "the stalled reader's connection is still open"
    );
    if let Some(code) = drained.close_code() {
        assert_eq!(code, 1008, "close code of a slow consumer");
    }
    let mut events = 0;
    for frame in drained.json() {
        if frame["type"] == "event" {
            events += 1;
            assert_eq!(padded_seq(&frame, size), events, "the prefix has a gap");
        } else {
            assert_eq!(frame["type"], "error", "{frame}");
            assert_eq!(frame["error"]["code"], "SLOW_CONSUMER", "{frame}");
        }
    }
    events
}

/// Publishes `padded_payload(n, size)` for each `n`, one at a time, each
/// acked within ACK_DEADLINE.
async fn publish_padded(
    publisher: &mut Ws,
    topic: &str,
    ns: std::ops::RangeInclusive<u64>,
    size: usize,
) {
    for n in ns {
        let request_id = format!("p{n}");
        let publish = publish_acked(publisher, topic, padded_payload(n, size), &request_id);
        tokio::time::timeout(ACK_DEADLINE, publish)
            .await
            .unwrap_or_else(|_| panic!("publisher held back: no ack for event {n}"));
    }
}

/// 100 publishes in one write: their acks leave in at most 4 writes (the
/// reader holds its replies until it has handled what it read or gathered
/// a write's worth, `MAX_FRAMES_PER_WRITE`), where a write per ack would
/// take up to 100.
async fn acks_of_a_burst() {
    const TOPIC: &str = "acked";
    const BURST: u64 = 100;
    let server = TestServer::start(&[]).await;
    server.create_topic(TOPIC).await;
    let mut publisher = RawClient::connect(&server).await;
    publish_burst(&mut publisher, TOPIC, 1, BURST, 16).await;
    // A write is counted just after the kernel took it.
    let series = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    wait_until("every ack counted as written", || async {
        let written = series(
            &server.get_text("/metrics").await,
            "ringcast_frames_written_total",
        );
        (written == BURST)
            .then_some(())
            .ok_or(format!("{written} frames written"))
    })
    .await;
    let metrics = server.get_text("/metrics").await;
    let writes = series(&metrics, "ringcast_frames_per_write_count");
    assert!(writes <= 4, "{BURST} acks took {writes} writes");
    server.stop().await;
}

/// Publishes events `first..first + count` as `count` publish frames
/// concatenated into one write, then checks their acks come back in order.
async fn publish_burst(
    publisher: &mut RawClient,
    topic: &str,
    first: u64,
    count: u64,
    size: usize,
) {
    let burst: Vec<u8> = (first..first + count)
        .flat_map(|n| {
            let frame = publish_frame(topic, padded_payload(n, size), &format!("p{n}"));
            masked_frame(OP_TEXT, true, frame.to_string().as_bytes())
        })
        .collect();
    tokio::time::timeout(ACK_DEADLINE, publisher.send_partial(&burst))
        .await
        .unwrap_or_else(|_| panic!("publisher held back: burst from {first} not written"));
    for n in first..first + count {
        assert_ack(&publisher.read_json().await, topic, &format!("p{n}"));
    }
}

/// On a thread of its own: publishes events `1..=count` of `size` from one
/// connection, pipelined, `per_write` publish frames every 10 ms written
/// together without waiting for acks, while a second task checks that every
/// ack comes back, in order.
fn paced_publisher(
    addr: SocketAddr,
    topic: &str,
    count: u64,
    size: usize,
    per_write: u64,
) -> std::thread::JoinHandle<()> {
    let topic = topic.to_owned();
    on_own_thread("pipelining publisher", move || async move {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("ws connect");
        let (mut sink, mut stream) = ws.split();
        let acks = {
            let topic = topic.clone();
            tokio::spawn(async move {
                for n in 1..=count {
                    assert_ack(&recv(&mut stream).await, &topic, &format!("p{n}"));
                }
                stream
            })
        };
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next = 1;
        while next <= count {
            pace.tick().await;
            let last = (next + per_write - 1).min(count);
            // Buffered by `feed`, written together by `flush`.
            for n in next..=last {
                let frame = publish_frame(&topic, padded_payload(n, size), &format!("p{n}"));
                sink.feed(Message::Text(frame.to_string().into()))
                    .await
                    .expect("publish");
            }
            sink.flush().await.expect("publish");
            next = last + 1;
        }
        let stream = tokio::time::timeout(READ_ALL_DEADLINE, acks)
            .await
            .expect("acks of every publish")
            .expect("every publish acked, in order");
        let mut ws = sink.reunite(stream).expect("halves of one stream");
        let _ = ws.close(None).await;
    })
}

/// A subscriber reading as fast as it can on a thread of its own; it must
/// get events `1..=count` of `padded_payload(n, size)`, complete and in
/// order, then nothing but the pong of a ping, and stays connected until
/// `close`.
struct FlatOutReader {
    name: String,
    count: u64,
    received: Arc<AtomicU64>,
    all_received: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A `FlatOutReader` that got everything, still connected.
struct DoneReader {
    name: String,
    release: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl FlatOutReader {
    /// Starts the reader and returns once it is subscribed (with `last_n`).
    async fn start(
        name: &str,
        addr: SocketAddr,
        topic: &str,
        last_n: u64,
        count: u64,
        size: usize,
    ) -> Self {
        let (subscribed_tx, subscribed) = oneshot::channel();
        let (all_received_tx, all_received) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let received = Arc::new(AtomicU64::new(0));
        let thread = {
            let (who, topic, received) = (name.to_owned(), topic.to_owned(), received.clone());
            on_own_thread(name, move || async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                    .await
                    .expect("ws connect");
                subscribe(&mut ws, &topic, last_n).await;
                let _ = subscribed_tx.send(());
                read_flat_out(&mut ws, &who, count, size, &received).await;
                ping_pong(&mut ws, "after-every-event").await;
                let _ = all_received_tx.send(());
                let _ = tokio::time::timeout(READ_ALL_DEADLINE, released).await;
                let _ = ws.close(None).await;
            })
        };
        match tokio::time::timeout(RECV_TIMEOUT, subscribed).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                join_thread(thread, name, RECV_TIMEOUT).await;
                panic!("{name} ended without subscribing");
            }
            Err(_) => panic!("{name} did not subscribe within {RECV_TIMEOUT:?}"),
        }
        Self {
            name: name.to_owned(),
            count,
            received,
            all_received,
            release,
            thread,
        }
    }

    /// Waits until the reader got `count` events, failing after
    /// `RECV_TIMEOUT` with how far it got.
    async fn await_received(&self, count: u64) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while self.received.load(Ordering::Relaxed) < count {
            assert!(
                Instant::now() < deadline,
                "{} received {} of {count} events within {RECV_TIMEOUT:?}",
                self.name,
                self.received.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until the reader got every event, failing after `within` with
    /// how far it got, or with the reader's own failure.
    async fn wait_for_all(self, within: Duration) -> DoneReader {
        match tokio::time::timeout(within, self.all_received).await {
            Ok(Ok(())) => DoneReader {
                name: self.name,
                release: self.release,
                thread: self.thread,
            },
            Ok(Err(_)) => {
                join_thread(self.thread, &self.name, RECV_TIMEOUT).await;
                panic!("{} ended before receiving every event", self.name);
            }
            Err(_) => panic!(
                "{} received {} of {} events within {within:?}",
                self.name,
                self.received.load(Ordering::Relaxed),
                self.count
            ),
        }
    }
}

impl DoneReader {
    /// Lets the reader close its connection and waits for its thread.
    async fn close(self) {
        let _ = self.release.send(());
        join_thread(self.thread, &self.name, RECV_TIMEOUT).await;
    }
}

/// Reads events `1..=count` as fast as they come, failing on anything else:
/// a cut (`SLOW_CONSUMER`, close 1008), a gap, a duplicate, a reorder.
async fn read_flat_out(ws: &mut Ws, who: &str, count: u64, size: usize, received: &AtomicU64) {
    for expected in 1..=count {
        let got = expected - 1;
        let frame = loop {
            let next = tokio::time::timeout(RECV_TIMEOUT, ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("{who}: nothing for {RECV_TIMEOUT:?} after {got} of {count} events")
                });
            match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("server sent JSON");
                    if !(frame["type"] == "info" && frame["msg"] == "ping") {
                        break frame;
                    }
                }
                Some(Ok(Message::Close(close))) => {
                    panic!("{who} reads flat out, yet was closed after {got} of {count} events: {close:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    panic!("{who}: connection failed after {got} of {count} events: {err}")
                }
                None => panic!("{who}: connection ended after {got} of {count} events"),
            }
        };
        if frame["type"] != "event" {
            panic!("{who} reads flat out, yet got {frame} after {got} of {count} events");
        }
        let seq = padded_seq(&frame, size);
        assert_eq!(
            seq, expected,
            "{who}: event {seq} where {expected} was due (lost, duplicated or reordered)"
        );
        received.store(expected, Ordering::Relaxed);
    }
}

/// Runs `client` on a thread of its own with its own current-thread
/// runtime, as a client in another process.
fn on_own_thread<F, Fut, T>(name: &str, client: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime")
                .block_on(client())
        })
        .expect("spawn a client thread")
}

/// Waits for a client thread to end without blocking the runtime (which
/// may be the server's), and passes its panic on.
async fn join_thread<T>(thread: std::thread::JoinHandle<T>, what: &str, within: Duration) -> T {
    let deadline = Instant::now() + within;
    while !thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what} did not finish within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
