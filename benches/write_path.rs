//! The broker's write path, stage by stage: parsing a client's publish,
//! encoding the event once and the publisher's ack, checking the message
//! id against the dedup window, keeping the event in the replay ring,
//! fanning it out to many outboxes, and a connection's writer draining its
//! batch with vectored writes; and `permessage-deflate`: deflating an event
//! once for its compressed subscribers, inflating a client's compressed
//! publish.
//!
//! ```sh
//! cargo bench --bench write_path -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use flate2::write::DeflateEncoder;
use ringcast::broker::Broker;
use ringcast::config::SlowConsumerPolicy;
use ringcast::metrics::Metrics;
use ringcast::send::{FrameWriter, Outbox, Pending, QueueLimits, Queued};
use ringcast::wire::deflate;
use ringcast::wire::frame::payload_of;
use ringcast::wire::reply;
use ringcast::wire::request::{parse_client_frame, ClientFrame, Message, Replay, Request};
use ringcast::wire::timestamp::Timestamp;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

const TOPIC: &str = "orders";
const MESSAGE_ID: &str = "550e8400-e29b-41d4-a716-446655440000";
const SMALL_PAYLOAD: usize = 128;
const LARGE_PAYLOAD: usize = 4096;
const PAYLOADS: [(&str, usize); 2] = [("128B", SMALL_PAYLOAD), ("4KiB", LARGE_PAYLOAD)];
/// Payload sizes the compression benchmarks cover.
const COMPRESSION_PAYLOADS: [(&str, usize); 3] = [
    ("128B", SMALL_PAYLOAD),
    ("1KiB", 1024),
    ("4KiB", LARGE_PAYLOAD),
];

/// The server's defaults (`RING_BUFFER_SIZE`, `SUBSCRIBER_QUEUE_SIZE`).
const RING_CAPACITY: usize = 100;
const OUTBOX_CAPACITY: usize = 1024;
const SUBSCRIBERS: u64 = 1000;
/// Publishes between two drains of every outbox; well under
/// `OUTBOX_CAPACITY`, so no subscriber is ever disconnected.
const PUBLISHES_PER_DRAIN: u64 = 256;

/// The writer's per-`writev` slice limit: one batch is one syscall.
const FRAMES_PER_BATCH: u64 = 64;
/// Gives event frames of 199-200 bytes, header included.
const WRITER_FRAME_PAYLOAD: usize = 55;
/// Batches queued per refill: 1024 frames, a full default-sized outbox.
const BATCHES_PER_REFILL: u64 = 16;

fn bench_parse_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_publish");
    for (label, payload_len) in PAYLOADS {
        let frame = publish_frame(&order_payload(payload_len));
        assert!(
            matches!(
                parse_client_frame(&mut frame.clone()),
                Ok(ClientFrame {
                    request: Request::Publish { .. },
                    ..
                })
            ),
            "the benchmark frame must parse as a publish"
        );
        group.throughput(Throughput::Bytes(frame.len() as u64));
        let mut scratch = frame.clone();
        group.bench_function(label, |b| {
            b.iter(|| {
                // The parse decodes escaped strings in place, so every
                // iteration restores the frame into the same buffer. The
                // memcpy is timed too, but keeps the input cache-hot like a
                // connection's read buffer.
                scratch.copy_from_slice(&frame);
                parse_client_frame(&mut scratch).is_ok()
            })
        });
    }
    group.finish();
}

fn bench_encode_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_event");
    for (label, payload_len) in PAYLOADS {
        let payload = order_payload(payload_len);
        let message = order_message(&payload);
        let mut seq = 0;
        // Reading the clock is included: a publish does it every time.
        group.bench_function(label, |b| {
            b.iter(|| {
                seq += 1;
                reply::event(TOPIC, &message, seq, Timestamp::now())
            })
        });
    }
    group.finish();
}

/// The publisher's ack, which every publish also encodes; its `ts` is the
/// event's, read once by the broker, so no clock reading is timed here.
fn bench_encode_ack(c: &mut Criterion) {
    let at = Timestamp::now();
    let mut seq = 0;
    c.bench_function("encode_ack", |b| {
        b.iter(|| {
            seq += 1;
            reply::publish_ack(Some("r-42"), TOPIC, seq, false, at)
        })
    });
}

/// An event deflated into its shared compressed frame, as the first
/// compressed subscriber's fan-out does (once per event).
fn bench_deflate_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_event");
    for (label, payload_len) in COMPRESSION_PAYLOADS {
        let frame = reply::event(
            TOPIC,
            &order_message(&order_payload(payload_len)),
            1,
            Timestamp::now(),
        );
        let json = payload_of(&frame);
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(label, |b| {
            b.iter(|| deflate::deflate_text_frame(black_box(json)).expect("JSON shrinks"))
        });
    }
    group.finish();
}

/// A client's compressed publish inflated within the default
/// `MAX_MESSAGE_SIZE`, as the frame reader does.
fn bench_inflate_publish(c: &mut Criterion) {
    const MAX_MESSAGE_SIZE: usize = 1 << 20;
    let mut group = c.benchmark_group("inflate_publish");
    for (label, payload_len) in COMPRESSION_PAYLOADS {
        let publish = publish_frame(&order_payload(payload_len));
        let compressed = client_compressed(&publish);
        group.throughput(Throughput::Bytes(publish.len() as u64));
        group.bench_function(label, |b| {
            b.iter(|| deflate::inflate(black_box(&compressed), MAX_MESSAGE_SIZE).expect("inflates"))
        });
    }
    group.finish();
}

/// `message` compressed as a browser sends it: raw deflate at the default
/// level, sync-flushed, its `00 00 ff ff` tail left off (RFC 7692 §7.2.1).
fn client_compressed(message: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(message).expect("in memory");
    encoder.flush().expect("in memory");
    let mut compressed = encoder.get_ref().clone();
    compressed.truncate(compressed.len() - 4);
    compressed
}

/// A publish to a topic nobody subscribes to, its ring full: numbering,
/// encoding and keeping the event (evicting the oldest), without a fan-out;
/// then a client's whole publish: its frame parsed, published, and the
/// event queued for one subscriber (whose outbox is emptied as a writer
/// would, outside the timing).
fn bench_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for (label, payload_len) in PAYLOADS {
        let broker = Broker::new(RING_CAPACITY, 1, Arc::new(Metrics::default()));
        broker
            .create_topic(TOPIC, broker.default_options())
            .expect("fresh broker");
        let payload = order_payload(payload_len);
        let message = order_message(&payload);
        group.bench_function(BenchmarkId::new("ring_only", label), |b| {
            b.iter(|| black_box(broker.publish(TOPIC, &message).expect("topic exists")))
        });
    }
    bench_publish_fresh_ids(&mut group);
    for (label, payload_len) in PAYLOADS {
        let broker = Broker::new(RING_CAPACITY, 1, Arc::new(Metrics::default()));
        broker
            .create_topic(TOPIC, broker.default_options())
            .expect("fresh broker");
        let outboxes = subscribe_outboxes(&broker, 1);
        let frame = publish_frame(&order_payload(payload_len));
        let mut scratch = frame.clone();
        group.bench_function(BenchmarkId::new("parsed_to_one_outbox", label), |b| {
            b.iter_custom(|publishes| {
                time_between_drains(publishes, &outboxes, || {
                    scratch.copy_from_slice(&frame);
                    black_box(parse_and_publish(&broker, &mut scratch));
                })
            })
        });
    }
    group.finish();
}

/// `ring_only` with `DEDUP_WINDOW` on, as by default: every publish has a
/// new id, which is looked up and remembered. The window is one second, so
/// once warmed up it holds a second's ids (millions, more than any cache)
/// and forgets as many as it learns; the id's formatting is timed too.
fn bench_publish_fresh_ids(group: &mut BenchmarkGroup<'_, WallTime>) {
    let broker = Broker::new(RING_CAPACITY, 1, Arc::new(Metrics::default()))
        .with_dedup_window(Duration::from_secs(1));
    broker
        .create_topic(TOPIC, broker.default_options())
        .expect("fresh broker");
    let payload = order_payload(SMALL_PAYLOAD);
    let mut id_text = uuid::Uuid::encode_buffer();
    let mut sent = 0;
    group.bench_function(BenchmarkId::new("dedup_fresh_ids", "128B"), |b| {
        b.iter(|| {
            sent += 1;
            let id = uuid::Uuid::from_u64_pair(0x5550_e840_0e29_b41d, sent)
                .hyphenated()
                .encode_lower(&mut id_text);
            let message = Message {
                id,
                payload: &payload,
            };
            black_box(broker.publish(TOPIC, &message).expect("topic exists"))
        })
    });
}

/// What a connection's reader does with a client's publish frame.
fn parse_and_publish(broker: &Broker, frame: &mut [u8]) -> u64 {
    let Ok(ClientFrame {
        request: Request::Publish { topic, message },
        ..
    }) = parse_client_frame(frame)
    else {
        panic!("the benchmark frame must parse as a publish")
    };
    broker.publish(topic, &message).expect("topic exists").seq
}

fn bench_fanout(c: &mut Criterion) {
    let broker = Broker::new(RING_CAPACITY, 1, Arc::new(Metrics::default()));
    broker
        .create_topic(TOPIC, broker.default_options())
        .expect("fresh broker");
    let outboxes = subscribe_outboxes(&broker, SUBSCRIBERS);
    let payload = order_payload(SMALL_PAYLOAD);
    let message = order_message(&payload);
    let mut group = c.benchmark_group("fanout");
    // Time is per publish; elements are deliveries.
    group.throughput(Throughput::Elements(SUBSCRIBERS));
    group.bench_function(format!("{SUBSCRIBERS}_queues"), |b| {
        b.iter_custom(|publishes| {
            time_between_drains(publishes, &outboxes, || {
                black_box(broker.publish(TOPIC, &message).expect("topic exists"));
            })
        })
    });
    group.finish();
}

fn bench_writer_drain(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    let frames = event_frames(FRAMES_PER_BATCH, WRITER_FRAME_PAYLOAD);
    let mut group = c.benchmark_group("writer_drain");
    group.throughput(Throughput::Elements(FRAMES_PER_BATCH));
    bench_drain_into(&mut group, &runtime, &frames, "memory", DiscardSink);
    let socket = loopback_socket(&runtime);
    bench_drain_into(&mut group, &runtime, &frames, "tcp", socket);
    group.finish();
}

/// Benchmarks one batch of `frames` written through a `FrameWriter` into `sink`.
fn bench_drain_into<W: AsyncWrite + Unpin>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    frames: &[Bytes],
    sink_name: &str,
    sink: W,
) {
    // A `to_async` routine returns a future, which cannot borrow the
    // closure's state mutably; so the writer (which owns its sink, reused
    // across samples) sits behind an async mutex, locked outside the timing.
    let writer = &Mutex::new(FrameWriter::new(sink, Arc::new(Metrics::default())));
    let id = BenchmarkId::new(format!("{}_frames", frames.len()), sink_name);
    group.bench_function(id, |b| {
        b.to_async(runtime).iter_custom(|batches| async move {
            time_drains(&mut *writer.lock().await, frames, batches).await
        })
    });
}

/// Queues `batches` copies of `frames` a refill at a time and times only
/// `write_all`, as the connection's writer does after taking its outbox.
async fn time_drains<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    frames: &[Bytes],
    batches: u64,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    for count in chunks(batches, BATCHES_PER_REFILL) {
        for _ in 0..count {
            frames
                .iter()
                .for_each(|frame| writer.push_last(frame.clone()));
        }
        let start = Instant::now();
        writer.write_all().await.expect("sink accepts writes");
        elapsed += start.elapsed();
    }
    elapsed
}

/// Times `publishes` calls of `publish`, emptying every outbox (untimed)
/// every `PUBLISHES_PER_DRAIN`, as the connections' writers would.
fn time_between_drains(
    publishes: u64,
    outboxes: &[Arc<Outbox>],
    mut publish: impl FnMut(),
) -> Duration {
    let mut taken = VecDeque::new();
    chunks(publishes, PUBLISHES_PER_DRAIN)
        .map(|count| {
            let start = Instant::now();
            (0..count).for_each(|_| publish());
            let elapsed = start.elapsed();
            drain_all(outboxes, &mut taken);
            elapsed
        })
        .sum()
}

/// Splits `total` into runs of at most `size`.
fn chunks(total: u64, size: u64) -> impl Iterator<Item = u64> {
    (0..total.div_ceil(size)).map(move |index| size.min(total - index * size))
}

/// Subscribes `count` outboxes to `TOPIC`, each as its own connection.
fn subscribe_outboxes(broker: &Broker, count: u64) -> Vec<Arc<Outbox>> {
    let topic = broker.topic(TOPIC).expect("topic exists");
    (0..count)
        .map(|id| {
            let outbox = Arc::new(Outbox::new(
                QueueLimits {
                    events: OUTBOX_CAPACITY,
                    bytes: usize::MAX,
                },
                SlowConsumerPolicy::Disconnect,
            ));
            assert!(topic.subscribe(id, &outbox, None, Replay::Last(0), |_| {}));
            outbox
        })
        .collect()
}

/// Empties every outbox and reports it written, as the connections' writer
/// tasks would.
fn drain_all(outboxes: &[Arc<Outbox>], taken: &mut VecDeque<Queued>) {
    for outbox in outboxes {
        let close = outbox.settle(&Pending::default(), taken, usize::MAX).close;
        assert_eq!(close, None, "an outbox overflowed");
        let mut written = Pending::default();
        taken.drain(..).for_each(|queued| written.add(&queued));
        outbox.settle(&written, taken, 0);
    }
}

/// `count` consecutive events of `TOPIC`, encoded as the broker does.
fn event_frames(count: u64, payload_len: usize) -> Vec<Bytes> {
    let payload = order_payload(payload_len);
    let message = order_message(&payload);
    (1..=count)
        .map(|seq| reply::event(TOPIC, &message, seq, Timestamp::now()))
        .collect()
}

/// A client's publish frame carrying `payload`.
fn publish_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = format!(
        r#"{{"type":"publish","topic":"{TOPIC}","message":{{"id":"{MESSAGE_ID}","payload":"#
    )
    .into_bytes();
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"}}");
    frame
}

fn order_message(payload: &[u8]) -> Message<'_> {
    Message {
        id: MESSAGE_ID,
        payload,
    }
}

/// An order as JSON of exactly `len` bytes: line items while they fit, then
/// a free-text note padding it to size.
fn order_payload(len: usize) -> Bytes {
    const HEAD: &str = r#"{"order":48213,"total":129.95,"items":["#;
    const NOTE_START: &str = r#"],"note":""#;
    const END: &str = r#""}"#;
    let mut json = String::from(HEAD);
    for n in 1.. {
        let separator = if n == 1 { "" } else { "," };
        let item = format!(
            r#"{separator}{{"sku":"SKU-{n:05}","qty":{},"price":{}.99}}"#,
            n % 7 + 1,
            n * 13 % 90
        );
        if json.len() + item.len() + NOTE_START.len() + END.len() > len {
            break;
        }
        json.push_str(&item);
    }
    json.push_str(NOTE_START);
    let note_len = len - json.len() - END.len();
    json.extend(
        "please leave the parcel at the side door; "
            .chars()
            .cycle()
            .take(note_len),
    );
    json.push_str(END);
    Bytes::from(json)
}

/// A loopback connection whose peer a thread reads and discards until EOF,
/// so the writer waits only on the kernel. `TCP_NODELAY` as the server sets.
fn loopback_socket(runtime: &Runtime) -> TcpStream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("bound address");
    let socket = runtime
        .block_on(TcpStream::connect(address))
        .expect("connect loopback");
    let (mut peer, _) = listener.accept().expect("accept loopback");
    std::thread::spawn(move || {
        let mut buffer = vec![0; 256 * 1024];
        while peer.read(&mut buffer).is_ok_and(|read| read > 0) {}
    });
    socket.set_nodelay(true).expect("TCP_NODELAY");
    socket
}

/// Accepts every write in full at once, like a socket with an endless
/// buffer, so only the writer's own per-batch work is measured.
struct DiscardSink;

impl AsyncWrite for DiscardSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

criterion_group! {
    name = benches;
    // Modest defaults for a small shared machine; command-line flags win.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_parse_publish, bench_encode_event, bench_encode_ack, bench_deflate_event, bench_inflate_publish,
        bench_publish, bench_fanout, bench_writer_drain
}
criterion_main!(benches);
